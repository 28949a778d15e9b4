"""Per-worker bodies of the Gustavson SpGEMM (:mod:`flexsparse.kernels.cpu.spgemm`).

Algorithm: a worker owns a contiguous block of output rows, split into *parts*; it computes
them in stretches with the accumulator its part was given (:mod:`._spgemm_rows`), writing
rows back to back from its first row's offset (or, walking down, in chunks moved up against
the rows above), times the two dense variants on its first rows with ``variant="auto"``
(pairs of stretches, see :data:`ADAPT_CHUNK`), and on two threads claims each part before
computing it and then takes the other worker's (:mod:`._spgemm_steal`).
:func:`_symbolic_worker` counts the distinct columns of its rows instead.

Formats: raw CSR buffers (``int64`` row pointers, int32/int64 indices, values of the output
dtype), per-worker dense workspaces, output buffers with room for the worker's flops.

Cost: O(flops) per worker, plus the move of each chunk walking down (O(entries)), plus
about ``_TRIALS`` stretches of the slower dense variant per trial and one read of the value
accumulator's workspaces (O(columns)) before the first.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flexsparse.kernels.cpu._spgemm_rows import (
    count_row_dense,
    count_row_hash,
    cycles,
    hash_table_size,
    rows_stretch,
    warm,
)
from flexsparse.kernels.cpu._spgemm_steal import steal_parts
from flexsparse.kernels.cpu.atomic import exchange
from flexsparse.kernels.cpu.simd import move, stream

__all__ = ["ADAPT_CHUNK", "ADAPT_CLEAR", "ADAPT_RETIME", "ADAPT_RETIME_SHARE", "BACK_CHUNK",
           "MIN_TIMED_FLOPS", "POPULATE_FLOPS_PER_COLUMN", "PREFETCH_MIN_NNZ", "TRACE_FIELDS"]

#: Multiply-adds per timed stretch of ``variant="auto"``: from a worker's first dense part of
#: at least ``_TIMED_PART_CHUNKS`` stretches (and only when the worker has at least
#: ``_TIMED_WORKER_CHUNKS`` of them; a smaller worker times once on shorter stretches, see
#: ``_MIN_ADAPT_CHUNK``), ``_TRIALS`` consecutive stretches go to the two dense
#: variants in pairs (position, position, value, value, ...), each computing its own rows
#: once; the first stretch of a pair warms up, the second is timed, and the variant whose
#: median over its ``_TRIAL_SAMPLES`` timed stretches took fewer cycles per unit of work
#: (multiply-adds plus output entries) serves the worker's other rows (parts of another
#: weight are timed again, :data:`ADAPT_RETIME`). The median, not the sum
#: of two stretches: one stretch of ~0.15 ms slowed by an interrupt or another process (at a
#: distributed block's start: 8.6-30.7 cycles a unit against 4.4-5.5) chose the position map
#: in 8 of 60 blocks of R-MAT scale 15, which then took 94-97 ms against 56-64; nor the
#: minimum, which favours the position map, whose stretches vary more from row to row (its
#: minimum 4.7-4.9 against a mean of 6.1-6.6, value accumulator 4.4-4.6 against 4.7: picked
#: in 5 of 19 blocks). Rows heavier than ``_TRIAL_ROW_CHUNKS`` stretches are
#: computed outside the trial (by the variant chosen last). Two workers take their pairs out of
#: step (worker 0 starts with the value accumulator, worker 1 with the position map): in step,
#: each timed the value accumulator while the other ran it too. The designs measured, each
#: with its figures: BENCHMARKS.md, section 27.
ADAPT_CHUNK = 1 << 15
#: A dense part whose multiply-adds per row differ by more than this factor from those of the
#: part a worker timed last is timed afresh (rows of another character: R-MAT's hub rows
#: come first, and worker 0 walking down times its lightest part first).
ADAPT_RETIME = 2.0
#: ... and after this share of the worker's multiply-adds since the last trial began, whatever
#: the weight: a trial is ~1 ms, and a burst of another guest's traffic in the shared cache
#: over it can make the value accumulator read as slow as the position map (R-MAT 16 ef 8, one
#: thread: 7.7-7.9 cycles a unit against its usual 5.5-6.4; the call then ran 305-308 ms against
#: 213-221 ms in 2 of 12 calls); a later trial bounds what such a choice costs.
ADAPT_RETIME_SHARE = 1 / 3
#: ... unless its last trial found one variant at least this factor faster: a trial costs the
#: slower variant's time on half its stretches, and a clear winner does not change with the
#: share (3-D Poisson, the value accumulator 1.5-2.7x slower, was timed three times per
#: worker; median of 8 interleaved calls against the position map forced, two threads 1.03 ->
#: 1.02, one thread 1.07 -> 1.05; uniform, two threads, 1.04 -> 0.95; 2026-11-30).
ADAPT_CLEAR = 1.5
#: ``B`` rows are prefetched (see :mod:`._spgemm_rows`) only when ``B`` holds at least this many
#: entries (12 MB at float64/int32): a cache-resident ``B`` gains nothing from it and each
#: prefetch costs two loads per entry of ``A`` (pygsp Minnesota, 18k multiply-adds: 89.7 ->
#: 84.4 us without it).
PREFETCH_MIN_NNZ = 1 << 20
#: Timed stretches per variant after its warm-up (the median is kept). The first stretches of a
#: worker run on cold caches and count against the variant it starts with: with 3, worker 0
#: (starting with the value accumulator) often kept the position map on R-MAT 18 ef 8 rows/16
#: (value 6.5-9.7 cycles a unit in its trial against 3.3 when it wins), and two threads took
#: 71-91 ms against 56-61 ms with 5 (flops counted with the inf/nan check, as einsum does;
#: median of 6 calls in each of 3 alternating runs, 2026-12-01; value forced: 56-58 ms).
_TRIAL_SAMPLES = 5
_TRIALS = 4 * _TRIAL_SAMPLES
_TIMED_PART_CHUNKS = 4
_TIMED_WORKER_CHUNKS = 64
#: A worker of fewer than ``_TIMED_WORKER_CHUNKS`` stretches of :data:`ADAPT_CHUNK` times the
#: variants once, on stretches of ``1 / _SMALL_WORKER_CHUNKS`` of its multiply-adds (at least
#: ``_MIN_ADAPT_CHUNK``; smaller workers take the position map untimed, and the one-thread
#: small kernel then allocates no value workspaces). Which variant wins on small products
#: depends on the machine as much as on the rows: on an AMD EPYC VM of family 25 (Zen 3,
#: 2.45 GHz, 2026-12-01; one thread, min of 300 calls) the value accumulator took 0.61-0.91x
#: the position map's time on 14 of the 16 small matrices of ``benchmarks/bench_spgemm.py``
#: (pyamg local_disc_galerkin 3.69 -> 2.27 ms, DavidSensorNet500 383 -> 329 us, TwoMoons 711 ->
#: 519 us) and 1.02-1.19x on pyamg helmholtz_2D and pygsp Minnesota, where the position map had
#: served every one of them untimed (the earlier rounds' Zen 5 VM). One-thread ``einsum``
#: against SciPy over those 16, alternating processes: geomean 0.841 -> 0.753, worst 1.31 ->
#: 1.12 (DavidSensorNet500, whose ~50 us of einsum layers is a seventh of its time).
_MIN_ADAPT_CHUNK = 1 << 8
_SMALL_WORKER_CHUNKS = 128
#: Workers of fewer multiply-adds never time the variants (the position map serves them).
MIN_TIMED_FLOPS = _SMALL_WORKER_CHUNKS * _MIN_ADAPT_CHUNK
_TRIAL_ROW_CHUNKS = 4
#: Products of at least this many multiply-adds per workspace column and thread fault their
#: dense workspaces in before the kernel (``madvise(MADV_POPULATE_WRITE)``, 0.15 us a page
#: against ~1.4 us for a fault taken in the kernel;
#: :func:`~.spgemm.dense_workspaces`): they touch most of their pages anyway,
#: and the timed stretches of ``variant="auto"`` then carry no first-touch faults (the value
#: accumulator's 12 bytes a column span 3x the pages of the position map's 4).
POPULATE_FLOPS_PER_COLUMN = 32
#: Before its first trial (:data:`ADAPT_CHUNK`) a worker loads the value accumulator's
#: workspaces line by line (:func:`~._spgemm_rows.warm`). The rows before and within a trial that
#: it computes untimed (heavy rows, see ``_TRIAL_ROW_CHUNKS``) run the position map and keep its
#: workspace in the caches, while a warm-up stretch brings in only the columns its own rows
#: touch; R-MAT's columns spread over the whole workspace. So the first trial read the value
#: accumulator as slow as the position map (R-MAT 18 ef 8 rows/16, one thread: 4.5-5.7 against
#: 4.5-5.1 cycles a unit), kept the position map, and every later trial then favoured it in turn
#: (the value accumulator 5.0-5.9 after the position map ran, 3.3-3.5 after itself): through
#: einsum, one and two threads alternating, 8 calls in each of two runs, one thread kept the
#: position map in 11 of 16 calls, median 170.5 / 171.3 ms, against 0 of 16 and 110.9 / 118.0 ms
#: with the loads (two threads 86.5 / 82.3 -> 66.3 / 67.1 ms; 2026-12-01). Before later trials
#: the loads did not pay: they read the cold workspace from memory on every trial (3-D Poisson,
#: two threads, +0.3-0.7 ms) and changed no verdict there. Only a worker with
#: :data:`POPULATE_FLOPS_PER_COLUMN` multiply-adds a column loads them: the workspaces of a smaller
#: product may not be resident yet, and a load of an untouched page is a page fault.
_WARM_TRIAL = True
#: Output slots between the writes that fault in a timed stretch's output pages before it is
#: timed (4 KiB of float64 values). Without it a stretch that reached a fresh 2 MiB page paid
#: its fault (~25-50 us, as long as the stretch itself): on two threads the 3-D Poisson
#: product kept the value accumulator (trial 5.2 vs 3.4 and 9.3 vs 3.4 cycles a unit against
#: the position map) and took 17.7-18.0 ms against 13.2-13.6 ms with the position map
#: throughout (2026-11-30, quiet).
_TOUCH_STRIDE = 512
#: Multiply-adds per chunk of a worker that walks down (see :func:`_numeric_worker`): the
#: chunk's rows, at most this many entries, are still in the L2 cache when they are moved up.
#: The move stores past the caches (:func:`~.simd.stream`) where the chunk was computed in the
#: slots at the bottom of the room: with plain stores, each destination line was read from
#: memory first and the move was a third of the walk (one thread, all rows walked down against
#: forward, position map, median of 9 interleaved calls: 3-D Poisson 1.31-1.41x -> 1.21-1.26x,
#: uniform 2^18 x 8 1.14-1.16x -> 1.05-1.07x, R-MAT 16 ef 8 rows/2 1.11x -> 1.06-1.07x, R-MAT 20
#: ef 16 rows/512 1.07x -> 0.98-1.08x; two threads over one, kernel alone, geomean of 10
#: products in 3 alternating runs: 1.64x -> 1.72x; Zen 4 guest, 2026-12-03). Computing each
#: chunk right below its destination instead (plain stores, the move then in cache) took 1.17x,
#: 1.08x, 1.07x and 1.03x on one thread, but its rows ran slower on two.
BACK_CHUNK = 1 << 14
#: Fields of a worker's trace row (see :func:`_numeric_worker`).
TRACE_FIELDS = 6

# --------------------------------------------------------------------------- helpers
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


# ------------------------------------------------------------------ per-worker bodies
@njit(cache=True)
def _symbolic_worker(w, a_indptr, a_indices, b_indptr, b_indices, b_sorted, row_flops, bounds,
                     worker_bounds, use_dense, marker, out_counts):
    """Count the rows of the parts of worker ``w`` (``marker``: its ``uint32[n_cols]``
    stamps, zero on the first call; its hash table is allocated here)."""
    p0 = worker_bounds[w]
    p1 = worker_bounds[w + 1]
    a_end = np.uint64(a_indptr[bounds[p1]]) if b_indices.shape[0] >= PREFETCH_MIN_NNZ else np.uint64(0)
    keys = np.zeros(_worker_table(bounds, p0, p1, use_dense, row_flops), dtype=np.uint64)
    for part in range(p0, p1):
        dense = use_dense[part]
        for i in range(bounds[part], bounds[part + 1]):
            a0 = a_indptr[i]
            a1 = a_indptr[i + 1]
            f = row_flops[i]
            if f == 0:
                out_counts[i] = 0
            elif a1 - a0 == 1 and b_sorted:
                out_counts[i] = f
            elif dense:
                out_counts[i] = count_row_dense(np.uint32(i + 1), a0, a1, a_end, a_indices, b_indptr,
                                                b_indices, marker)
            else:
                out_counts[i] = count_row_hash(np.uint64(i + 1) << np.uint64(32), f, a0, a1, a_indices,
                                               b_indptr, b_indices, keys)


# Rows ``r0:r1`` back to back from ``pos``, setting ``c_indptr[i + 1]`` for ``i + 1 < r_end``;
# each returns the new ``pos``. Row ``i`` is stamped ``i + off`` (stamps grow in the order a
# worker computes its rows: the accumulators read a slot with an older stamp as empty). One
# function per accumulator: with two accumulators inlined into one loop, LLVM compiled the
# position-map loop ~1.8x slower (Minnesota), and so did an inlined helper for the
# single-entry copy -- hence the repeated row skeleton, bookkeeping included (as an inlined
# helper taking the arrays it cost ~60 % more on short rows: tridiagonal 4096, one thread).
@njit(cache=True)
def _numeric_worker(w, back, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, b_sorted, row_flops,
                    bounds, worker_bounds, use_dense, variant, sort, c_indptr, c_indices, c_data, tag,
                    marker, acc, trace, claims, part_costs, reserve, stolen, n_stolen):
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
    pairs of stretches of :data:`ADAPT_CHUNK` multiply-adds (see there) and keeps the faster per
    unit of work for the other rows, 1 the position map, 2 the value accumulator.
    ``trace: float64[6]`` also receives the variant used last and the median ticks per
    unit of work (multiply-add or output entry) of variants 1 and 2 over the stretches of
    the last completed trial (``inf``: not timed),
    and the cycle counter when the worker started and when it finished (``trace[4:6]``: the
    late start, busy time and balance of the threads, for benchmarks).

    With ``claims`` (``int64[n_parts]``, zeroed; empty: no stealing) two workers claim each
    part before computing it and stop at the first the other took; then the worker takes
    the other's parts from their far end into its reserve ``reserve[w] = (start, end)``
    (:func:`~._spgemm_steal.steal_parts`, ``part_costs`` bounding each part's entries),
    recording them in ``stolen[w]`` and their number in ``n_stolen[w]``.
    """
    t_start = cycles()
    p0 = worker_bounds[w]
    p1 = worker_bounds[w + 1]
    r_lo = bounds[p0]
    r_hi = bounds[p1]
    # B rows are prefetched only when B outgrows the caches (a_end = 0 turns it off)
    a_end = np.uint64(a_indptr[r_hi]) if b_indices.shape[0] >= PREFETCH_MIN_NNZ else np.uint64(0)
    tsize = _worker_table(bounds, p0, p1, use_dense, row_flops)
    keys = np.zeros(tsize, dtype=np.uint64)
    slots = np.empty(tsize, dtype=np.uint32)
    longest = 0
    worker_flops = 0
    if variant != 1 or sort:
        for i in range(r_lo, r_hi):  # rows are no longer than their flops
            longest = max(longest, row_flops[i])
            worker_flops += row_flops[i]
    # stretch size of the variant trials: ADAPT_CHUNK, or a share of a small worker's flops
    # (one trial then, see _MIN_ADAPT_CHUNK)
    chunk = ADAPT_CHUNK
    if worker_flops < _TIMED_WORKER_CHUNKS * ADAPT_CHUNK:
        chunk = max(worker_flops // _SMALL_WORKER_CHUNKS, _MIN_ADAPT_CHUNK)
    scratch = np.empty(longest + 1 if variant != 1 else 0, dtype=c_indices.dtype)
    skeys = np.empty(longest if sort else 0, dtype=c_indices.dtype)
    svals = np.empty(longest if sort else 0, dtype=c_data.dtype)
    counts = np.empty(257, dtype=np.int64)
    current = 1 if variant != 2 else 2
    chosen = current  # the variant of the last trial (heavy rows within a trial take it)
    trial = _TRIALS
    best = np.full(3, np.inf)
    rates = np.full((3, _TRIAL_SAMPLES), np.inf)  # cycles a unit of each variant's timed stretches
    taken = np.zeros(3, dtype=np.int64)
    timed_part = -1
    timed_weight = -1.0  # multiply-adds per row of the part timed last (none yet)
    since = 0  # multiply-adds of the dense parts entered since the last trial began
    gen = np.ones(1, dtype=np.uint64)  # the position map's next generation
    part = p1 - 1 if back else p0
    lo = r_hi if back else r_lo  # rows lo:hi are computed next
    hi = r_hi if back else r_lo
    pos = c_indptr[r_hi] if back else c_indptr[r_lo]  # back: the top of the room
    room_lo = pos
    if back:
        for i in range(r_lo, r_hi):
            room_lo -= row_flops[i]
    steal = claims.shape[0] > 0
    owned = -1
    while (lo > r_lo) if back else (hi < r_hi):
        # the next stretch: whole parts, but stretches of ~ADAPT_CHUNK multiply-adds while the
        # dense variants are timed, and chunks of ~BACK_CHUNK when walking down
        if back:
            while bounds[part] >= lo:
                part -= 1
        else:
            while bounds[part + 1] <= hi:
                part += 1
        if steal and part != owned:
            if exchange(claims, part, 1) != 0:
                break  # the other worker took this part and everything beyond it
            owned = part
        if variant == 0 and part != timed_part and use_dense[part]:
            # the variants are timed on a worker's first dense part with enough work, and again
            # where the rows' weight changes by ADAPT_RETIME or after ADAPT_RETIME_SHARE of the
            # worker's multiply-adds (see ADAPT_CHUNK)
            timed_part = part
            part_flops = 0
            for i in range(bounds[part], bounds[part + 1]):
                part_flops += row_flops[i]
            weight = part_flops / max(bounds[part + 1] - bounds[part], 1)
            if part_flops >= _TIMED_PART_CHUNKS * chunk and \
                    worker_flops >= MIN_TIMED_FLOPS and (timed_weight < 0 or chunk == ADAPT_CHUNK) and (
                    since >= worker_flops * ADAPT_RETIME_SHARE and not (
                        best[1] * ADAPT_CLEAR <= best[2] < np.inf or best[2] * ADAPT_CLEAR <= best[1] < np.inf)
                    or not timed_weight / ADAPT_RETIME <= weight <= timed_weight * ADAPT_RETIME):
                trial = 0
                current = 2 if w == 0 else 1  # the workers' pairs out of step (see ADAPT_CHUNK)
                # the first trial: the value accumulator's workspaces into the caches, as the
                # position map's are (see _WARM_TRIAL)
                if _WARM_TRIAL and timed_weight < 0 and \
                        worker_flops >= POPULATE_FLOPS_PER_COLUMN * acc.shape[0]:
                    warm(marker)
                    warm(acc)
                timed_weight = weight
                taken[:] = 0
                since = 0
            since += part_flops
        timed = trial < _TRIALS and use_dense[part]
        work = 0
        heavy = timed and row_flops[(lo - 1) if back else hi] > _TRIAL_ROW_CHUNKS * chunk
        if heavy:  # a row far heavier than a stretch: computed outside the trial
            timed = False
        if back:
            hi = lo
            limit = chunk if timed else BACK_CHUNK
            while lo > bounds[part] and (lo == hi or work + row_flops[lo - 1] <= limit):
                lo -= 1
                work += row_flops[lo]
            # compute the chunk at the bottom of the room (the same slots every time, so they stay
            # in cache) while that keeps it clear of its destination; else right below pos
            start = room_lo if pos - room_lo >= 2 * work else pos - work
            off = r_hi - hi - lo + 1  # stamps count the rows computed so far
            r_end = hi  # c_indptr[hi] belongs to the chunk above
            chunk_end = np.uint64(a_indptr[hi]) if a_end else a_end
        else:
            lo = hi
            hi = lo + 1 if heavy else bounds[part + 1]
            if timed:
                hi = lo
                while hi < bounds[part + 1] and work < chunk:
                    work += row_flops[hi]
                    hi += 1
            start = pos
            off = 1
            r_end = r_hi
            chunk_end = a_end
        if timed:  # fault in the output pages the stretch may write (see _TOUCH_STRIDE)
            t_end = start + work
            if not back:
                t_end = min(t_end, c_indices.shape[0] if w == worker_bounds.shape[0] - 2 else c_indptr[r_hi])
            for j in range(start, t_end, _TOUCH_STRIDE):
                c_indices[j] = 0
                c_data[j] = 0
        mark = cycles()
        # a heavy row takes the variant chosen last
        kind = (chosen if heavy else current) if use_dense[part] else 0
        end = rows_stretch(kind, lo, hi, r_end, start, off, gen, chunk_end, b_sorted, sort, a_indptr, a_indices,
                           a_data, b_indptr, b_indices, b_data, row_flops, c_indptr, c_indices, c_data, tag, marker,
                           acc, scratch, keys, slots, skeys, svals, counts)
        if timed:  # stretches come in pairs of one variant; the second of a pair is timed
            if trial % 2 == 1:  # a unit: a multiply-add or an entry
                rates[current, taken[current]] = (cycles() - mark) / max(work + (end - start), 1)
                taken[current] += 1
            trial += 1
            if trial >= _TRIALS:
                best[1] = np.median(rates[1])
                best[2] = np.median(rates[2])
                current = 1 if best[1] <= best[2] else 2
                chosen = current
            else:
                current = 1 if ((trial // 2) + (w == 0)) % 2 == 0 else 2
        if back:  # move the chunk up against pos
            d = pos - end
            if d >= end - start:  # from the slots at the bottom: streamed past the caches
                stream(c_indices, start + d, start, end - start)
                stream(c_data, start + d, start, end - start)
            elif d:  # memmove: 4-6x the speed of an element loop, and overlap is allowed
                move(c_indices, start + d, start, end - start)
                move(c_data, start + d, start, end - start)
            if d:
                for i in range(lo + 1, hi):
                    c_indptr[i] += d
            pos = start + d
            c_indptr[lo] = pos
        else:
            pos = end
    trace[0] = current
    trace[1] = best[1]
    trace[2] = best[2]
    trace[3] = pos
    if steal:
        other = 1 - w
        n_stolen[w] = steal_parts(w, worker_bounds[other], worker_bounds[other + 1], a_end != 0, bounds, use_dense,
                                  part_costs, claims, reserve[w, 0], reserve[w, 1], chosen, gen, b_sorted, sort,
                                  a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, row_flops, c_indptr,
                                  c_indices, c_data, tag, marker, acc, stolen[w])
    trace[4] = t_start
    trace[5] = cycles()
