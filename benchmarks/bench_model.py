"""Time flexsparse.model: the Sparseloop-compatible engine on the artifact's fig15 sweep (target:
the 96 cases in < 60 s on 2 cores), and the data-driven designs on a 1M-nonzero matrix (< 10 s each).

Usage: python benchmarks/bench_model.py [--n 200000] [--nnz 1000000] [--real] [--artifact PATH]

Evaluates every data-driven design on A @ A for a generated power-law matrix with about
``--nnz`` nonzeros (and, with --real, on the SNAP graphs in ../shared/data when present),
printing one row per design: seconds (best of ``--repeat``), cycles, energy and the design's
tile statistics. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import time

from _common import min_time

from flexsparse.model import MatmulWorkload, evaluate
from flexsparse.model.validation import powerlaw_matrix

DESIGNS = ("dense", "generic", "stc", "dstc", "highlight", "extensor-n", "extensor-p", "extensor-ob", "flaash",
           "flaash-cb")


def _time(design: str, w: MatmulWorkload, repeat: int) -> tuple[float, object]:
    """Best of ``repeat`` evaluations and the report of one."""
    return min_time(lambda: evaluate(design, w), repeat), evaluate(design, w)


def bench_fig15(root: str | None, repeat: int) -> None:
    """Load and evaluate every fig15 case of the Sparseloop artifact (reference parsing excluded)."""
    from flexsparse.model.sparseloop.artifact import ARTIFACT_ENV, cases, find_artifact
    from flexsparse.model.sparseloop.engine import evaluate, load_spec
    base = find_artifact(root)
    if base is None:
        print(f"skipping the fig15 sweep: Sparseloop artifact not found (--artifact or ${ARTIFACT_ENV})")
        return
    todo = cases("fig15", base)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for c in todo:
            evaluate(load_spec(c.files))
        best = min(best, time.perf_counter() - t0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"fig15 sweep: {len(todo)} cases (parse + evaluate) in {best:.2f} s (best of {repeat}; target < 60 s); "
          f"load average {load:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", default=None, help="Sparseloop artifact checkout (default: "
                    "$FLEXSPARSE_SPARSELOOP_ARTIFACT)")
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--nnz", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--real", action="store_true", help="also run the SNAP graphs in ../shared/data")
    args = ap.parse_args()
    bench_fig15(args.artifact, args.repeat)
    t0 = time.perf_counter()
    A = powerlaw_matrix(args.n, args.nnz / args.n**2, 0.8, seed=0)
    print(f"generated {A.shape[0]}x{A.shape[1]} power-law matrix, nnz={A.nnz} in {time.perf_counter() - t0:.2f} s")
    cases = [("powerlaw", MatmulWorkload.from_data(A, A, name="powerlaw"))]
    data = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
    if args.real:
        if os.path.isdir(data):
            import scipy.io
            for f in ("ca-GrQc", "ca-HepTh"):
                M = scipy.io.loadmat(os.path.join(data, f"{f}.mat"))["Problem"][0, 0]["A"]
                cases.append((f, MatmulWorkload.from_data(M, M, name=f)))
        else:
            print(f"skipping real data: {data} not found")
    print(f"{'workload':<10} {'design':<12} {'seconds':>8} {'cycles':>12} {'energy_uJ':>11} {'tiles':>8} "
          f"{'overbooked':>10}")
    worst = 0.0
    for name, w in cases:
        for d in DESIGNS:
            secs, rep = _time(d, w, args.repeat)
            if name == "powerlaw":
                worst = max(worst, secs)
            print(f"{name:<10} {d:<12} {secs:8.3f} {rep.cycles:12.4g} {rep.energy_pj / 1e6:11.4g} {rep.tiles:8d} "
                  f"{rep.overbooked_tiles:10d}")
    print(f"slowest design on {A.nnz} nonzeros: {worst:.2f} s (target < 10 s): {'PASS' if worst < 10 else 'FAIL'}")


if __name__ == "__main__":
    main()
