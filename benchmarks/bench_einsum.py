"""flexsparse.einsum side by side with SciPy, pydata/sparse and NumPy (issue #2 targets).

Targets (2-core machine):
  * SpGEMM ``ij,jk->ik`` on real matrices: geomean time <= 0.5x SciPy ``A @ A``;
  * high-order power-law self-contractions (3-D..5-D, densities 1e-2..1e-5, 1-3 modes):
    <= 0.2x pydata ``sparse.tensordot`` and >= 100x faster than ``sparse.einsum``;
  * dense-ish chemistry tensors: <= 1.1x ``numpy.einsum(..., optimize=True)``;
  * first call in a fresh process with a warm numba cache: < 2 s import + compile.

Times are warm medians (``--repeat``); JIT compile is reported apart. Usage::

    python benchmarks/bench_einsum.py [--quick] [--repeat 5] [--data ../shared/data] [--json out.json]
    python benchmarks/bench_einsum.py --sections chemistry     # one section only
    python benchmarks/bench_einsum.py --sections densify       # COO -> dense kernels (_limits.DENSIFY_*)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from _common import best_pair, geomean, load_average, pyamg_matrices, pygsp_matrices, run_context, snap_matrices
from _common import timed as timeit

import flexsparse as fs


def real_matrices(data: Path | None, quick: bool):
    """``[(name, csr_array)]``: SNAP graphs (when ``data`` holds them), pyamg and pygsp matrices."""
    mats = list(snap_matrices(data=data).items()) if data is not None and data.is_dir() else []
    if data is None or not data.is_dir():
        print(f"(shared data not found at {data}: skipping the SNAP graphs)")
    mats += list(pyamg_matrices(["airfoil"] if quick else ["airfoil", "knot", "recirc_flow", "bar"]).items())
    if not quick:
        mats += list(pygsp_matrices(["Minnesota", "Bunny"]).items())
    return [(name.replace(":", "-"), A.astype(np.float64)) for name, A in mats]


def bench_spgemm(data, quick, repeat):
    rows = []
    for name, A in real_matrices(data, quick):
        a = fs.from_scipy(A)
        t0 = time.perf_counter()
        fs.einsum("ij,jk->ik", a, a, format="coo")
        first = time.perf_counter() - t0
        t_fs, res = timeit(lambda: fs.einsum("ij,jk->ik", a, a, format="coo"), repeat)
        t_sp, ref = timeit(lambda: A @ A, repeat)
        # SciPy drops entries that cancel to 0; flexsparse keeps them as explicit zeros
        ok = res.eliminate_zeros().nnz == ref.count_nonzero()
        diff = abs(fs.to_scipy(res, format="csr") - ref).max() if res.nnz else 0.0
        rows.append(dict(workload=f"SpGEMM {name} {A.shape[0]}x{A.shape[1]} nnz={A.nnz}", flexsparse=t_fs,
                         peer="SciPy A@A", peer_t=t_sp, ratio=t_fs / t_sp, first=first,
                         correct=bool(ok and diff <= 1e-9 * max(1.0, abs(ref).max()))))
    return rows


HIGH_ORDER = [
    # (shape, density, spec, label)
    ((200, 100, 300), 1e-3, "ijk,ljk->il", "3-D X x X modes 1,2"),
    ((200, 100, 300), 1e-3, "ijk,ilk->jl", "3-D X x X modes 0,2"),
    ((500, 400, 300), 1e-4, "ijk,imk->jm", "3-D X x X modes 0,2 (1e-4)"),
    ((100, 80, 60, 40), 1e-3, "ijkl,mjkl->im", "4-D X x X modes 1,2,3"),
    ((100, 80, 60, 40), 1e-3, "ijkl,mnkl->ijmn", "4-D X x X modes 2,3"),
    ((300, 200, 100, 50), 1e-5, "ijkl,mjkl->im", "4-D X x X modes 1,2,3 (1e-5)"),
    ((40, 30, 20, 20, 10), 1e-2, "ijklm,njklm->in", "5-D X x X modes 1-4"),
    ((60, 50, 40, 30, 20), 1e-4, "ijklm,ijkno->lmno", "5-D X x X modes 0,1,2"),
]


def bench_high_order(quick, repeat, einsum_timeout):
    import sparse

    rows = []
    cases = HIGH_ORDER[:3] if quick else HIGH_ORDER
    for shape, density, spec, label in cases:
        X = fs.random(shape, density, seed=1, distribution="powerlaw")
        lhs, rhs = spec.split("->")[0].split(",")
        common = [c for c in lhs if c in rhs]
        axes = ([lhs.index(c) for c in common], [rhs.index(c) for c in common])
        S = sparse.COO(X.coords, X.data, shape=X.shape)
        t0 = time.perf_counter()
        fs.einsum(spec, X, X, format="coo")
        first = time.perf_counter() - t0
        t_fs, res = timeit(lambda: fs.einsum(spec, X, X, format="coo"), repeat)
        sparse.tensordot(S, S, axes=axes, return_type=sparse.COO)  # warm pydata's own numba JIT
        t_td, ref = timeit(lambda: sparse.tensordot(S, S, axes=axes, return_type=sparse.COO), max(1, repeat // 2))
        # pydata's tensordot output order is (free lhs, free rhs) = our spec's output order here
        ok = np.allclose(res.todense(), ref.todense()) if math.prod(res.shape) < 5e7 else \
            (res.nnz == ref.nnz and np.isclose(res.data.sum(), ref.data.sum()))
        row = dict(workload=f"{label} {shape} d={density:g} nnz={X.nnz}", flexsparse=t_fs,
                   peer="pydata tensordot", peer_t=t_td, ratio=t_fs / t_td, first=first, correct=bool(ok))
        rows.append(row)
    # sparse.einsum is orders of magnitude slower: time it on the smaller cases only,
    # in a subprocess with a time limit, so a hang cannot stall the benchmark.
    for shape, density, spec, label in cases[:2]:
        code = textwrap.dedent(f"""
            import time, sparse, flexsparse as fs
            X = fs.random({shape!r}, {density!r}, seed=1, distribution="powerlaw")
            S = sparse.COO(X.coords, X.data, shape=X.shape)
            w = sparse.random((4, 4, 4), density=0.5, random_state=0)
            sparse.einsum("ijk,ljk->il", w, w)  # warm pydata's JIT on a tiny case first
            t0 = time.perf_counter(); sparse.einsum({spec!r}, S, S); print(time.perf_counter() - t0)
        """)
        try:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 timeout=einsum_timeout, check=True).stdout.strip().splitlines()[-1]
            t_es = float(out)
            note = ""
        except subprocess.TimeoutExpired:
            t_es, note = float(einsum_timeout), f">= (timed out at {einsum_timeout}s)"
        X = fs.random(shape, density, seed=1, distribution="powerlaw")
        t_fs, _ = timeit(lambda: fs.einsum(spec, X, X, format="coo"), repeat)
        rows.append(dict(workload=f"{label} {shape} d={density:g}", flexsparse=t_fs,
                         peer=f"pydata einsum {note}".strip(), peer_t=t_es, ratio=t_fs / t_es, first=0.0,
                         correct=True))
    return rows


#: Seconds of calls each function of a chemistry pair gets at least (see :func:`chemistry`).
CHEM_SECONDS = 0.25


def _rounds(fn, repeat: int) -> int:
    """Interleaved rounds giving ``fn`` at least :data:`CHEM_SECONDS` of calls (40 at least)."""
    t0 = time.perf_counter()
    for _ in range(5):
        fn()
    per_call = max((time.perf_counter() - t0) / 5, 1e-6)
    return max(repeat, 40, int(CHEM_SECONDS / per_call))


def chemistry(data: Path | None, repeat):
    rows = []
    if data is None or not (data / "TEvv.tns").exists():
        print("(chemistry tensors not found: skipping)")
        return rows
    ov = fs.load(data / "TEov.tns", index_base=0, header=True)
    vv = fs.load(data / "TEvv.tns", index_base=0, header=True)
    cases = [("abQ,icQ->abic", vv, ov, "vv x ov"), ("iaQ,jbQ->iajb", ov, ov, "ov x ov"),
             ("abQ,cdQ->abcd", vv, vv, "vv x vv")]
    for spec, x, y, label in cases:
        # one tensor given twice is one array for NumPy too, as flexsparse receives one object
        # twice (NumPy then runs a self-product, e.g. SYRK, exactly as flexsparse's GEMM does)
        xd = x.todense()
        yd = xd if y is x else y.todense()
        # sub-millisecond products: interleaved rounds, minimum of each (least disturbed by load),
        # over at least CHEM_SECONDS of each: 40 rounds of a 0.07-0.5 ms call span 5-40 ms, and one
        # disturbance of that length decided a whole minimum (abic from COO: 1.29x NumPy in one
        # run, 0.998-0.999x in the three before it, 2026-11-30)
        rounds = _rounds(lambda: np.einsum(spec, xd, yd, optimize=True), repeat)
        t_fs, t_np = best_pair(lambda: fs.einsum(spec, x, y), lambda: np.einsum(spec, xd, yd, optimize=True), rounds)
        res, ref = fs.einsum(spec, x, y), np.einsum(spec, xd, yd, optimize=True)
        got = res.todense() if hasattr(res, "todense") else res
        rows.append(dict(workload=f"chemistry {spec} ({label}) {x.shape}x{y.shape}, COO input (densify counted)",
                         flexsparse=t_fs, peer="NumPy einsum(optimize=True)", peer_t=t_np, ratio=t_fs / t_np,
                         first=0.0, correct=bool(np.allclose(got, ref))))
        # the same arrays as NumPy gets (no COO -> dense conversion inside the timing)
        t_fd, t_np2 = best_pair(lambda: fs.einsum(spec, xd, yd), lambda: np.einsum(spec, xd, yd, optimize=True),
                                rounds)
        res_d = fs.einsum(spec, xd, yd)
        rows.append(dict(workload=f"chemistry {spec} ({label}), dense input", flexsparse=t_fd,
                         peer="NumPy einsum(optimize=True)", peer_t=t_np2, ratio=t_fd / t_np2, first=0.0,
                         correct=bool(np.allclose(res_d, ref))))
    return rows


def densify_sweep(repeat):
    """COO -> dense of sorted tensors: the run-copy kernel against the per-entry scatter, by
    mean run length and array size (the measurements behind ``_limits.DENSIFY_*``)."""
    from flexsparse.formats.coo import _row_major_strides
    from flexsparse.kernels.cpu.densify import sorted_coo_to_dense
    from flexsparse.kernels.cpu.scatter import scatter_coo_dense

    rows = []
    rng = np.random.default_rng(0)
    rounds = max(repeat, 30)

    def kernels(x):
        strides = _row_major_strides(x.shape)

        def runs(fill):
            def f():
                out = np.empty(x.shape) if fill else np.zeros(x.shape)
                sorted_coo_to_dense(x.coords, x.data, strides, out.reshape(-1), fill)
            return f

        def scatter():
            scatter_coo_dense(x.coords, x.data, np.zeros(x.shape), True)
        return runs(True), runs(False), scatter

    for run in (2, 4, 8, 16, 32, 64):  # blocks of `run` cells, 75% of them present
        shape = (24, 24, 375)
        size = math.prod(shape)
        keep = np.repeat(rng.random(-(-size // run)) < 0.75, run)[:size].reshape(shape)
        x = fs.COO.from_numpy(np.where(keep, rng.random(shape) + 0.5, 0.0))
        fill, _, scatter = kernels(x)
        t_runs, t_sc = best_pair(fill, scatter, rounds)
        lin = np.ravel_multi_index(tuple(x.coords), x.shape)
        mean = x.nnz / (1 + np.count_nonzero(np.diff(lin) != 1))
        rows.append(dict(workload=f"densify {shape}, runs of mean {mean:.0f} cells, 75% full: run copy",
                         flexsparse=t_runs, peer="per-entry scatter", peer_t=t_sc, ratio=t_runs / t_sc,
                         first=0.0, correct=True))
    for shape in ((24, 24, 375), (48, 64, 375), (128, 128, 375)):
        for frac in (0.05, 0.3, 0.8):  # whole last-axis fibers present with probability frac
            keep = rng.random(shape[:-1]) < frac
            x = fs.COO.from_numpy(np.where(keep[..., None], rng.random(shape) + 0.5, 0.0))
            fill, nofill, _ = kernels(x)
            t_fill, t_zero = best_pair(fill, nofill, rounds)
            rows.append(dict(workload=f"densify {shape} ({8 * x.size / 2**20:.1f} MiB), {x.nnz / x.size:.0%} full "
                                      "in whole fibers: zeros written by the kernel (np.empty)",
                             flexsparse=t_fill, peer="zeros from np.zeros", peer_t=t_zero, ratio=t_fill / t_zero,
                             first=0.0, correct=True))
    return rows


def first_call():
    """Import + first einsum in a fresh process (numba cache already warm from this run)."""
    code = ("import time; t0=time.perf_counter(); import numpy as np, flexsparse as fs; "
            "a=fs.random((300,300),0.01,seed=0); fs.einsum('ij,jk->ik',a,a,format='coo'); "
            "b=np.ones((300,4)); fs.einsum('ij,jk->ik',a,b); print(time.perf_counter()-t0)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)  # fill the cache
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--einsum-timeout", type=float, default=300.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--sections", default="spgemm,high_order,chemistry",
                    help="comma-separated subset of spgemm,high_order,chemistry,densify")
    args = ap.parse_args(argv)
    start_load = load_average()
    data = args.data if args.data.is_dir() else None
    runners = {"spgemm": lambda: bench_spgemm(data, args.quick, args.repeat),
               "high_order": lambda: bench_high_order(args.quick, args.repeat, args.einsum_timeout),
               "chemistry": lambda: chemistry(data, args.repeat),
               "densify": lambda: densify_sweep(args.repeat)}
    wanted = [s for s in args.sections.split(",") if s]
    unknown = [s for s in wanted if s not in runners]
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}; valid: {', '.join(runners)}")
    sections = {name: runners[name]() for name in wanted}
    first = first_call()
    blas = [f"{v}={os.environ[v]}" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
            if v in os.environ]
    blas_threads = ", ".join(blas) if blas else "threads: library default (all cores)"
    print(f"\n{run_context(start_load)}\n- threads: numba {__import__('numba').get_num_threads()}, "
          f"BLAS {blas_threads}; times: median of --repeat runs, chemistry: min of interleaved rounds")
    for title, rows in sections.items():
        print(f"\n## {title}")
        print("| workload | flexsparse ms | peer | peer ms | flexsparse/peer | first call s | correct |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['workload']} | {r['flexsparse'] * 1e3:.2f} | {r['peer']} | {r['peer_t'] * 1e3:.2f} | "
                  f"{r['ratio']:.3f} | {r['first']:.2f} | {'yes' if r['correct'] else 'NO'} |")
        by_peer = {}
        for r in rows:
            by_peer.setdefault(r["peer"].split(" >=")[0], []).append(r["ratio"])
        for peer, ratios in by_peer.items():
            print(f"geomean flexsparse/{peer}: {geomean(ratios):.3f} (max {max(ratios):.3f})")
    print(f"\nfirst call in a fresh process (import + 2 einsums, warm cache): {first:.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"sections": sections, "first_call_s": first}, indent=1))


if __name__ == "__main__":
    main()
