"""Grouping kernels of a matricised contraction: keys, ranks, CSR by counting, COO decoding.

A pairwise contraction turns groups of modes into matrix rows and columns
(:mod:`flexsparse.contract._keys`). These kernels do the data-sized work of that step
without a comparison sort and without int64 copies of the coordinates:

* :func:`linear_key_kernel` -- row-major linear key of some modes of a ``[ndim, n]``
  coordinate array, straight from its index dtype. O(n * k), parallel over entries.
* :func:`radix_rank_kernel` -- order-preserving compact ids (ranks among the distinct
  keys) by an LSD radix sort of ``(key, position)`` pairs, ``ceil(bits / 11)`` passes of
  at most 2,048 buckets (a digit that is the same for every key is skipped).
  O(n * passes) time, 4 work arrays of n.
* :func:`bitmap_rank_kernel` -- the same ranks for keys of a moderate index space: a bit
  per cell and a prefix count per 64-bit word. O(n + space / 64) time and memory.
* :func:`csr_from_ids_kernel` -- CSR from ``(row id, column id, value)`` triples by a stable
  counting sort. O(n + n_rows); when the row ids already ascend, only ``indptr`` is built
  and the caller keeps its arrays (:func:`csr_from_ids` returns them as they are).
* :func:`decode_table_kernel` / :func:`decode_direct_kernel` -- ``[k, n_ids]`` coordinates
  of every id of a key space (a divmod chain per id; for a dense id space an odometer that
  needs no division). O(n_ids * k).
* :func:`assemble_coo_kernel` -- the COO coordinates of a CSR product: each row's key is
  copied to its entries, each column id is replaced by its coordinates from the column
  table. O(nnz * ndim), parallel over parts of equal nnz.

Formats: coordinates of any integer dtype in, ids int64, CSR ``indptr`` int64.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange
from numba.core import types
from numba.core.extending import intrinsic, overload

__all__ = [
    "ctz",
    "popcount",
    "rank_coords",
    "assemble_coo",
    "assemble_coo_kernel",
    "assemble_coo_serial",
    "bitmap_rank_kernel",
    "csr_from_ids",
    "csr_from_ids_kernel",
    "decode_direct_kernel",
    "decode_table_kernel",
    "linear_key",
    "linear_key_kernel",
    "radix_rank",
    "radix_rank_kernel",
]

#: Digit width of the radix sort: 2**11 counters of 8 bytes stay in L1.
RADIX_BITS = 11
#: Ranks come from a bitmap when the key space has at most this many cells per key. Measured
#: on the keys of power-law tensors (one thread): 1M keys in 1.2e8 cells, bitmap 8.4 ms, radix
#: 14.8 ms; 62.5K keys in 1.2e8 cells (1932 per key), bitmap 2.2 ms, radix 0.6 ms. The bitmap
#: and its per-word counts take ~1.5 bits per cell (48 bytes per key at the limit).
BITMAP_CELLS_PER_KEY = 256
#: COO assembly runs on several threads from this many output entries: ~3 ns per entry and
#: mode on one core of the 2-core test VM, so 2**18 entries take ~2-4 ms -- more than a
#: parallel region's launch even when waking the second thread is slow (0.1-3 ms, busy machine).
PARALLEL_MIN_NNZ = 1 << 18


@njit(cache=True)
def linear_key_kernel(coords, modes, sizes, out):
    """``out[t] = sum_j coords[modes[j], t] * prod(sizes[j+1:])`` (row-major; caller checks range).

    Serial: a memory-bound pass (~5 ms per million entries), cheaper than waking a second
    thread on a busy machine."""
    n = out.shape[0]
    k = modes.shape[0]
    for t in range(n):
        v = np.int64(0)
        for j in range(k):
            v = v * sizes[j] + np.int64(coords[modes[j], t])
        out[t] = v


def linear_key(coords: np.ndarray, modes: list[int], sizes: tuple[int, ...]) -> np.ndarray:
    """Row-major int64 key of ``coords[modes]`` (the caller guarantees ``prod(sizes) < 2**63``)."""
    out = np.empty(coords.shape[1], dtype=np.int64)
    if out.size:
        linear_key_kernel(coords, np.asarray(modes, dtype=np.int64), np.asarray(sizes, dtype=np.int64), out)
    return out


@njit(cache=True)
def radix_rank_kernel(keys, n_bits, ids, uniq):
    """Ranks of ``keys`` (>= 0, < 2**n_bits) among their distinct values; returns their count.

    ``ids[t]`` receives the rank of ``keys[t]`` and ``uniq[:count]`` the distinct keys in
    increasing order.
    """
    n = keys.shape[0]
    if n == 0:
        return 0
    passes = max(1, (n_bits + RADIX_BITS - 1) // RADIX_BITS)
    bits = (n_bits + passes - 1) // passes
    nb = 1 << bits
    mask = nb - 1
    hist = np.zeros((passes, nb), dtype=np.int64)
    for t in range(n):
        v = keys[t]
        for p in range(passes):
            hist[p, (v >> (p * bits)) & mask] += 1
    k_src = keys
    i_src = np.arange(n, dtype=np.int64)
    k_dst = np.empty(n, dtype=np.int64)
    i_dst = np.empty(n, dtype=np.int64)
    k_tmp = np.empty(n, dtype=np.int64)
    first = True
    for p in range(passes):
        shift = p * bits
        skip = False
        for b in range(nb):
            if hist[p, b] == n:  # one digit value for every key: this pass moves nothing
                skip = True
                break
        if skip:
            continue
        pos = np.empty(nb, dtype=np.int64)
        acc = 0
        for b in range(nb):
            pos[b] = acc
            acc += hist[p, b]
        for t in range(n):
            v = k_src[t]
            d = (v >> shift) & mask
            q = pos[d]
            pos[d] = q + 1
            k_dst[q] = v
            i_dst[q] = i_src[t]
        if first:  # the input keys are not overwritten: the next pass writes to scratch
            k_src, i_src, k_dst, i_dst = k_dst, i_dst, k_tmp, np.empty(n, dtype=np.int64)
            first = False
        else:
            k_src, i_src, k_dst, i_dst = k_dst, i_dst, k_src, i_src
    count = 0
    prev = np.int64(-1)
    for t in range(n):
        v = k_src[t]
        if v != prev:
            uniq[count] = v
            count += 1
            prev = v
        ids[i_src[t]] = count - 1
    return count


@njit(cache=True)
def bitmap_rank_kernel(keys, bitmap, before, ids, uniq):
    """:func:`radix_rank_kernel` through a zeroed ``bitmap`` of ``64 * len(bitmap)`` cells and
    ``before`` (per word: set bits in earlier words); returns the distinct count."""
    n = keys.shape[0]
    for t in range(n):
        v = keys[t]
        bitmap[v >> 6] |= np.uint64(1) << np.uint64(v & 63)
    count = _bitmap_prefix(bitmap, before)
    _bitmap_values(bitmap, uniq)
    for t in range(n):
        v = keys[t]
        below = bitmap[v >> 6] & ((np.uint64(1) << np.uint64(v & 63)) - np.uint64(1))
        ids[t] = before[v >> 6] + popcount(below)
    return count


@njit(cache=True)
def _bitmap_prefix(bitmap, before):
    """``before[w]`` = set bits in words ``< w``; returns the total."""
    count = 0
    for w in range(bitmap.shape[0]):
        before[w] = count
        count += popcount(bitmap[w])
    return count


@njit(cache=True)
def _bitmap_values(bitmap, uniq):
    """The set cells in increasing order (``uniq`` holds their count)."""
    count = 0
    for w in range(bitmap.shape[0]):
        word = bitmap[w]
        while word:
            uniq[count] = (w << 6) + ctz(word)
            count += 1
            word &= word - np.uint64(1)


@njit(cache=True)
def bitmap_mark_kernel(coords, modes, sizes, bitmap):
    """Set the bit of the row-major key of every ``coords[modes, t]`` (no key array)."""
    k = modes.shape[0]
    for t in range(coords.shape[1]):
        v = np.int64(0)
        for j in range(k):
            v = v * sizes[j] + np.int64(coords[modes[j], t])
        bitmap[v >> 6] |= np.uint64(1) << np.uint64(v & 63)


@njit(cache=True)
def bitmap_ids_kernel(coords, modes, sizes, bitmap, before, ids):
    """``ids[t]`` = rank of the key of ``coords[modes, t]`` among the marked cells."""
    k = modes.shape[0]
    for t in range(coords.shape[1]):
        v = np.int64(0)
        for j in range(k):
            v = v * sizes[j] + np.int64(coords[modes[j], t])
        below = bitmap[v >> 6] & ((np.uint64(1) << np.uint64(v & 63)) - np.uint64(1))
        ids[t] = before[v >> 6] + popcount(below)


def popcount(word):
    """Number of set bits of a 64-bit word (pure Python without JIT; one POPCNT compiled)."""
    return int(word).bit_count()


@intrinsic
def _popcount_intrinsic(typingctx, word):
    """LLVM ``ctpop``."""
    if not isinstance(word, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return word(word), codegen


@overload(popcount, jit_options={"cache": True})
def _popcount_jit(word):
    def impl(word):
        return np.int64(_popcount_intrinsic(word))
    return impl


@njit(cache=True, inline="always")
def ctz(word):
    """Index of the lowest set bit of a non-zero 64-bit word."""
    return popcount((word & (~word + np.uint64(1))) - np.uint64(1))


def radix_rank(keys: np.ndarray, space: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, uniq)``: order-preserving compact ids of int64 ``keys`` in ``[0, space)``.

    A bitmap over the space when it is small enough per key, else an LSD radix sort.

    >>> ids, uniq = radix_rank(np.array([70, 5, 70, 2**40]), 2**41)
    >>> ids.tolist(), uniq.tolist()
    ([1, 0, 1, 2], [5, 70, 1099511627776])
    """
    n = keys.shape[0]
    ids = np.empty(n, dtype=np.int64)
    uniq = np.empty(n, dtype=np.int64)
    if n == 0:
        return ids, uniq
    if space <= BITMAP_CELLS_PER_KEY * n:
        n_words = (int(space) + 63) >> 6
        before = np.empty(n_words, dtype=np.int32 if n < 2**31 else np.int64)
        count = bitmap_rank_kernel(keys, np.zeros(n_words, dtype=np.uint64), before, ids, uniq)
    else:
        count = radix_rank_kernel(keys, max(1, (int(space) - 1).bit_length()), ids, uniq)
    return ids, uniq[:count]


def rank_coords(parts: list[tuple[np.ndarray, list[int]]], sizes: tuple[int, ...], want_keys: bool
                ) -> tuple[list[np.ndarray], np.ndarray | None, int]:
    """Order-preserving compact ids of the keys ``coords[modes, t]`` of one or more operands.

    ``parts``: ``(coords, modes)`` per operand, ranked jointly over the space ``prod(sizes)``
    (the caller checks that it fits int64). Returns ``(ids per part, distinct linear keys in
    increasing order or None when not wanted, number of ids)``; ids are int32 when they fit.
    The bitmap path reads the coordinates twice and forms no key array.

    >>> c = np.array([[3, 1, 3], [0, 2, 0]])
    >>> ids, keys, n = rank_coords([(c, [0, 1])], (4, 3), True)
    >>> ids[0].tolist(), keys.tolist(), n
    ([1, 0, 1], [5, 9], 2)
    """
    n = sum(c.shape[1] for c, _ in parts)
    space = int(np.prod(np.array(sizes, dtype=object))) if sizes else 1
    idt = np.int32 if n < 2**31 else np.int64
    sz = np.asarray(sizes, dtype=np.int64)
    if n and space <= BITMAP_CELLS_PER_KEY * n:
        n_words = (space + 63) >> 6
        bitmap = np.zeros(n_words, dtype=np.uint64)
        for coords, modes in parts:
            bitmap_mark_kernel(coords, np.asarray(modes, dtype=np.int64), sz, bitmap)
        before = np.empty(n_words, dtype=idt)
        count = _bitmap_prefix(bitmap, before)
        ids = []
        for coords, modes in parts:
            out = np.empty(coords.shape[1], dtype=idt)
            bitmap_ids_kernel(coords, np.asarray(modes, dtype=np.int64), sz, bitmap, before, out)
            ids.append(out)
        keys = None
        if want_keys:
            keys = np.empty(count, dtype=np.int64)
            _bitmap_values(bitmap, keys)
        return ids, keys, int(count)
    lin = np.concatenate([linear_key(c, m, sizes) for c, m in parts]) if len(parts) > 1 else \
        linear_key(parts[0][0], parts[0][1], sizes)
    all_ids, uniq = radix_rank(lin, space)
    del lin
    ids, start = [], 0
    for coords, _ in parts:
        ids.append(all_ids[start:start + coords.shape[1]].astype(idt))
        start += coords.shape[1]
    return ids, (uniq if want_keys else None), int(uniq.shape[0])


@njit(cache=True)
def csr_from_ids_kernel(row_ids, col_ids, vals, indptr, indices, data):
    """Stable counting sort of entries by row; returns False (and fills only ``indptr``)
    when the row ids already ascend, so the caller can keep ``col_ids``/``vals``."""
    n = row_ids.shape[0]
    n_rows = indptr.shape[0] - 1
    ascending = True
    prev = np.int64(-1)
    for t in range(n):
        r = np.int64(row_ids[t])
        indptr[r + 1] += 1
        if r < prev:
            ascending = False
        prev = r
    for r in range(n_rows):
        indptr[r + 1] += indptr[r]
    if ascending:
        return False
    for t in range(n):  # indptr[r] is row r's insertion cursor: it ends at the start of row r + 1
        r = row_ids[t]
        q = indptr[r]
        indptr[r] = q + 1
        indices[q] = col_ids[t]
        data[q] = vals[t]
    for r in range(n_rows, 0, -1):
        indptr[r] = indptr[r - 1]
    indptr[0] = 0
    return True


def csr_from_ids(row_ids: np.ndarray, col_ids: np.ndarray, vals: np.ndarray, n_rows: int,
                 index_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indptr, indices, data)`` of the entries grouped by row, in their input order per row."""
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    indices = np.empty(col_ids.shape[0], dtype=index_dtype)
    data = np.empty_like(vals)
    if csr_from_ids_kernel(row_ids, col_ids, vals, indptr, indices, data):
        return indptr, indices, data
    return indptr, col_ids.astype(index_dtype, copy=False), vals


@njit(cache=True)
def decode_table_kernel(lin, sizes, out):
    """``out[:, i]`` = row-major coordinates of linear key ``lin[i]`` over ``sizes``."""
    k = sizes.shape[0]
    for i in range(lin.shape[0]):
        v = lin[i]
        for j in range(k - 1, -1, -1):
            out[j, i] = v % sizes[j]
            v //= sizes[j]


@njit(cache=True)
def decode_direct_kernel(sizes, chunk, out):
    """``out[:, i]`` = coordinates of ``i`` for every ``i < out.shape[1]`` (an odometer per chunk)."""
    n = out.shape[1]
    k = sizes.shape[0]
    n_chunks = (n + chunk - 1) // chunk
    for c in range(n_chunks):
        start = c * chunk
        stop = min(n, start + chunk)
        cur = np.empty(k, dtype=np.int64)
        v = np.int64(start)
        for j in range(k - 1, -1, -1):
            cur[j] = v % sizes[j]
            v //= sizes[j]
        for i in range(start, stop):
            for j in range(k):
                out[j, i] = cur[j]
            j = k - 1
            while j >= 0:
                cur[j] += 1
                if cur[j] < sizes[j]:
                    break
                cur[j] = 0
                j -= 1


@njit(cache=True, parallel=True)
def assemble_coo_kernel(indptr, indices, row_table, col_table, col_skip, bounds, coords):
    """:func:`assemble_coo_serial` with one ``prange`` iteration per part."""
    for part in prange(bounds.shape[0] - 1):
        _assemble_part(indptr, indices, row_table, col_table, col_skip, bounds[part], bounds[part + 1], coords)


@njit(cache=True)
def assemble_coo_serial(indptr, indices, row_table, col_table, col_skip, bounds, coords):
    """COO coordinates of a CSR product on the calling thread (see :func:`_assemble_part`)."""
    for part in range(bounds.shape[0] - 1):
        _assemble_part(indptr, indices, row_table, col_table, col_skip, bounds[part], bounds[part + 1], coords)


@njit(cache=True, inline="always")
def _assemble_part(indptr, indices, row_table, col_table, col_skip, r0, r1, coords):
    """COO coordinates of a CSR product: row-key modes, then the column-key modes from ``col_skip``.

    Tables are mode-major (``[n_modes, n_ids]``); each output mode is written by its own
    sequential sweep over the rows ``r0:r1`` (a gather per entry), which streams better than
    writing every mode of one entry at a time.
    """
    nr = row_table.shape[0]
    nc = col_table.shape[0] - col_skip
    for m in range(nr):
        out = coords[m]
        key = row_table[m]
        for r in range(r0, r1):
            v = key[r]
            for p in range(indptr[r], indptr[r + 1]):
                out[p] = v
    lo = indptr[r0]
    hi = indptr[r1]
    for m in range(nc):
        out = coords[nr + m]
        key = col_table[col_skip + m]
        for p in range(lo, hi):
            out[p] = key[indices[p]]


def assemble_coo(indptr: np.ndarray, indices: np.ndarray, row_table: np.ndarray, col_table: np.ndarray,
                 col_skip: int, index_dtype: np.dtype) -> np.ndarray:
    """``[nr + nc - col_skip, nnz]`` coordinates (see :func:`assemble_coo_kernel`)."""
    nnz = int(indptr[-1])
    n_rows = indptr.shape[0] - 1
    coords = np.empty((row_table.shape[0] + col_table.shape[0] - col_skip, nnz), dtype=index_dtype)
    if nnz == 0:
        return coords
    if nnz < PARALLEL_MIN_NNZ or numba.get_num_threads() == 1:
        assemble_coo_serial(indptr, indices, row_table, col_table, col_skip, np.array([0, n_rows], np.int64),
                            coords)
        return coords
    n_parts = max(1, min(n_rows, 8 * numba.get_num_threads()))
    targets = np.linspace(0, nnz, n_parts + 1)[1:-1]
    cuts = np.searchsorted(indptr, targets)
    bounds = np.concatenate(([0], np.minimum(cuts, n_rows), [n_rows])).astype(np.int64)
    assemble_coo_kernel(indptr, indices, row_table, col_table, col_skip, bounds, coords)
    return coords
