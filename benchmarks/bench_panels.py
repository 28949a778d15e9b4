"""Whether the SpGEMM's dense accumulator pays to be taken in column panels (a design probe).

The production kernels (:mod:`flexsparse.kernels.cpu._spgemm_rows`) give every worker a
position map of ``n_cols`` ``uint32`` tags: 4 MiB at 2^20 columns, which the random
multiply-adds of a power-law row update all over. This probe runs a *prototype* of that
position map (not the production kernel: no prefetch, no variants, no trials) in two forms:

* ``P = 1``: each row of ``A`` in turn, every multiply-add into the full-width tags;
* ``P > 1``: blocks of ``--block`` rows; for each of ``P`` panels of ``ceil(n_cols / P)``
  columns, each row of the block in turn, each ``B`` row read from a cursor kept per entry of
  the block (``B``'s rows are sorted, so a row's entries in panel ``p`` follow those in panel
  ``p - 1``): the tags a panel touches are ``1 / P`` of the map, and each ``B`` entry is still
  read once. A row's panels append to its own output range, so rows stay contiguous.

Both write each row at its flops offset (an upper bound; no compaction timed), on one thread
and on two (rows split at half the flops), min of ``--repeats``. The question it answers is
the ratio between the ``P`` columns of one product on one machine, not how fast the production
kernel is. Built into the production kernel (with its prefetch), panels lost on one and on two
threads (BENCHMARKS.md, section 38): the prototype's gain came from a baseline without the
prefetch. Cost: O(flops x len(P) x repeats x 2). Usage::

    python benchmarks/bench_panels.py
    python benchmarks/bench_panels.py --panels 1,4 --only rmat20
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
from _common import load_average, machine
from bench_spgemm import rmat_case, uniform_case
from numba import njit, prange


@njit(cache=True)
def _rows(ap, ai, ax, bp, bi, bx, r0, r1, off, n_panels, n_cols, block, tag, cur, oi, ox):
    """Rows ``[r0, r1)`` into ``oi``/``ox`` at ``off[i]``, the tags taken panel by panel per
    block of rows. A tag holds the global output slot + 1 of the column's entry; one at or
    below the row's first slot is stale (rows go in increasing order, offsets increase)."""
    width = (n_cols + n_panels - 1) // n_panels
    r = r0
    while r < r1:
        rb = min(r + block, r1)
        base = ap[r]
        for e in range(ap[r], ap[rb]):
            cur[e - base] = bp[ai[e]]
        count = np.zeros(rb - r, dtype=np.int64)
        for p in range(n_panels):
            hi = min((p + 1) * width, n_cols)
            for i in range(r, rb):
                first = off[i]
                o = first + count[i - r]
                for e in range(ap[i], ap[i + 1]):
                    av = ax[e]
                    q = cur[e - base]
                    qe = bp[ai[e] + 1]
                    while q < qe and bi[q] < hi:
                        j = bi[q]
                        g = np.int64(tag[j])
                        if g <= first:
                            tag[j] = np.uint32(o + 1)
                            oi[o] = j
                            ox[o] = av * bx[q]
                            o += 1
                        else:
                            ox[g - 1] += av * bx[q]
                        q += 1
                    cur[e - base] = q
                count[i - r] = o - first
        r = rb


@njit(parallel=True, cache=True)
def _workers(ap, ai, ax, bp, bi, bx, bounds, off, n_panels, n_cols, block, tags, curs, oi, ox):
    for w in prange(bounds.shape[0] - 1):
        _rows(ap, ai, ax, bp, bi, bx, bounds[w], bounds[w + 1], off, n_panels, n_cols, block, tags[w], curs[w],
              oi, ox)


def probe(case, panels: list[int], block: int, repeats: int) -> tuple[dict, int]:
    """``({(threads, P): seconds}, multiply-adds)`` of the prototype on ``case`` (min of ``repeats``)."""
    a, b = case.a, case.b
    n_cols = b.shape[1]
    if n_cols >= 2**32 - 1:
        raise ValueError(f"{case.name}: {n_cols} columns do not fit uint32 tags")
    deg = np.diff(b.indptr)
    cum = np.concatenate(([0], np.cumsum(deg[a.indices])))
    row_flops = cum[a.indptr[1:]] - cum[a.indptr[:-1]]
    off = np.concatenate(([0], np.cumsum(row_flops))).astype(np.int64)
    total = int(off[-1])
    oi, ox = np.empty(total, np.int32), np.empty(total)
    ap, ai = a.indptr.astype(np.int64), a.indices.astype(np.int32)
    bp, bi = b.indptr.astype(np.int64), b.indices.astype(np.int32)
    widest = int(max((a.indptr[r + block] if r + block < a.shape[0] else a.indptr[-1]) - a.indptr[r]
                     for r in range(0, a.shape[0], block)))
    half = int(np.searchsorted(off, total / 2))
    out = {}
    for n_threads, bounds in ((1, np.array([0, a.shape[0]])), (2, np.array([0, half, a.shape[0]]))):
        numba.set_num_threads(n_threads)
        curs = np.zeros((n_threads, widest + 1), np.int64)
        for p in panels:
            best = np.inf
            for _ in range(repeats):
                tags = np.zeros((n_threads, n_cols), np.uint32)
                t0 = time.perf_counter()
                _workers(ap, ai, a.data, bp, bi, b.data, bounds, off, p, n_cols, block, tags, curs, oi, ox)
                best = min(best, time.perf_counter() - t0)
            out[(n_threads, p)] = best
    return out, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--panels", default="1,2,4,8", help="comma-separated panel counts P")
    ap.add_argument("--block", type=int, default=256, help="rows of A per block")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--flop-cap", type=float, default=64e6, help="R-MAT products: row-sample above this")
    ap.add_argument("--only", default="", help="comma-separated case name prefixes")
    args = ap.parse_args()
    panels = [int(p) for p in args.panels.split(",")]
    if numba.config.NUMBA_NUM_THREADS < 2:
        raise SystemExit("bench_panels needs 2 numba threads")
    print(f"# column panels of the position map (prototype), {machine()}; load at start {load_average()}")
    print(f"# min of {args.repeats}; block {args.block} rows; ms, and two threads over one\n")
    print("| product | flops | columns | " + " | ".join(f"P={p} 1t / 2t ms (2t/1t)" for p in panels) + " |")
    print("|---|---|---|" + "---|" * len(panels))
    makers = [lambda: rmat_case(20, 16, args.flop_cap, 0), lambda: rmat_case(20, 8, args.flop_cap, 0),
              lambda: rmat_case(18, 16, args.flop_cap, 0), lambda: rmat_case(18, 8, args.flop_cap, 0),
              lambda: uniform_case(0)]
    only = [s for s in args.only.split(",") if s]
    for make in makers:
        case = make()
        if only and not any(case.name.startswith(o) for o in only):
            continue
        t, flops = probe(case, panels, args.block, args.repeats)
        cells = " | ".join(f"{t[(1, p)] * 1e3:.0f} / {t[(2, p)] * 1e3:.0f} ({t[(1, p)] / t[(2, p)]:.2f}x)"
                           for p in panels)
        print(f"| {case.name} | {flops / 1e6:.1f}M | 2^{case.b.shape[1].bit_length() - 1} | {cells} |", flush=True)
    print(f"\n# load at end {load_average()}")


if __name__ == "__main__":
    main()
