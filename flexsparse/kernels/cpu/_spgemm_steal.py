"""Work stealing between the two workers of a two-ended SpGEMM (:mod:`.spgemm`).

Worker 0 walks its parts down from the middle of the output, worker 1 walks its parts up
from the same offset, so the result needs no symbolic pass; but the two blocks were cut by
flops, and rows of equal flops do not cost the same (worker 0 also copies each chunk it
computes up against the one above: on 3-D Poisson it was busy 7.0 ms against worker 1's 5.8
with equal flops and equal output). So each worker *claims* a part before it computes it
(an atomic exchange on ``claims[part]``, :func:`~.atomic.exchange`), and a worker done with
its own parts claims the other's from the far end (worker 1 from the lowest part up, worker
0 from the highest down) until a claim fails (the owner got there first) or its reserve is
full. Claimed parts are complementary intervals: the owner stops at its first failed claim.

A stolen part's rows cannot go where they belong while the owner is still writing (their
offset depends on how many entries the owner's remaining rows make), so the thief computes
them forward into a *reserve* past the output's room, recording ``(part, start, end)``; after
the workers join, :func:`stitch` moves each stolen block next to the owner's (below worker
0's first row, above worker 1's last) and shifts its rows' offsets, on two threads. The move
costs the stolen entries only, and the reserve pages are those of a kept output buffer (no
page faults after the first call).

Row stamps of the value and hash accumulators must grow in the order a worker computes its
rows: a stolen part's rows take stamps from ``n_rows + 1`` up (the caller checks that
``2 * n_rows + 1`` fits the 32-bit stamps).

Cost: one atomic exchange per part; the stolen entries written twice; one pass over the row
offsets.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from flexsparse.kernels.cpu._spgemm_rows import hash_table_size, rows_stretch
from flexsparse.kernels.cpu.atomic import exchange
from flexsparse.kernels.cpu.simd import move

__all__ = ["no_stealing", "steal_parts", "stitch"]


@njit(cache=True)
def steal_parts(w, q_lo, q_hi, prefetch, bounds, use_dense, part_flops, claims, reserve, reserve_end, current,
                gen, b_sorted, sort, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, row_flops, c_indptr,
                c_indices, c_data, tag, marker, acc, stolen):
    """Claim and compute the parts ``q_lo:q_hi`` of the other worker from its far end
    (worker 1 ascending, worker 0 descending), each forward from ``reserve`` on while the
    reserve (up to ``reserve_end``) has room for the part's flops; the accumulator of a dense
    part is ``current`` (1 position map, 2 value accumulator), ``gen`` the position map's
    generation. Records ``stolen[k] = (part, start, end)`` and returns the number ``k`` of
    parts taken."""
    n_rows = a_indptr.shape[0] - 1
    stamp = n_rows + 1  # above every stamp of the worker's own rows
    counts = np.empty(257, dtype=np.int64)
    keys = np.zeros(0, dtype=np.uint64)
    slots = np.empty(0, dtype=np.uint32)
    scratch = np.empty(0, dtype=c_indices.dtype)
    skeys = np.empty(0, dtype=c_indices.dtype)
    svals = np.empty(0, dtype=c_data.dtype)
    pos = reserve
    k = 0
    for j in range(q_hi - q_lo):
        q = q_lo + j if w == 1 else q_hi - 1 - j
        if pos + part_flops[q] > reserve_end or exchange(claims, q, 1) != 0:
            break
        lo = bounds[q]
        hi = bounds[q + 1]
        longest = 0
        for i in range(lo, hi):
            longest = max(longest, row_flops[i])
        if sort and skeys.shape[0] < longest:
            skeys = np.empty(longest, dtype=c_indices.dtype)
            svals = np.empty(longest, dtype=c_data.dtype)
        chunk_end = np.uint64(a_indptr[hi]) if prefetch else np.uint64(0)
        kind = current if use_dense[q] else 0
        if kind == 0:
            tsize = hash_table_size(longest)[0] if longest > 0 else 0
            if keys.shape[0] < tsize:
                keys = np.zeros(tsize, dtype=np.uint64)
                slots = np.empty(tsize, dtype=np.uint32)
        elif kind == 2 and scratch.shape[0] < longest + 1:
            scratch = np.empty(longest + 1, dtype=c_indices.dtype)
        end = rows_stretch(kind, lo, hi, hi, pos, stamp - lo, gen, chunk_end, b_sorted, sort, a_indptr, a_indices,
                           a_data, b_indptr, b_indices, b_data, row_flops, c_indptr, c_indices, c_data, tag, marker,
                           acc, scratch, keys, slots, skeys, svals, counts)
        stamp += hi - lo
        stolen[k, 0] = q
        stolen[k, 1] = pos
        stolen[k, 2] = end
        k += 1
        pos = end
    return k


@njit(cache=True, parallel=True)
def stitch(bounds, stolen, n_stolen, c_indptr, c_indices, c_data, start, end):
    """Put the parts the workers stole next to their owners' rows (see the module) and make
    the row offsets start at 0: ``stolen[1, :n_stolen[1]]`` (worker 0's lowest parts,
    ascending, one block in worker 1's reserve) right below ``start``, worker 0's first entry;
    ``stolen[0, :n_stolen[0]]`` (worker 1's highest parts, descending) in ascending order from
    ``end``, worker 1's end. Sets ``c_indptr[-1]`` and shifts every offset down by the result's
    start; returns the result's ``(start, end)`` in the buffers.

    Every move goes from a reserve past the room into the room, so no source overlaps a
    destination, and each part's entries are split between two threads, as are the row
    offsets. The moves are bound by memory traffic (~45 GB/s read and written): against one
    thread, min of 10 from memory, R-MAT 18 ef 8 rows/16 (4 parts, 1.44M entries) 0.85 against
    0.91 ms, 3-D Poisson (7 parts, 458K entries, the offsets shifted too) 0.28 against 0.35 ms.
    """
    n_rows = c_indptr.shape[0] - 1
    n_jobs = n_stolen[0] + n_stolen[1]
    jobs = np.empty((n_jobs, 4), dtype=np.int64)  # (part, source, destination, entries)
    n1 = n_stolen[1]
    if n1:
        start -= stolen[1, n1 - 1, 2] - stolen[1, 0, 1]
    for k in range(n1):
        jobs[k, 0] = stolen[1, k, 0]
        jobs[k, 1] = stolen[1, k, 1]
        jobs[k, 2] = start + stolen[1, k, 1] - stolen[1, 0, 1]
        jobs[k, 3] = stolen[1, k, 2] - stolen[1, k, 1]
    k = n1
    for j in range(n_stolen[0] - 1, -1, -1):
        jobs[k, 0] = stolen[0, j, 0]
        jobs[k, 1] = stolen[0, j, 1]
        jobs[k, 2] = end
        jobs[k, 3] = stolen[0, j, 2] - stolen[0, j, 1]
        end += jobs[k, 3]
        k += 1
    c_indptr[n_rows] = end
    mid = n_rows // 2
    for t in prange(2):
        for k in range(n_jobs):
            src = jobs[k, 1]
            dst = jobs[k, 2]
            half = jobs[k, 3] // 2
            lo = 0 if t == 0 else half
            hi = half if t == 0 else jobs[k, 3]
            move(c_indices, dst + lo, src + lo, hi - lo)
            move(c_data, dst + lo, src + lo, hi - lo)
        r0 = 0 if t == 0 else mid
        r1 = mid if t == 0 else n_rows + 1
        for k in range(n_jobs):  # a stolen part's rows move with its entries
            q = jobs[k, 0]
            d = jobs[k, 2] - jobs[k, 1]
            for i in range(max(bounds[q], r0), min(bounds[q + 1], r1)):
                if i == bounds[q]:
                    c_indptr[i] = jobs[k, 2]
                else:
                    c_indptr[i] += d
        for i in range(r0, r1):
            c_indptr[i] -= start
    return start, end


def no_stealing(n_threads: int) -> tuple[np.ndarray, ...]:
    """The trailing stealing arguments of :func:`~.spgemm.spgemm_csr_csr_numeric` for a call whose
    workers claim nothing (``claims`` empty)."""
    return (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64), np.zeros((n_threads, 2), dtype=np.int64),
            np.zeros((n_threads, 0, 3), dtype=np.int64), np.zeros(n_threads, dtype=np.int64))
