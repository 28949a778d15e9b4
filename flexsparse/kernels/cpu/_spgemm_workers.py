"""Per-worker bodies of the Gustavson SpGEMM (:mod:`flexsparse.kernels.cpu.spgemm`): the row
loops of the three accumulators, a worker's pass over its rows (forward, or walking down in
chunks), and the take-over between worker 0 and the last worker.

Take-over: with the two-ended layout, worker 0 (walking down) and the last worker (forward)
claim their chunks by compare-and-swap on ``claim`` (:mod:`.atomic`), and whichever
finishes first takes the other's rows from the far end -- the last worker worker 0's lowest
rows (:func:`_take`), worker 0 the last worker's highest (:func:`_take_top`) -- into a side
room shared by both thieves, copied into place after the join (:func:`_join_taken`). Stamps
of taken rows continue above every stamp the thief used before, so its dense workspaces need
no reset. Cost: one compare-and-swap per chunk of :data:`BACK_CHUNK` multiply-adds, and a
copy of the taken rows' entries.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flexsparse.kernels.cpu._spgemm_rows import (
    cycles,
    fill_row_acc,
    fill_row_hash,
    fill_row_tag,
    hash_table_size,
)
from flexsparse.kernels.cpu.atomic import atomic_cas, atomic_load
from flexsparse.kernels.cpu.rowsort import SMALL_ROW, insertion_sort, sort_row_pairs
from flexsparse.kernels.cpu.simd import move

__all__ = ["ADAPT_CHUNK", "BACK_CHUNK", "PREFETCH_MIN_NNZ", "TRACE_FIELDS"]

#: Multiply-adds per timed trial of a dense variant (``variant="auto"``): two trials of
#: each variant at the start of each dense part, then the faster one for the rest of the
#: part. Parts with fewer than ``4 * ADAPT_CHUNK`` multiply-adds keep the variant before.
ADAPT_CHUNK = 1 << 15
#: ``B`` rows are prefetched (see :mod:`._spgemm_rows`) only when ``B`` holds at least this many
#: entries (12 MB at float64/int32): a cache-resident ``B`` gains nothing from it and each
#: prefetch costs two loads per entry of ``A`` (pygsp Minnesota, 18k multiply-adds: 89.7 ->
#: 84.4 us without it).
PREFETCH_MIN_NNZ = 1 << 20
_TRIALS = 4
#: Multiply-adds per chunk of a worker that walks down (see :func:`_numeric_worker`): the
#: chunk's rows, at most this many entries, are still in the L2 cache when they are moved up.
BACK_CHUNK = 1 << 14
_LOW32 = (1 << 32) - 1
#: Row stamps live in 32 bits: a thief stamps the rows it takes above its own (see :func:`_take`).
_MAX_STAMP = 2**32 - 2
#: Fields of a worker's trace row (see :func:`_numeric_worker`).
TRACE_FIELDS = 6


@njit(cache=True)
def _worker_table(bounds, p0, p1, use_dense, row_flops):
    """Largest hash table among the hash rows of parts ``p0:p1`` (0: none)."""
    tsize = 0
    for part in range(p0, p1):
        if not use_dense[part]:
            for i in range(bounds[part], bounds[part + 1]):
                if row_flops[i] > 0:
                    tsize = max(tsize, hash_table_size(row_flops[i])[0])
    return tsize


# Rows ``r0:r1`` back to back from ``pos``, setting ``c_indptr[i + 1]`` for ``i + 1 < r_end``;
# each returns the new ``pos``. Row ``i`` is stamped ``i + off`` (stamps grow in the order a
# worker computes its rows: the accumulators read a slot with an older stamp as empty). One
# function per accumulator: with two accumulators inlined into one loop, LLVM compiled the
# position-map loop ~1.8x slower (Minnesota), and so did an inlined helper for the
# single-entry copy -- hence the repeated row skeleton, bookkeeping included (as an inlined
# helper taking the arrays it cost ~60 % more on short rows: tridiagonal 4096, one thread).
@njit(cache=True)
def _rows_position(r0, r1, r_end, pos, off, a_end, b_sorted, sort, a_indptr, a_indices, a_data, b_indptr,
                   b_indices, b_data, row_flops, c_indptr, c_indices, c_data, tag, skeys, svals, counts):
    """Dense position map (:func:`~._spgemm_rows.fill_row_tag`)."""
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
            n = np.int64(fill_row_tag(np.uint64(i + off) << np.uint64(32), a0, a1, a_end, a_indices, a_data,
                                      b_indptr, b_indices, b_data, tag, c_indices, c_data, pos))
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
def _rows_value(r0, r1, r_end, pos, off, a_end, b_sorted, sort, a_indptr, a_indices, a_data, b_indptr,
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
def _rows_hash(r0, r1, r_end, pos, off, b_sorted, sort, a_indptr, a_indices, a_data, b_indptr, b_indices,
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
def _numeric_worker(w, back, steal, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, b_sorted,
                    row_flops, bounds, worker_bounds, use_dense, variant, sort, c_indptr, c_indices, c_data,
                    tag, marker, acc, trace, claim, s_indices, s_data):
    """Compute the rows of the parts of worker ``w``, back to back from ``c_indptr[r_lo]``
    (its first row's offset, set by the caller), filling ``c_indptr[i + 1]`` for its rows
    but the last; the end of its last row goes to ``trace[3]``. The buffers need the
    worker's flops as capacity past that offset, but only its entries are touched.
    ``back``: the worker's rows end at ``c_indptr[r_hi]`` instead, in room for its flops
    below that offset (``c_indptr[i]`` is set for every row; ``trace[3]`` receives its
    first row's offset): it takes its rows in *chunks* of about :data:`BACK_CHUNK`
    multiply-adds, last chunk first, computes each chunk's rows forward (so the prefetch,
    which looks ahead in ``A``'s entry order, stays useful) at the bottom of its room (the
    same slots for every chunk, so they stay in cache; right below the chunk above once the
    room left is under twice the chunk's flops), and copies the chunk up against the chunk
    above.

    ``tag``/``marker``/``acc`` are its dense workspaces (zero on the first call; ``marker``
    and ``acc`` may be empty when ``variant`` is 1, the position map); hash tables and the
    column scratch list are allocated here. ``variant``: 0 times both dense variants on
    stretches of :data:`ADAPT_CHUNK` multiply-adds (two each, alternating) and keeps the
    faster for the other rows, 1 the position map, 2 the value accumulator.
    Take-over (``claim``, see :func:`_join_taken`): a worker walking down claims each chunk
    from the top of the rows left, ``claim[0] = top << 32 | bottom``, by compare-and-swap;
    ``steal``: this worker, once its own rows are done, claims chunks of the walking-down
    worker's rows from the bottom of what is left, computes them forward into ``s_indices``/
    ``s_data`` (room for that worker's flops) and leaves their end in ``claim[1]``. So a
    worker that starts late, or shares its core with another library's spinning threads,
    costs the product the rows it did not reach, not its whole share. Without
    ``claim[0]`` set (``-1``) nothing is claimed.

    ``trace: float64[6]`` also receives the variant used last and the best measured ticks
    per unit of work (multiply-add or output entry) of variants 1 and 2 (``inf``: not timed),
    and the cycle counter when the worker started and when it finished (``trace[4:6]``: the
    late start, busy time and balance of the threads, for benchmarks).
    """
    t_start = cycles()
    p0 = worker_bounds[w]
    p1 = worker_bounds[w + 1]
    r_lo = bounds[p0]
    r_hi = bounds[p1]
    # B rows are prefetched only when B outgrows the caches (a_end = 0 turns it off)
    a_end = np.uint64(a_indptr[r_hi]) if b_indices.shape[0] >= PREFETCH_MIN_NNZ else np.uint64(0)
    v1 = worker_bounds[1]  # parts 0:v1 are worker 0's, vl: the last worker's
    vl = worker_bounds[worker_bounds.shape[0] - 2]
    top_thief = back and claim[0] >= 0  # worker 0 takes the last worker's rows from the top
    tsize = _worker_table(bounds, p0, p1, use_dense, row_flops)
    if steal:
        tsize = max(tsize, _worker_table(bounds, 0, v1, use_dense, row_flops))
    if top_thief:
        tsize = max(tsize, _worker_table(bounds, vl, bounds.shape[0] - 1, use_dense, row_flops))
    keys = np.zeros(tsize, dtype=np.uint64)
    slots = np.empty(tsize, dtype=np.uint32)
    longest = 0
    if variant != 1 or sort:
        for i in range(r_lo, r_hi):  # rows are no longer than their flops
            longest = max(longest, row_flops[i])
        if steal:
            for i in range(bounds[0], bounds[v1]):
                longest = max(longest, row_flops[i])
        if top_thief:
            for i in range(bounds[vl], bounds[bounds.shape[0] - 1]):
                longest = max(longest, row_flops[i])
    scratch = np.empty(longest + 1 if variant != 1 else 0, dtype=c_indices.dtype)
    skeys = np.empty(longest if sort else 0, dtype=c_indices.dtype)
    svals = np.empty(longest if sort else 0, dtype=c_data.dtype)
    counts = np.empty(257, dtype=np.int64)
    current = 1 if variant != 2 else 2
    trial = _TRIALS
    best = np.full(3, np.inf)
    timed_part = -1
    part = p1 - 1 if back else p0
    lo = r_hi if back else r_lo  # rows lo:hi are computed next
    hi = r_hi if back else r_lo
    pos = c_indptr[r_hi] if back else c_indptr[r_lo]  # back: the top of the room
    room_lo = pos
    if back:
        for i in range(r_lo, r_hi):
            room_lo -= row_flops[i]
    claimed = back and claim[0] >= 0
    fclaimed = steal  # the last worker claims its own rows from the bottom (claim[2])
    while (lo > r_lo) if back else (hi < r_hi):
        # the next stretch: whole parts, but stretches of ~ADAPT_CHUNK multiply-adds while the
        # dense variants are timed, and chunks of ~BACK_CHUNK when walking down
        if back:
            while bounds[part] >= lo:
                part -= 1
        else:
            while bounds[part + 1] <= hi:
                part += 1
        if variant == 0 and part != timed_part and use_dense[part]:
            # each dense part times the variants afresh: the rows' character drifts along the
            # matrix (R-MAT: hub rows first), and a walk down starts at the other end
            timed_part = part
            part_flops = 0
            for i in range(bounds[part], bounds[part + 1]):
                part_flops += row_flops[i]
            if part_flops >= _TRIALS * ADAPT_CHUNK:
                trial = 0
                best[:] = np.inf
        timed = trial < _TRIALS and use_dense[part]
        work = 0
        if back:
            hi = lo
            limit = ADAPT_CHUNK if timed else BACK_CHUNK
            floor = bounds[part]
            seen = np.int64(-1)
            if claimed:
                seen = atomic_load(claim, 0)
                floor = max(floor, seen & _LOW32)  # the rows below were taken
                if floor >= hi:
                    break
            while lo > floor and (lo == hi or work + row_flops[lo - 1] <= limit):
                lo -= 1
                work += row_flops[lo]
            if claimed and atomic_cas(claim, 0, seen, (lo << 32) | (seen & _LOW32)) != seen:
                lo = hi  # the thief moved meanwhile: choose again
                continue
            # compute the chunk at the bottom of the room (the same slots every time, so they stay
            # in cache) while that keeps it clear of its destination; else right below pos
            start = room_lo if pos - room_lo >= 2 * work else pos - work
            off = r_hi - hi - lo + 1  # stamps count the rows computed so far
            r_end = hi  # c_indptr[hi] belongs to the chunk above
            chunk_end = np.uint64(a_indptr[hi]) if a_end else a_end
        else:
            lo = hi
            hi = bounds[part + 1]
            if fclaimed:  # chunks of ~BACK_CHUNK, claimed below the rows worker 0 took from the top
                seen = atomic_load(claim, 2)
                top = seen >> 32
                if lo >= top:
                    break
                ceil = min(hi, top)
                limit = ADAPT_CHUNK if timed else BACK_CHUNK
                hi = lo
                while hi < ceil and (hi == lo or work + row_flops[hi] <= limit):
                    work += row_flops[hi]
                    hi += 1
                if atomic_cas(claim, 2, seen, (top << 32) | hi) != seen:
                    hi = lo
                    continue
            elif timed:
                hi = lo
                while hi < bounds[part + 1] and work < ADAPT_CHUNK:
                    work += row_flops[hi]
                    hi += 1
            start = pos
            off = 1
            r_end = r_hi
            chunk_end = a_end
        if timed:
            mark = cycles()
        if not use_dense[part]:
            end = _rows_hash(lo, hi, r_end, start, off, b_sorted, sort, a_indptr, a_indices, a_data, b_indptr,
                             b_indices, b_data, row_flops, c_indptr, c_indices, c_data, keys, slots, skeys, svals,
                             counts)
        elif current == 1:
            end = _rows_position(lo, hi, r_end, start, off, chunk_end, b_sorted, sort, a_indptr, a_indices, a_data,
                                 b_indptr, b_indices, b_data, row_flops, c_indptr, c_indices, c_data, tag, skeys,
                                 svals, counts)
        else:
            end = _rows_value(lo, hi, r_end, start, off, chunk_end, b_sorted, sort, a_indptr, a_indices, a_data,
                              b_indptr, b_indices, b_data, row_flops, c_indptr, c_indices, c_data, marker, acc,
                              scratch, skeys, svals, counts)
        if timed:
            best[current] = min(best[current], (cycles() - mark) / max(work + (end - start), 1))
            trial += 1
            current = (1 if best[1] <= best[2] else 2) if trial == _TRIALS else 1 + trial % 2
        if back:  # move the chunk up against pos
            d = pos - end
            if d:  # memmove: 4-6x the speed of an element loop, and overlap is allowed
                move(c_indices, start + d, start, end - start)
                move(c_data, start + d, start, end - start)
                for i in range(lo + 1, hi):
                    c_indptr[i] += d
            pos = start + d
            c_indptr[lo] = pos
        else:
            pos = end
    if top_thief and claim[2] >= 0:
        _take_top(current, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, b_sorted, row_flops, bounds,
                  vl, use_dense, sort, a_end, r_hi - r_lo, c_indptr, claim, s_indices, s_data, tag, marker, acc, keys,
                  slots, scratch, skeys, svals, counts)
    if steal and claim[0] >= 0:
        _take(current, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, b_sorted, row_flops, bounds,
              v1, use_dense, sort, a_end, a_indptr.shape[0], c_indptr, claim, s_indices, s_data, tag, marker, acc,
              keys, slots, scratch, skeys, svals, counts)
    trace[0] = current
    trace[1] = best[1]
    trace[2] = best[2]
    trace[3] = pos
    trace[4] = t_start
    trace[5] = cycles()


@njit(cache=True)
def _take(current, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, b_sorted, row_flops, bounds, v1,
          use_dense, sort, a_end, off, c_indptr, claim, s_indices, s_data, tag, marker, acc, keys, slots,
          scratch, skeys, svals, counts):
    """Claim chunks of about :data:`BACK_CHUNK` multiply-adds of worker 0's rows (parts
    ``0:v1``) from the bottom of what is left (``claim[0] = top << 32 | bottom``) and compute
    them forward into ``s_indices``/``s_data`` from slot 0, with accumulator variant
    ``current`` and stamps ``i + off`` (above every stamp this worker used before);
    ``c_indptr[i]`` of those rows are offsets into them. ``claim[1]`` receives their end."""
    tpos = np.int64(0)
    part = 0
    while True:
        seen = atomic_load(claim, 0)
        top = seen >> 32
        lo = seen & _LOW32
        if lo >= top:
            break
        while bounds[part + 1] <= lo:
            part += 1
        hi = lo
        work = 0
        ceil = min(top, bounds[part + 1])
        while hi < ceil and (hi == lo or work + row_flops[hi] <= BACK_CHUNK):
            work += row_flops[hi]
            hi += 1
        if atomic_cas(claim, 0, seen, (top << 32) | hi) != seen:
            continue  # worker 0 claimed meanwhile: look again
        c_indptr[lo] = tpos
        chunk_end = np.uint64(a_indptr[hi]) if a_end else a_end
        if not use_dense[part]:
            tpos = _rows_hash(lo, hi, hi, tpos, off, b_sorted, sort, a_indptr, a_indices, a_data, b_indptr,
                              b_indices, b_data, row_flops, c_indptr, s_indices, s_data, keys, slots, skeys, svals,
                              counts)
        elif current == 1:
            tpos = _rows_position(lo, hi, hi, tpos, off, chunk_end, b_sorted, sort, a_indptr, a_indices, a_data,
                                  b_indptr, b_indices, b_data, row_flops, c_indptr, s_indices, s_data, tag, skeys,
                                  svals, counts)
        else:
            tpos = _rows_value(lo, hi, hi, tpos, off, chunk_end, b_sorted, sort, a_indptr, a_indices, a_data,
                               b_indptr, b_indices, b_data, row_flops, c_indptr, s_indices, s_data, marker, acc,
                               scratch, skeys, svals, counts)
    claim[1] = tpos


@njit(cache=True)
def _take_top(current, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, b_sorted, row_flops, bounds,
              vl, use_dense, sort, a_end, stamped, c_indptr, claim, s_indices, s_data, tag, marker, acc, keys, slots,
              scratch, skeys, svals, counts):
    """Claim chunks of the last worker's rows from the top of what is left (``claim[2] = top
    << 32 | bottom``) and compute them walking down into the top of ``s_indices``/``s_data``
    (room for that worker's flops, past ``claim[1]``'s use of the bottom: ``s_*`` hold both
    thieves' rows, see :func:`_init_claim`), each chunk forward right below the one above, then
    moved up against it. Stamps continue above the ``stamped`` rows this worker computed.
    ``vl``: the last worker's first part (the offset of its first row is never overwritten:
    that worker reads it when it starts, which may be after every row was taken).
    ``claim[3]`` receives the start of these rows in ``s_*``."""
    n_rows = a_indptr.shape[0] - 1
    spos = np.int64(s_indices.shape[0])
    part = bounds.shape[0] - 2
    last = vl
    while True:
        seen = atomic_load(claim, 2)
        top = seen >> 32
        bot = seen & _LOW32
        if bot >= top:
            break
        while bounds[part] >= top:
            part -= 1
        lo = top
        work = 0
        floor = max(bounds[part], bot)
        while lo > floor and (lo == top or work + row_flops[lo - 1] <= BACK_CHUNK):
            lo -= 1
            work += row_flops[lo]
        if atomic_cas(claim, 2, seen, (lo << 32) | bot) != seen:
            continue
        start = spos - work
        off = stamped + n_rows - top - lo + 1  # stamps grow chunk by chunk, above the rows done before
        chunk_end = np.uint64(a_indptr[top]) if a_end else a_end
        if not use_dense[part]:
            end = _rows_hash(lo, top, top, start, off, b_sorted, sort, a_indptr, a_indices, a_data, b_indptr,
                             b_indices, b_data, row_flops, c_indptr, s_indices, s_data, keys, slots, skeys, svals,
                             counts)
        elif current == 1:
            end = _rows_position(lo, top, top, start, off, chunk_end, b_sorted, sort, a_indptr, a_indices, a_data,
                                 b_indptr, b_indices, b_data, row_flops, c_indptr, s_indices, s_data, tag, skeys,
                                 svals, counts)
        else:
            end = _rows_value(lo, top, top, start, off, chunk_end, b_sorted, sort, a_indptr, a_indices, a_data,
                              b_indptr, b_indices, b_data, row_flops, c_indptr, s_indices, s_data, marker, acc,
                              scratch, skeys, svals, counts)
        d = spos - end
        if d:
            move(s_indices, start + d, start, end - start)
            move(s_data, start + d, start, end - start)
            for i in range(lo + 1, top):
                c_indptr[i] += d
        spos = start + d
        if lo > bounds[last]:  # the last worker's first row keeps its offset (read when it starts)
            c_indptr[lo] = spos
    claim[3] = spos


@njit(cache=True)
def _join_taken(claim, trace0, trace_last, c_indptr, c_indices, c_data, s_indices, s_data):
    """Put the rows a thief took (see :func:`_take`) below worker 0's lowest row: they are
    rows ``0:bottom`` (``claim[0]``'s low half), ``claim[1]`` entries in ``s_indices``/
    ``s_data``; worker 0's rows start at ``trace0[3]``, which then moves down to theirs. The
    room fits: worker 0 had room for the flops of every one of its rows."""
    if claim[0] < 0:
        return
    size = claim[1]
    if size > 0:
        pos0 = np.int64(trace0[3])
        start = pos0 - size
        c_indices[start:pos0] = s_indices[:size]
        c_data[start:pos0] = s_data[:size]
        for i in range(claim[0] & _LOW32):
            c_indptr[i] += start
        trace0[3] = start
    top = claim[3]
    size = s_indices.shape[0] - top
    if size > 0:  # rows b:n_rows, taken from the last worker's top, go after its last row
        b = claim[2] >> 32
        end = np.int64(trace_last[3])
        c_indices[end:end + size] = s_indices[top:]
        c_data[end:end + size] = s_data[top:]
        for i in range(b + 1, c_indptr.shape[0] - 1):
            c_indptr[i] += end - top
        c_indptr[b] = end
        trace_last[3] = end + size


@njit(cache=True)
def _init_claim(claim, back0, bounds, worker_bounds, row_flops):
    """Set ``claim: int64[4]`` for the take-over (two or more workers, worker 0 walking down,
    row stamps that stay below 2^32) and return the room the thieves share: worker 0's flops
    (the last worker takes them from the bottom, :func:`_take`) plus the last worker's
    (worker 0 takes them from the top, :func:`_take_top`). ``claim[0] = top << 32 | bottom``
    of worker 0's rows left, ``claim[2]`` the same for the last worker's; ``claim[1]``/
    ``claim[3]`` the ends of the taken rows in the shared room. Otherwise ``claim[0] = -1``
    and 0."""
    n_workers = worker_bounds.shape[0] - 1
    n_rows = row_flops.shape[0]
    first = bounds[worker_bounds[1]]
    last = bounds[worker_bounds[n_workers - 1]]
    claim[0] = -1
    claim[1] = 0
    claim[2] = -1
    claim[3] = 0
    if not back0 or n_workers < 2 or n_rows + first >= _MAX_STAMP:
        return 0
    room = 0
    for i in range(bounds[0], first):
        room += row_flops[i]
    for i in range(last, n_rows):
        room += row_flops[i]
    claim[0] = (first << 32) | bounds[0]
    claim[2] = (n_rows << 32) | last
    claim[3] = room
    return room
