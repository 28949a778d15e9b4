"""Per-row routines of the Gustavson SpGEMM (:mod:`flexsparse.kernels.cpu.spgemm`).

Each routine computes or counts one output row ``C[i, :] = sum_{k in A[i, :]} A[i, k] * B[k, :]``
into a caller-owned workspace that is clean on entry and needs no reset on exit: every
workspace slot carries a *stamp* of the row that last wrote it (``i + 1``, so the zeroed
workspace that ``np.zeros`` hands out lazily is clean), and a slot with an older stamp reads
as empty. Rows come out *jumbled* (columns in first-touch order).

Accumulators (all O(flops) per row; a product is one multiply-add):

* dense *position* map (:func:`fill_row_tag`): ``tag[n_cols]`` holds, for every column the
  row touched, its output slot as a *generation*: the number of entries the worker emitted
  before the row, plus one, plus the slot within the row. A tag below the row's first
  generation is stale, so the tags need no row stamp and fit ``uint32`` while a worker
  emits fewer than 2^32 - 1 entries (half the bytes of ``stamp << 32 | slot``: with 2^20
  columns, two threads each with 8 MiB of tags scaled 1.06x over one on random updates,
  with 4 MiB 1.88x, this VM 2026-11-30). A repeated column adds straight into the output
  slot. One load per product and no emission pass; it relies on
  the branch predictor for the new-vs-repeated test, which holds on meshes and stencils
  (the same pattern row after row) and on rows without repeats.
* dense *value* accumulator (:func:`fill_row_acc`): ``acc[n_cols]`` values plus a
  ``uint32`` stamp per column; every product is added with no branch at all, the column
  is appended to a scratch list whose length grows by ``new`` (0 or 1), and the row is
  gathered (re-zeroing ``acc``) at the end. It wins on graphs, where whether a column
  repeats is unpredictable.
* hash (:func:`count_row_hash`, :func:`fill_row_hash`): open addressing with linear
  probing in a table of the next power of two ``>= 2 * flops`` slots (load <= 1/2), keys
  ``stamp << 32 | column`` (no reset between rows), Fibonacci hashing (multiply by
  2^64/golden ratio, keep the top bits). Only for very wide outputs whose dense workspace
  would miss every cache.

The symbolic count (:func:`count_row_dense`) uses a ``uint32`` stamp per column:
``new = marker[c] != stamp`` is added, no branch.

:func:`rows_position`, :func:`rows_value` and :func:`rows_hash` (one of them by kind:
:func:`rows_stretch`) compute a stretch of
consecutive rows with one accumulator, back to back from an output offset, filling the row
pointers (and sorting each row while it is in cache when asked): the units the workers of
:mod:`~flexsparse.kernels.cpu.spgemm` time and schedule.

Every loop over the entries of ``A`` prefetches the ``B`` row that
:data:`PREFETCH_DISTANCE` entries later will read (and, twice as far ahead, its row
pointer): on rows with random columns the ``B`` rows miss the caches, and this hid most
of that latency (uniform random 200k x 200k, 8 per row, one thread: symbolic 58 -> 29 ms,
numeric 211 -> 135 ms; neutral on meshes and power-law graphs). Indices are read as
``uint64`` so that no negative-index wraparound code is emitted (measured 16.8 -> 10.6 ms
for the symbolic pass on a 3-D Poisson matrix).
"""

from __future__ import annotations

import time

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.extending import intrinsic, overload

from flexsparse.kernels.cpu.rowsort import SMALL_ROW, insertion_sort, sort_row_pairs

__all__ = [
    "PREFETCH_DISTANCE",
    "count_row_dense",
    "count_row_hash",
    "cycles",
    "fill_row_acc",
    "fill_row_hash",
    "fill_row_tag",
    "hash_table_size",
    "keep",
    "position_tag_dtype",
    "prefetch",
    "rows_hash",
    "rows_position",
    "rows_stretch",
    "rows_value",
    "warm",
]

#: Entries of ``A`` between the prefetch of a ``B`` row and its use.
PREFETCH_DISTANCE = 8
_U1 = np.uint64(1)
_U32 = np.uint64(32)
#: 2^64 / golden ratio (odd): Fibonacci hashing keeps the top bits of ``c * _HASH_MUL``.
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)


# ------------------------------------------------------------------------ intrinsics
def prefetch(arr, i):
    """Hint the CPU to load ``arr[i]`` into the caches (no effect without the JIT)."""


@intrinsic
def _prefetch_intrinsic(typingctx, arr, i):
    if not isinstance(arr, types.Array) or not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])  # an address hint: never dereferenced
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read (0), high temporal locality (3), data cache (1)
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, i), codegen


#: What the kernels call: the intrinsic itself under the JIT (an overload of
#: :func:`prefetch`, or a helper around it, compiled to a call per use that cost ~30-55 ns,
#: 7-12x the whole loop body on cache-resident rows: tridiagonal 32768 x 32768, one
#: thread, 0.53 ms inline vs 3.4-5.8 ms through a call), the no-op without it.
_pf = prefetch if numba.config.DISABLE_JIT else _prefetch_intrinsic


def keep(x):
    """Make the compiler compute the integer ``x`` though nothing uses it (an empty ``asm``
    statement reads it): the loads of :func:`warm` stay; no effect without the JIT."""


@intrinsic
def _keep_intrinsic(typingctx, x):
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = context.cast(builder, args[0], signature.args[0], types.int64)
        builder.asm(ir.FunctionType(ir.VoidType(), [ir.IntType(64)]), "", "r", [v], side_effect=True)
        return context.get_dummy_value()

    return types.void(x), codegen


_keep = keep if numba.config.DISABLE_JIT else _keep_intrinsic


@njit(cache=True)
def warm(arr):
    """Load one element of every 64-byte line of the 1-D ``arr`` into the caches (loads: a
    prefetch may be dropped when the misses outrun the fill buffers)."""
    step = max(64 // arr.itemsize, 1)
    n = 0
    for i in range(0, arr.shape[0], step):
        n += np.int64(arr[i] != 0)
    _keep(n)


def cycles():
    """A monotonic tick count (the CPU cycle counter under the JIT, nanoseconds without)."""
    return time.perf_counter_ns()


@intrinsic
def _cycles_intrinsic(typingctx):
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.readcyclecounter")
        return builder.call(fn, [])

    return types.uint64(), codegen


@overload(cycles, jit_options={"cache": True})
def _cycles_jit():
    def impl():
        return _cycles_intrinsic()
    return impl


def position_tag_dtype(flops: int) -> np.dtype:
    """dtype of the position map's tags (:func:`fill_row_tag`) for a worker of at most ``flops``
    multiply-adds: its entries, and so its generations, stay below ``flops + 2``."""
    return np.dtype(np.uint32 if flops + 2 < 2**32 else np.uint64)


# ------------------------------------------------------------------------- counting
@njit(cache=True, inline="always")
def count_row_dense(stamp, a0, a1, a_end, a_indices, b_indptr, b_indices, marker):
    """Distinct columns of one output row. ``marker: uint32[n_cols]`` holds the stamp of the
    last row that touched each column; ``stamp`` (uint32) is this row's. Branch-free."""
    cnt = 0
    d = np.uint64(PREFETCH_DISTANCE)
    for p in range(np.uint64(a0), np.uint64(a1)):
        if p + d < a_end:  # the B row needed d entries later, and the row pointer after it
            _pf(b_indices, b_indptr[np.uint64(a_indices[p + d])])
            if p + d + d < a_end:
                _pf(b_indptr, np.uint64(a_indices[p + d + d]))
        k = np.uint64(a_indices[p])
        for q in range(np.uint64(b_indptr[k]), np.uint64(b_indptr[k + _U1])):
            c = np.uint64(b_indices[q])
            cnt += marker[c] != stamp
            marker[c] = stamp
    return cnt


@njit(cache=True, inline="always")
def hash_table_size(flops):
    """``(size, shift)``: the power of two ``size >= 2 * flops`` (at least 16) and
    ``64 - log2(size)``, the shift that keeps the top bits of a Fibonacci hash."""
    size = 16
    bits = 4
    while size < 2 * flops:
        size *= 2
        bits += 1
    return size, 64 - bits


@njit(cache=True)
def count_row_hash(stamp, flops, a0, a1, a_indices, b_indptr, b_indices, keys):
    """Distinct columns of one output row with a stamped linear-probing set ``keys: uint64``
    (``stamp = (i + 1) << 32``; slots with an older stamp are empty)."""
    size, shift = hash_table_size(flops)
    mask = np.uint64(size - 1)
    sh = np.uint64(shift)
    cnt = 0
    for p in range(np.uint64(a0), np.uint64(a1)):
        k = np.uint64(a_indices[p])
        for q in range(np.uint64(b_indptr[k]), np.uint64(b_indptr[k + _U1])):
            c = np.uint64(b_indices[q])
            key = stamp | c
            h = (c * _HASH_MUL) >> sh
            while True:
                x = keys[h]
                if x == key:
                    break
                if x < stamp:
                    keys[h] = key
                    cnt += 1
                    break
                h = (h + _U1) & mask
    return cnt


# -------------------------------------------------------------------------- filling
@njit(cache=True, inline="always")
def fill_row_tag(gen, a0, a1, a_end, a_indices, a_data, b_indptr, b_indices, b_data, tag,
                 c_indices, c_data, pos):
    """Accumulate one output row at ``c_*[pos:]`` through the position map ``tag``
    (``uint32`` or ``uint64``; ``gen``: uint64, the row's first generation, above every tag
    of earlier rows; the next row's is ``gen`` plus this row's length). Returns the row
    length."""
    t = np.uint64(0)
    base = np.uint64(pos)
    d = np.uint64(PREFETCH_DISTANCE)
    for p in range(np.uint64(a0), np.uint64(a1)):
        if p + d < a_end:  # the B row needed d entries later, and the row pointer after it
            q0 = b_indptr[np.uint64(a_indices[p + d])]
            _pf(b_indices, q0)
            _pf(b_data, q0)
            if p + d + d < a_end:
                _pf(b_indptr, np.uint64(a_indices[p + d + d]))
        k = np.uint64(a_indices[p])
        av = a_data[p]
        for q in range(np.uint64(b_indptr[k]), np.uint64(b_indptr[k + _U1])):
            c = np.uint64(b_indices[q])
            v = av * b_data[q]
            x = np.uint64(tag[c])
            if x < gen:
                tag[c] = gen + t
                c_indices[base + t] = c
                c_data[base + t] = v
                t += _U1
            else:
                c_data[base + (x - gen)] += v
    return t


@njit(cache=True, inline="always")
def fill_row_acc(stamp, a0, a1, a_end, a_indices, a_data, b_indptr, b_indices, b_data, marker,
                 acc, scratch, c_indices, c_data, pos):
    """Accumulate one output row in ``acc`` (zero on entry and exit) with the ``uint32``
    stamps ``marker``; ``scratch`` (at least row length + 1 slots) lists the columns in
    first-touch order. Writes the row at ``c_*[pos:]`` and returns its length."""
    t = np.uint64(0)
    d = np.uint64(PREFETCH_DISTANCE)
    for p in range(np.uint64(a0), np.uint64(a1)):
        if p + d < a_end:  # the B row needed d entries later, and the row pointer after it
            q0 = b_indptr[np.uint64(a_indices[p + d])]
            _pf(b_indices, q0)
            _pf(b_data, q0)
            if p + d + d < a_end:
                _pf(b_indptr, np.uint64(a_indices[p + d + d]))
        k = np.uint64(a_indices[p])
        av = a_data[p]
        for q in range(np.uint64(b_indptr[k]), np.uint64(b_indptr[k + _U1])):
            c = np.uint64(b_indices[q])
            acc[c] += av * b_data[q]
            new = marker[c] != stamp
            marker[c] = stamp
            scratch[t] = c  # overwritten by the next column unless this one was new
            t += np.uint64(new)
    base = np.uint64(pos)
    for s in range(t):
        c = np.uint64(scratch[s])
        c_indices[base + s] = c
        c_data[base + s] = acc[c]
        acc[c] = 0
    return t


@njit(cache=True)
def fill_row_hash(stamp, flops, a0, a1, a_indices, a_data, b_indptr, b_indices, b_data, keys,
                  slots, c_indices, c_data, pos):
    """Accumulate one output row through a stamped linear-probing map (``keys: uint64``,
    ``slots: uint32`` output positions), writing it at ``c_*[pos:]``; returns its length."""
    size, shift = hash_table_size(flops)
    mask = np.uint64(size - 1)
    sh = np.uint64(shift)
    t = np.uint64(0)
    base = np.uint64(pos)
    for p in range(np.uint64(a0), np.uint64(a1)):
        k = np.uint64(a_indices[p])
        av = a_data[p]
        for q in range(np.uint64(b_indptr[k]), np.uint64(b_indptr[k + _U1])):
            c = np.uint64(b_indices[q])
            v = av * b_data[q]
            key = stamp | c
            h = (c * _HASH_MUL) >> sh
            while True:
                x = keys[h]
                if x == key:
                    c_data[base + np.uint64(slots[h])] += v
                    break
                if x < stamp:
                    keys[h] = key
                    slots[h] = t
                    c_indices[base + t] = c
                    c_data[base + t] = v
                    t += _U1
                    break
                h = (h + _U1) & mask
    return t


# ------------------------------------------------------------ rows of one stretch
# The three routines share their row loop (the scaled copy of a single-entry row, the sort,
# the row pointer) written out in each: a per-row call to a shared jitted helper, even
# ``inline="always"``, can compile to a real call of 30-55 ns, which is a tenth of a short
# row's time; only the accumulator's fill differs.
@njit(cache=True)
def rows_position(r0, r1, r_end, pos, gen, a_end, b_sorted, sort, a_indptr, a_indices, a_data, b_indptr,
                   b_indices, b_data, row_flops, c_indptr, c_indices, c_data, tag, skeys, svals, counts):
    """Dense position map (:func:`~._spgemm_rows.fill_row_tag`); ``gen: uint64[1]`` holds the
    worker's next generation (one plus the entries it emitted through the map so far)."""
    g = gen[0]
    for i in range(r0, r1):
        a0 = a_indptr[i]
        a1 = a_indptr[i + 1]
        f = row_flops[i]
        if f == 0:
            n = np.int64(0)
        elif a1 - a0 == 1 and b_sorted:
            k = a_indices[a0]  # a scaled copy of one (sorted, duplicate-free) row of B
            av = a_data[a0]
            q0 = b_indptr[k]
            n = b_indptr[k + 1] - q0
            for q in range(n):
                c_indices[pos + q] = b_indices[q0 + q]
                c_data[pos + q] = av * b_data[q0 + q]
        else:
            n = np.int64(fill_row_tag(g, a0, a1, a_end, a_indices, a_data, b_indptr, b_indices, b_data, tag,
                                      c_indices, c_data, pos))
            g += np.uint64(n)
        if sort and n > 1:
            if n <= SMALL_ROW:  # inline: a call per row cost more than the sort itself
                insertion_sort(c_indices, c_data, pos, pos + n)
            else:
                sort_row_pairs(c_indices, c_data, pos, pos + n, skeys, svals, counts)
        pos += n
        if i + 1 < r_end:
            c_indptr[i + 1] = pos
    gen[0] = g
    return pos


@njit(cache=True)
def rows_value(r0, r1, r_end, pos, off, a_end, b_sorted, sort, a_indptr, a_indices, a_data, b_indptr,
                b_indices, b_data, row_flops, c_indptr, c_indices, c_data, marker, acc, scratch, skeys, svals,
                counts):
    """Dense value accumulator (:func:`~._spgemm_rows.fill_row_acc`)."""
    for i in range(r0, r1):
        a0 = a_indptr[i]
        a1 = a_indptr[i + 1]
        f = row_flops[i]
        if f == 0:
            n = np.int64(0)
        elif a1 - a0 == 1 and b_sorted:
            k = a_indices[a0]  # a scaled copy of one (sorted, duplicate-free) row of B
            av = a_data[a0]
            q0 = b_indptr[k]
            n = b_indptr[k + 1] - q0
            for q in range(n):
                c_indices[pos + q] = b_indices[q0 + q]
                c_data[pos + q] = av * b_data[q0 + q]
        else:
            n = np.int64(fill_row_acc(np.uint32(i + off), a0, a1, a_end, a_indices, a_data, b_indptr, b_indices,
                                      b_data, marker, acc, scratch, c_indices, c_data, pos))
        if sort and n > 1:
            if n <= SMALL_ROW:  # inline: a call per row cost more than the sort itself
                insertion_sort(c_indices, c_data, pos, pos + n)
            else:
                sort_row_pairs(c_indices, c_data, pos, pos + n, skeys, svals, counts)
        pos += n
        if i + 1 < r_end:
            c_indptr[i + 1] = pos
    return pos


@njit(cache=True)
def rows_hash(r0, r1, r_end, pos, off, b_sorted, sort, a_indptr, a_indices, a_data, b_indptr, b_indices,
               b_data, row_flops, c_indptr, c_indices, c_data, keys, slots, skeys, svals, counts):
    """Hash accumulator (:func:`~._spgemm_rows.fill_row_hash`)."""
    for i in range(r0, r1):
        a0 = a_indptr[i]
        a1 = a_indptr[i + 1]
        f = row_flops[i]
        if f == 0:
            n = np.int64(0)
        elif a1 - a0 == 1 and b_sorted:
            k = a_indices[a0]  # a scaled copy of one (sorted, duplicate-free) row of B
            av = a_data[a0]
            q0 = b_indptr[k]
            n = b_indptr[k + 1] - q0
            for q in range(n):
                c_indices[pos + q] = b_indices[q0 + q]
                c_data[pos + q] = av * b_data[q0 + q]
        else:
            n = np.int64(fill_row_hash(np.uint64(i + off) << np.uint64(32), f, a0, a1, a_indices, a_data,
                                       b_indptr, b_indices, b_data, keys, slots, c_indices, c_data, pos))
        if sort and n > 1:
            if n <= SMALL_ROW:  # inline: a call per row cost more than the sort itself
                insertion_sort(c_indices, c_data, pos, pos + n)
            else:
                sort_row_pairs(c_indices, c_data, pos, pos + n, skeys, svals, counts)
        pos += n
        if i + 1 < r_end:
            c_indptr[i + 1] = pos
    return pos


@njit(cache=True)
def rows_stretch(kind, r0, r1, r_end, pos, off, gen, a_end, b_sorted, sort, a_indptr, a_indices, a_data, b_indptr,
                 b_indices, b_data, row_flops, c_indptr, c_indices, c_data, tag, marker, acc, scratch, keys, slots,
                 skeys, svals, counts):
    """Rows ``r0:r1`` of one stretch with accumulator ``kind``: 0 hash (:func:`rows_hash`), 1 the
    position map (:func:`rows_position`), 2 the value accumulator (:func:`rows_value`); the
    workspaces the kind does not use may be empty. Returns the end of the last row."""
    if kind == 0:
        return rows_hash(r0, r1, r_end, pos, off, b_sorted, sort, a_indptr, a_indices, a_data, b_indptr, b_indices,
                         b_data, row_flops, c_indptr, c_indices, c_data, keys, slots, skeys, svals, counts)
    if kind == 1:
        return rows_position(r0, r1, r_end, pos, gen, a_end, b_sorted, sort, a_indptr, a_indices, a_data, b_indptr,
                             b_indices, b_data, row_flops, c_indptr, c_indices, c_data, tag, skeys, svals, counts)
    return rows_value(r0, r1, r_end, pos, off, a_end, b_sorted, sort, a_indptr, a_indices, a_data, b_indptr,
                      b_indices, b_data, row_flops, c_indptr, c_indices, c_data, marker, acc, scratch, skeys, svals,
                      counts)
