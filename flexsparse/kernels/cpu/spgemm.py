"""Row-wise (Gustavson) sparse x sparse matrix product ``C = A @ B`` on CSR buffers.

Algorithm: output row ``i`` is ``sum_k A[i, k] * B[k, :]``; the partial products are
merged by an *accumulator*. Two passes, as every sparse-output kernel here:

1. :func:`spgemm_csr_csr_symbolic` counts the distinct columns of each output row;
   a prefix sum gives ``C.indptr``;
2. :func:`spgemm_csr_csr_numeric` fills the preallocated ``C.indices``/``C.data``
   with strictly increasing column ids in every row.

Accumulators (chosen per *part* -- a block of consecutive output rows -- by a rule
registered in :data:`ACCUMULATORS`):

* dense: per thread, ``n_cols`` zeroed values plus a bitmap of ``ceil(n_cols/64)``
  words and a summary bitmap of ``ceil(n_cols/4096)`` words (one bit per bitmap word).
  Every product is added in place and its column bit set (no branch on first touch);
  the row is emitted in column order from the set bits, re-zeroing as it goes -- sorted
  output without a sort. Rows with at least 8 products per word of the whole bitmap
  walk every word of their touched span; sparser rows also set the summary bit and visit only non-zero
  words (a mostly-empty span otherwise costs a mispredicted branch per word). The
  symbolic pass counts with an ``int32[n_cols]`` marker holding the last row that
  touched each column (no reset between rows).
* hash: open addressing with linear probing, per row a table of the next power of two
  ``>= 2 * min(flops_row, n_cols)`` slots (load <= 1/2), allocated once per thread at
  the largest size its rows need; emitted entries are sorted by an in-place pair sort.

Rule ``"auto"`` (Sparta/SMASH idea): a part uses the dense accumulator when
``n_cols <= DENSE_SMALL_COLS`` (the workspace stays cache-resident) or when its average
flops per row is at least ``n_cols / DENSE_FILL_RATIO`` (the row is expected to touch
a sizeable fraction of the columns, so a hash table would be as large as the dense
workspace and slower); hash otherwise. ``"dense"`` and ``"hash"`` force one.

Work is split over threads by :func:`~flexsparse.kernels.cpu.partition.cost_partition`
on the flops of every row (``sum_{k in A[i,:]} nnz(B[k,:])``), ``PARTS_PER_WORKER``
parts per thread, so power-law rows do not leave a thread idle.

Products with fewer than ``SMALL_FLOPS`` multiply-adds, or run on one thread, go
through :func:`spgemm_csr_csr_serial`: the same symbolic and numeric worker bodies in a
single compiled call (no thread-team launch, no Python glue between the passes).

Rows of ``A`` with a single entry are a scaled copy of one row of ``B`` (no merge)
when ``B`` has sorted indices.

Formats: :class:`~flexsparse.formats.csr.CSR` with any indices order (``B`` rows
need not be sorted); values bool/int/float/complex, promoted like NumPy
(``np.result_type``; bool x bool is computed in int64 and returned as bool, i.e. "any").
Entries are structural: stored zeros and cancellations stay in ``C`` (unlike SciPy,
which drops exact zeros), and NaN/inf propagate.

Cost: O(nnz(A) + nnz(B) + flops) time plus, per output row of k entries,
O(min(span / 64, flops) + k) for the dense accumulator (span = last - first touched
column) or O(k log k) for the hash one; O(threads * n_cols) dense workspace or
O(threads * max table) hash workspace, plus the output.

>>> import numpy as np, scipy.sparse as sp
>>> a = CSR.from_scipy(sp.random_array((30, 20), density=0.2, rng=0, format="csr"))
>>> b = CSR.from_scipy(sp.random_array((20, 40), density=0.2, rng=1, format="csr"))
>>> c = spgemm(a, b)
>>> bool(np.allclose(c.toarray(), a.toarray() @ b.toarray()))
True
>>> spgemm(a, a)
Traceback (most recent call last):
...
ValueError: spgemm: inner dimensions differ: a has 20 columns (shape (30, 20)) but b has 30 rows (shape (30, 20))
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
from numba import njit, prange
from numba.core import types
from numba.core.extending import intrinsic, overload

from flexsparse._util import index_dtype_for, result_dtype
from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu.partition import _cost_partition_trusted, check_threads, thread_scope

__all__ = [
    "ACCUMULATORS",
    "DENSE_FILL_RATIO",
    "DENSE_SMALL_COLS",
    "PARTS_PER_WORKER",
    "SMALL_FLOPS",
    "get_accumulator",
    "spgemm",
    "spgemm_csr_csr_numeric",
    "spgemm_csr_csr_serial",
    "spgemm_csr_csr_symbolic",
]

#: ``"auto"`` always uses the dense accumulator up to this many output columns
#: (bitmap of 4096 words = 32 KiB, values 2 MiB at float64 per thread). Measured on a
#: Chung-Lu power-law graph with 200k columns, one thread: dense 1.6 s, hash 5.1 s.
DENSE_SMALL_COLS = 1 << 18
#: Beyond that, ``"auto"`` uses the dense accumulator when flops per row >=
#: n_cols / DENSE_FILL_RATIO (the bitmap walk, n_cols / 64 words, then costs at most
#: 4 word reads per product).
DENSE_FILL_RATIO = 256
#: Parts per thread: the granularity at which the accumulator is chosen.
PARTS_PER_WORKER = 8
#: Products with fewer multiply-adds than this run on one thread (the fused serial
#: kernel) whatever ``threads`` says. On the idle 2-core test VM two threads paid off
#: from ~20k multiply-adds (pygsp Logo, 37k: 0.17 ms vs 0.23 ms; pyamg airfoil, 11k:
#: 0.071 vs 0.067 ms). When the other core is busy, waking a sleeping OpenMP thread took
#: 3-11 ms there, so the cut-off errs on the high side.
SMALL_FLOPS = 1 << 15
_ONE = np.uint64(1)
_ZERO = np.uint64(0)
_SIX = np.uint64(6)
_LOW6 = np.uint64(63)
# Fibonacci hashing multiplier (2**32 / golden ratio), odd so it permutes the table.
_HASH_MUL = 2654435769
_SMALL_SORT = 16


# ------------------------------------------------------------------ accumulator rules
def _rule_auto(part_flops: np.ndarray, part_rows: np.ndarray, n_cols: int) -> np.ndarray:
    if n_cols <= DENSE_SMALL_COLS:
        return np.ones(part_flops.shape, dtype=np.bool_)
    return part_flops * DENSE_FILL_RATIO >= np.maximum(part_rows, 1) * float(n_cols)


def _rule_dense(part_flops: np.ndarray, part_rows: np.ndarray, n_cols: int) -> np.ndarray:
    return np.ones(part_flops.shape, dtype=np.bool_)


def _rule_hash(part_flops: np.ndarray, part_rows: np.ndarray, n_cols: int) -> np.ndarray:
    return np.zeros(part_flops.shape, dtype=np.bool_)


#: Accumulator rules by name: ``(part_flops, part_rows, n_cols) -> bool[n_parts]``,
#: ``True`` where a part uses the dense accumulator.
ACCUMULATORS: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "auto": _rule_auto,
    "dense": _rule_dense,
    "hash": _rule_hash,
}


def get_accumulator(name: str) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
    """Look up an accumulator rule by name.

    >>> get_accumulator("spa")
    Traceback (most recent call last):
    ...
    ValueError: unknown accumulator 'spa'; valid names: auto, dense, hash
    """
    try:
        return ACCUMULATORS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown accumulator {name!r}; valid names: {', '.join(ACCUMULATORS)}") from None


# --------------------------------------------------------------------------- helpers
def _popcount(word):
    """Number of set bits of a 64-bit word (pure-Python path, used without JIT)."""
    return int(word).bit_count()


@intrinsic
def _popcount_intrinsic(typingctx, word):
    """LLVM ``ctpop`` (one POPCNT instruction on x86-64)."""
    if not isinstance(word, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return word(word), codegen


@overload(_popcount, jit_options={"cache": True})
def _popcount_jit(word):
    def impl(word):
        return np.int64(_popcount_intrinsic(word))
    return impl


@njit(cache=True, inline="always")
def _table_size(flops, n_cols):
    """Power of two >= 2 * min(flops, n_cols), at least 2 (hash load factor <= 1/2)."""
    need = 2 * min(flops, n_cols)
    size = 2
    while size < need:
        size *= 2
    return size


@njit(cache=True)
def _sort_pairs(keys, vals, lo, hi, stack):
    """Sort ``keys[lo:hi]`` ascending in place, permuting ``vals`` alongside.

    Quicksort (median of three, smaller side first so the explicit ``stack`` of
    ``int64[128]`` never overflows) with insertion sort below ``_SMALL_SORT``.
    """
    top = 0
    stack[0] = lo
    stack[1] = hi
    top = 2
    while top > 0:
        top -= 2
        l0 = stack[top]
        h0 = stack[top + 1]
        while h0 - l0 > _SMALL_SORT:
            mid = (l0 + h0 - 1) >> 1
            a, b, c = keys[l0], keys[mid], keys[h0 - 1]
            if a < b:
                pivot = b if b < c else (c if a < c else a)
            else:
                pivot = a if a < c else (c if b < c else b)
            i = l0
            j = h0 - 1
            while i <= j:
                while keys[i] < pivot:
                    i += 1
                while keys[j] > pivot:
                    j -= 1
                if i <= j:
                    tk = keys[i]
                    keys[i] = keys[j]
                    keys[j] = tk
                    tv = vals[i]
                    vals[i] = vals[j]
                    vals[j] = tv
                    i += 1
                    j -= 1
            # [l0, j] <= pivot <= [i, h0): push the larger side, loop on the smaller
            if j + 1 - l0 < h0 - i:
                stack[top] = i
                stack[top + 1] = h0
                h0 = j + 1
            else:
                stack[top] = l0
                stack[top + 1] = j + 1
                l0 = i
            top += 2
        for i in range(l0 + 1, h0):
            k = keys[i]
            v = vals[i]
            j = i - 1
            while j >= l0 and keys[j] > k:
                keys[j + 1] = keys[j]
                vals[j + 1] = vals[j]
                j -= 1
            keys[j + 1] = k
            vals[j + 1] = v


@njit(cache=True)
def _row_flops(a_indptr, a_indices, b_indptr, out_flops):
    """``out_flops[i] = sum_{k in A[i,:]} nnz(B[k,:])`` (multiply-adds of output row i);
    returns their sum. Serial: O(nnz(A)) and a parallel launch costs more than it saves."""
    total = 0
    for i in range(a_indptr.shape[0] - 1):
        s = 0
        for p in range(a_indptr[i], a_indptr[i + 1]):
            k = a_indices[p]
            s += b_indptr[k + 1] - b_indptr[k]
        out_flops[i] = s
        total += s
    return total


# ------------------------------------------------------------------ per-row routines
@njit(cache=True, inline="always")
def _dense_count_row(i, a0, a1, a_indices, b_indptr, b_indices, marker):
    """Distinct columns of output row ``i``: ``marker: int32[n_cols]`` holds the last row
    that touched each column, so it never needs a reset. Branchless (the new-vs-seen
    branch is unpredictable); unsigned indices skip NumPy's negative-index wraparound."""
    cnt = 0
    for p in range(a0, a1):
        k = np.uint64(a_indices[p])
        for q in range(b_indptr[k], b_indptr[k + 1]):
            c = np.uint64(b_indices[q])
            cnt += marker[c] != i
            marker[c] = i
    return cnt


@njit(cache=True, inline="always")
def _emit_word(word, base, acc, c_indices, c_data, t):
    """Emit the columns of one 64-bit bitmap word in increasing order (sorted output) and
    clear their accumulator slots; returns the next output position."""
    while word != _ZERO:
        # trailing zeros = popcount of the ones below the lowest set bit
        c = base + _popcount((word & (~word + _ONE)) - _ONE)
        c_indices[t] = c
        c_data[t] = acc[c]
        acc[c] = 0
        t += 1
        word &= word - _ONE
    return t


@njit(cache=True, inline="always")
def _dense_fill_row(a0, a1, a_indices, a_data, b_indptr, b_indices, b_data, b_min, b_max,
                    n_cols, acc, bits, summary, c_indices, c_data, pos):
    """Accumulate one output row densely and write it sorted at ``c_*[pos:]``.

    Workspace, clean on entry and on exit: ``acc: [n_cols]`` zeros, ``bits:
    uint64[ceil(n_cols/64)]`` and ``summary: uint64[ceil(n_cols/4096)]`` zeros. Every
    product is added to ``acc`` and its column's bit set (no first-touch test at all); the
    row is then emitted in column order from the bitmap (lowest set bit first), gathering
    and re-zeroing ``acc``. The touched span comes from the per-row column ranges
    ``b_min``/``b_max`` of ``B``. Two emission modes, chosen per row:

    * rows with at least 8 products (``flops``) per word of the whole bitmap walk every
      word of the touched span (they are mostly non-zero);
    * sparser rows (wide, scattered columns) also set a bit per *word* in ``summary`` and
      visit only the non-zero words: scanning a mostly-empty span costs a mispredicted
      branch per word (measured 2.4 -> 1.9 ms on ca-GrQc, 6.4 -> 3.9 ms on ca-HepTh,
      one thread), while on dense FEM rows the extra store per product costs ~25 %.

    O(flops + min(span/64, flops) + entries).
    """
    cmin = n_cols
    cmax = -1
    t = pos
    for p in range(a0, a1):
        k = np.uint64(a_indices[p])
        av = a_data[p]
        cmin = min(cmin, b_min[k])
        cmax = max(cmax, b_max[k])
        for q in range(b_indptr[k], b_indptr[k + 1]):
            c = np.uint64(b_indices[q])
            acc[c] += av * b_data[q]
            w = c >> _SIX
            bits[w] |= _ONE << (c & _LOW6)
            summary[w >> _SIX] |= _ONE << (w & _LOW6)
    for si in range(cmin >> 12, (cmax >> 12) + 1):
        sword = summary[si]
        summary[si] = _ZERO
        while sword != _ZERO:
            wi = (si << 6) + _popcount((sword & (~sword + _ONE)) - _ONE)
            sword &= sword - _ONE
            word = bits[wi]
            bits[wi] = _ZERO
            t = _emit_word(word, wi << 6, acc, c_indices, c_data, t)
    return t - pos


@njit(cache=True, inline="always")
def _dense_walk_row(a0, a1, a_indices, a_data, b_indptr, b_indices, b_data, b_min, b_max,
                    n_cols, acc, bits, c_indices, c_data, pos):
    """:func:`_dense_fill_row` for rows with many products per bitmap word: no summary
    bitmap, every word of the touched span is read."""
    cmin = n_cols
    cmax = -1
    t = pos
    for p in range(a0, a1):
        k = np.uint64(a_indices[p])
        av = a_data[p]
        cmin = min(cmin, b_min[k])
        cmax = max(cmax, b_max[k])
        for q in range(b_indptr[k], b_indptr[k + 1]):
            c = np.uint64(b_indices[q])
            acc[c] += av * b_data[q]
            bits[c >> _SIX] |= _ONE << (c & _LOW6)
    for wi in range(cmin >> 6, (cmax >> 6) + 1):
        word = bits[wi]
        if word != _ZERO:
            bits[wi] = _ZERO
            t = _emit_word(word, wi << 6, acc, c_indices, c_data, t)
    return t - pos


@njit(cache=True, inline="always")
def _hash_count_row(a0, a1, a_indices, b_indptr, b_indices, size, keys):
    """Distinct columns of one output row with a linear-probing set ``keys[:size]``
    (``size`` a power of two, all ``-1`` on entry and on exit)."""
    mask = size - 1
    cnt = 0
    for p in range(a0, a1):
        k = a_indices[p]
        for q in range(b_indptr[k], b_indptr[k + 1]):
            c = b_indices[q]
            h = (np.int64(c) * _HASH_MUL) & mask
            while True:
                key = keys[h]
                if key == c:
                    break
                if key == -1:
                    keys[h] = c
                    cnt += 1
                    break
                h = (h + 1) & mask
    keys[:size] = -1
    return cnt


@njit(cache=True)
def _hash_fill_row(a0, a1, a_indices, a_data, b_indptr, b_indices, b_data, size, keys, vals,
                   stack, c_indices, c_data, pos):
    """Accumulate one output row in a linear-probing map ``keys/vals[:size]``, emit the
    occupied slots at ``c_*[pos:]`` (clearing them) and sort them by column."""
    mask = size - 1
    for p in range(a0, a1):
        k = a_indices[p]
        av = a_data[p]
        for q in range(b_indptr[k], b_indptr[k + 1]):
            c = b_indices[q]
            h = (np.int64(c) * _HASH_MUL) & mask
            while True:
                key = keys[h]
                if key == c:
                    vals[h] += av * b_data[q]
                    break
                if key == -1:
                    keys[h] = c
                    vals[h] = av * b_data[q]
                    break
                h = (h + 1) & mask
    t = pos
    for h in range(size):
        if keys[h] != -1:
            c_indices[t] = keys[h]
            c_data[t] = vals[h]
            keys[h] = -1
            t += 1
    if t - pos > 1:
        _sort_pairs(c_indices, c_data, pos, t, stack)
    return t - pos


@njit(cache=True)
def _worker_table_size(bounds, p0, p1, use_dense, row_flops, n_cols):
    """Largest hash table among the rows of parts ``p0:p1`` that use the hash (0: none)."""
    tsize = 0
    for part in range(p0, p1):
        if not use_dense[part]:
            for i in range(bounds[part], bounds[part + 1]):
                tsize = max(tsize, _table_size(row_flops[i], n_cols))
    return tsize


@njit(cache=True)
def _row_span(indptr, indices, n_cols, out_min, out_max):
    """Smallest and largest column of every row (``n_cols`` / ``-1`` for empty rows)."""
    for i in range(indptr.shape[0] - 1):
        lo = n_cols
        hi = -1
        for p in range(indptr[i], indptr[i + 1]):
            lo = min(lo, indices[p])
            hi = max(hi, indices[p])
        out_min[i] = lo
        out_max[i] = hi


# ------------------------------------------------------------------ per-worker bodies
@njit(cache=True)
def _symbolic_worker(w, a_indptr, a_indices, b_indptr, b_indices, n_cols, b_sorted, row_flops,
                     bounds, worker_bounds, use_dense, out_counts):
    """Rows of the parts of worker ``w``; its workspace is allocated once here."""
    p0 = worker_bounds[w]
    p1 = worker_bounds[w + 1]
    need_dense = False
    for part in range(p0, p1):
        need_dense |= use_dense[part]
    marker = np.full(n_cols if need_dense else 0, -1, dtype=np.int32)
    keys = np.full(_worker_table_size(bounds, p0, p1, use_dense, row_flops, n_cols), -1,
                   dtype=np.int64)
    for part in range(p0, p1):
        dense = use_dense[part]
        for i in range(bounds[part], bounds[part + 1]):
            a0 = a_indptr[i]
            a1 = a_indptr[i + 1]
            if a1 - a0 == 1 and b_sorted:
                k = a_indices[a0]
                out_counts[i] = b_indptr[k + 1] - b_indptr[k]
            elif row_flops[i] == 0:
                out_counts[i] = 0
            elif dense:
                out_counts[i] = _dense_count_row(i, a0, a1, a_indices, b_indptr, b_indices, marker)
            else:
                out_counts[i] = _hash_count_row(a0, a1, a_indices, b_indptr, b_indices,
                                                _table_size(row_flops[i], n_cols), keys)


@njit(cache=True)
def _numeric_worker(w, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_cols, b_sorted,
                    b_min, b_max, row_flops, bounds, worker_bounds, use_dense, c_indptr, c_indices,
                    c_data):
    """Rows of the parts of worker ``w``; its workspace is allocated once here."""
    p0 = worker_bounds[w]
    p1 = worker_bounds[w + 1]
    need_dense = False
    for part in range(p0, p1):
        need_dense |= use_dense[part]
    tsize = _worker_table_size(bounds, p0, p1, use_dense, row_flops, n_cols)
    nd = n_cols if need_dense else 0
    nw = (nd + 63) >> 6
    acc = np.zeros(nd, dtype=c_data.dtype)
    bits = np.zeros(nw, dtype=np.uint64)
    summary = np.zeros((nw + 63) >> 6, dtype=np.uint64)
    walk_flops = 8 * nw  # rows with >= 8 products per bitmap word: walk the span
    keys = np.full(tsize, -1, dtype=np.int64)
    vals = np.empty(tsize, dtype=c_data.dtype)
    stack = np.empty(128, dtype=np.int64)
    for part in range(p0, p1):
        dense = use_dense[part]
        for i in range(bounds[part], bounds[part + 1]):
            a0 = a_indptr[i]
            a1 = a_indptr[i + 1]
            pos = c_indptr[i]
            if a1 - a0 == 1 and b_sorted:
                # a scaled copy of one (sorted, duplicate-free) row of B
                k = a_indices[a0]
                av = a_data[a0]
                q0 = b_indptr[k]
                for q in range(q0, b_indptr[k + 1]):
                    c_indices[pos + q - q0] = b_indices[q]
                    c_data[pos + q - q0] = av * b_data[q]
            elif row_flops[i] == 0:
                continue
            elif dense and row_flops[i] >= walk_flops:
                _dense_walk_row(a0, a1, a_indices, a_data, b_indptr, b_indices, b_data,
                                b_min, b_max, n_cols, acc, bits, c_indices, c_data, pos)
            elif dense:
                _dense_fill_row(a0, a1, a_indices, a_data, b_indptr, b_indices, b_data,
                                b_min, b_max, n_cols, acc, bits, summary, c_indices, c_data, pos)
            else:
                _hash_fill_row(a0, a1, a_indices, a_data, b_indptr, b_indices, b_data,
                               _table_size(row_flops[i], n_cols), keys, vals, stack,
                               c_indices, c_data, pos)


# --------------------------------------------------------------------------- kernels
@njit(cache=True, parallel=True)
def spgemm_csr_csr_symbolic(a_indptr, a_indices, b_indptr, b_indices, n_cols, b_sorted,
                            row_flops, bounds, worker_bounds, use_dense, out_counts):
    """Count the distinct columns of every output row of ``A @ B``.

    Args:
        a_indptr, a_indices: CSR structure of ``A`` (``[n_rows+1]``, ``[nnz_a]``).
        b_indptr, b_indices: CSR structure of ``B``.
        n_cols: columns of ``B`` (and of ``C``).
        b_sorted: ``B`` rows are strictly increasing (single-entry rows of ``A`` then copy
            a row of ``B`` without merging).
        row_flops: ``int64[n_rows]`` flops per output row (sizes the hash tables).
        bounds: ``int64[n_parts+1]`` row ranges of the parts.
        worker_bounds: ``int64[n_workers+1]`` part ranges of the workers (one ``prange``
            iteration per worker, so each allocates its workspace once).
        use_dense: ``bool[n_parts]`` accumulator of each part.
        out_counts: ``int64[n_rows]``, filled with the output row lengths.
    """
    for w in prange(worker_bounds.shape[0] - 1):
        _symbolic_worker(w, a_indptr, a_indices, b_indptr, b_indices, n_cols, b_sorted, row_flops,
                         bounds, worker_bounds, use_dense, out_counts)


@njit(cache=True, parallel=True)
def spgemm_csr_csr_numeric(a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_cols,
                           b_sorted, b_min, b_max, row_flops, bounds, worker_bounds, use_dense,
                           c_indptr, c_indices, c_data):
    """Fill ``C = A @ B`` into buffers preallocated from the symbolic pass.

    Args are those of :func:`spgemm_csr_csr_symbolic` plus the values ``a_data``,
    ``b_data`` (already of the output dtype), the column range of every row of ``B``
    (``b_min, b_max: int64[k]``, from :func:`_row_span`) and the output ``c_indptr: int64[n_rows+1]``
    (prefix sum of the counts), ``c_indices: [nnz_c]``, ``c_data: [nnz_c]``. Every output
    row comes out with strictly increasing column ids.
    """
    for w in prange(worker_bounds.shape[0] - 1):
        _numeric_worker(w, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_cols,
                        b_sorted, b_min, b_max, row_flops, bounds, worker_bounds, use_dense,
                        c_indptr, c_indices, c_data)


@njit(cache=True)
def spgemm_csr_csr_serial(a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_cols,
                          b_sorted, row_flops, bounds, use_dense, index_like):
    """One-thread ``C = A @ B`` in a single compiled call: the same symbolic then numeric
    worker bodies as the parallel kernels over all parts (``bounds``, ``use_dense`` as in
    :func:`spgemm_csr_csr_symbolic`), without the thread-team launches or the Python glue
    between the passes.

    ``index_like`` is an empty array of the output index dtype. Returns
    ``(c_indptr int64[n_rows+1], c_indices, c_data)``.
    """
    n_rows = a_indptr.shape[0] - 1
    worker_bounds = np.empty(2, dtype=np.int64)
    worker_bounds[0] = 0
    worker_bounds[1] = bounds.shape[0] - 1
    dense = False
    for part in range(bounds.shape[0] - 1):
        dense |= use_dense[part]
    c_indptr = np.empty(n_rows + 1, dtype=np.int64)
    c_indptr[0] = 0
    _symbolic_worker(0, a_indptr, a_indices, b_indptr, b_indices, n_cols, b_sorted, row_flops,
                     bounds, worker_bounds, use_dense, c_indptr[1:])
    for i in range(n_rows):
        c_indptr[i + 1] += c_indptr[i]
    nnz = c_indptr[n_rows]
    n_b = b_indptr.shape[0] - 1 if dense else 0
    b_min = np.empty(n_b, dtype=np.int64)
    b_max = np.empty(n_b, dtype=np.int64)
    if dense:
        _row_span(b_indptr, b_indices, n_cols, b_min, b_max)
    c_indices = np.empty(nnz, dtype=index_like.dtype)
    c_data = np.empty(nnz, dtype=a_data.dtype)
    _numeric_worker(0, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_cols, b_sorted,
                    b_min, b_max, row_flops, bounds, worker_bounds, use_dense, c_indptr, c_indices,
                    c_data)
    return c_indptr, c_indices, c_data


# --------------------------------------------------------------------------- wrapper
def _check_csr(x: object, name: str) -> CSR:
    if not isinstance(x, CSR):
        raise TypeError(f"spgemm: {name} must be a flexsparse CSR, got {type(x).__name__}")
    return x


def spgemm(a: CSR, b: CSR, *, accumulator: str = "auto", threads: int | None = None) -> CSR:
    """Sparse x sparse product ``a @ b`` (Gustavson, see the module docstring).

    Args:
        a: ``[m, k]`` CSR.
        b: ``[k, n]`` CSR (any row order).
        accumulator: a name in :data:`ACCUMULATORS` (``"auto"``, ``"dense"``, ``"hash"``).
        threads: numba threads for this call (``None``: numba's current setting); an upper
            bound, products below ``SMALL_FLOPS`` multiply-adds run on one thread.

    Returns:
        ``[m, n]`` CSR with sorted, duplicate-free indices (int32 when ``n < 2**31``) and
        dtype ``np.result_type(a.dtype, b.dtype)``.

    Raises:
        TypeError: an operand is not a :class:`CSR`.
        ValueError: inner dimensions differ, unknown accumulator or bad ``threads``.
    """
    _check_csr(a, "a")
    _check_csr(b, "b")
    if a.n_cols != b.n_rows:
        raise ValueError(f"spgemm: inner dimensions differ: a has {a.n_cols} columns (shape {a.shape}) "
                         f"but b has {b.n_rows} rows (shape {b.shape})")
    rule = get_accumulator(accumulator)
    check_threads(threads)
    out_dtype = result_dtype(a.dtype, b.dtype)
    work_dtype = np.dtype(np.int64) if out_dtype == np.bool_ else out_dtype
    n_rows, n_cols = a.n_rows, b.n_cols
    idx_dtype = index_dtype_for(n_cols)
    if n_rows == 0 or n_cols == 0 or a.nnz == 0 or b.nnz == 0:
        return CSR._trusted(np.zeros(n_rows + 1, dtype=np.int64), np.empty(0, dtype=idx_dtype),
                            np.empty(0, dtype=out_dtype), (n_rows, n_cols), True)
    a_data = a.data.astype(work_dtype, copy=False)
    b_data = b.data.astype(work_dtype, copy=False)
    flops = np.empty(n_rows, dtype=np.int64)
    total = _row_flops(a.indptr, a.indices, b.indptr, flops)
    n_threads = numba.get_num_threads() if threads is None else int(threads)
    if n_threads == 1 or total < SMALL_FLOPS:
        if n_cols <= DENSE_SMALL_COLS:  # one part (the registered rules decide per part)
            bounds = np.array([0, n_rows], dtype=np.int64)
            part_flops = np.array([float(total)])
        else:
            part = _cost_partition_trusted(flops + 1, 1, PARTS_PER_WORKER)
            bounds = part.bounds
            part_flops = part.part_costs - np.diff(bounds)
        use_dense = np.asarray(rule(part_flops, np.diff(bounds), n_cols), dtype=np.bool_)
        if n_rows >= 2**31 - 1:  # the dense marker stores row ids as int32
            use_dense[:] = False
        c_indptr, c_indices, c_data = spgemm_csr_csr_serial(
            a.indptr, a.indices, a_data, b.indptr, b.indices, b_data, n_cols, b.sorted_indices, flops,
            bounds, use_dense, np.empty(0, dtype=idx_dtype))
    else:
        with thread_scope(threads):
            # +1 per row: the fixed per-row overhead, so flop-free rows are not free
            part = _cost_partition_trusted(flops + 1, n_threads, PARTS_PER_WORKER)
            bounds, worker_bounds = part.bounds, part.worker_bounds
            part_rows = np.diff(bounds)
            use_dense = np.asarray(rule(part.part_costs - part_rows, part_rows, n_cols), dtype=np.bool_)
            if n_rows >= 2**31 - 1:  # the dense marker stores row ids as int32
                use_dense[:] = False
            c_indptr = np.empty(n_rows + 1, dtype=np.int64)
            c_indptr[0] = 0
            spgemm_csr_csr_symbolic(a.indptr, a.indices, b.indptr, b.indices, n_cols, b.sorted_indices,
                                    flops, bounds, worker_bounds, use_dense, c_indptr[1:])
            np.cumsum(c_indptr[1:], out=c_indptr[1:])
            nnz = int(c_indptr[-1])
            b_min = np.empty(b.n_rows, dtype=np.int64)
            b_max = np.empty(b.n_rows, dtype=np.int64)
            _row_span(b.indptr, b.indices, n_cols, b_min, b_max)
            c_indices = np.empty(nnz, dtype=idx_dtype)
            c_data = np.empty(nnz, dtype=work_dtype)
            spgemm_csr_csr_numeric(a.indptr, a.indices, a_data, b.indptr, b.indices, b_data, n_cols,
                                   b.sorted_indices, b_min, b_max, flops, bounds, worker_bounds,
                                   use_dense, c_indptr, c_indices, c_data)
    if work_dtype != out_dtype:
        c_data = c_data.astype(out_dtype)
    return CSR._trusted(c_indptr, c_indices, c_data, (n_rows, n_cols), True)
