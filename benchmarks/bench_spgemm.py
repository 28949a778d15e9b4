"""SpGEMM ``C = A @ B`` side by side: flexsparse (einsum and ``@``), SciPy, GraphBLAS and MKL.

Every product is timed in one process, the libraries interleaved round by round, and the
minimum of ``--repeats`` warm runs is kept (up to 100x more rounds for products SciPy does
in under 0.1 s). flexsparse runs with its default settings:
``fs.einsum("ij,jk->ik", A, B)`` and ``A @ B`` on COO operands built once from the SciPy
matrices (``fs.as_coo``: backed by the same CSR buffers, no copy), numba's default thread
count. Peers: SciPy ``A @ B`` (one thread, it has no other), python-graphblas
``A.mxm(B).new()`` (SuiteSparse:GraphBLAS, ``gb.ss.config["nthreads"]``) and sparse_dot_mkl
``dot_product_mkl(A, B)`` (MKL, ``mkl_set_num_threads``), both on ``--threads`` threads
(default 2), each in its own native output form (jumbled rows allowed, as flexsparse's).
``MKL_RT`` is pointed at the ``libmkl_rt.so.*`` of the ``mkl`` wheel inside this script only,
and ``OMP_WAIT_POLICY`` is ``PASSIVE`` for every library (``--wait-policy``): idle OpenMP
threads that spin would otherwise steal the cores from the next library in the rounds.

Columns: flops (multiply-adds), nnz(C), the longest row of A and of C, the times, the
ratio of each flexsparse entry point to the best peer, the one-thread flexsparse time over
SciPy's, the speed-up of ``--threads`` threads over one (products above 10M multiply-adds),
and the peak RSS growth of the flexsparse product over its input plus output bytes (in a
child process per matrix, ``--rss``; the JIT is warmed on a tiny product first). CPU-time
columns (``time.process_time``, every thread of the process; robust on a loaded machine
where wall time is not): one-thread flexsparse over SciPy (``c1/sp``) and over the best
peer run on one thread (``c1/b1``), and the CPU time of the ``--threads``-thread flexsparse
run over the one-thread run (``cN/c1``: the work the threads add; an idle machine's
speed-up is at most ``threads / cN/c1``).

Matrix suite (all generators seeded):

* every example matrix pyamg ships, the graphs pygsp ships (Minnesota, Bunny, Airfoil,
  Logo, DavidSensorNet 64 and 500, TwoMoons), the SNAP graphs of ``../shared/data``
  (skipped with a message when absent);
* R-MAT / Graph500 (a = 0.57, b = c = 0.19; directed edge lists, not symmetrised, repeated
  edges kept once, vertex labels permuted) at scale 16, 18 and 20 with edge factor 8 and
  16. ``A @ A`` of these outgrows this machine (scale 16/ef 16: 163M entries in C; scale
  18/ef 8: 496M, 6 GB), so each is multiplied on the left by every k-th row of itself,
  ``A[::k] @ A``, with the smallest power of two k that keeps the product under
  ``--flop-cap`` multiply-adds: the same hub structure in B, a uniform sample of the rows
  of A (labels are permuted) -- the name shows ``rows/k``;
* the 3-D Poisson matrix ``pyamg.gallery.poisson((60, 60, 60))``;
* ``uniform``: 2^18 x 2^18, 8 uniformly random columns in every row;
* ``arrow``: 2^19 x 2^19 diagonal with 8 dense rows (first rows) and 8 dense columns
  (last columns): dense rows of C, hub columns in B.

Targets (2 threads): <= 1.0x the best peer on >= 80 % of the suite and geomean <= 0.8x;
one thread never slower than SciPy; RSS growth <= 1.5x (inputs + output); >= 1.8x from 1 to
2 threads above 10M multiply-adds. A ready-to-paste markdown table is printed at the end.

Usage::

    python benchmarks/bench_spgemm.py                 # full suite
    python benchmarks/bench_spgemm.py --quick         # small matrices and scale-16 R-MAT only
    python benchmarks/bench_spgemm.py --only rmat16-ef8,poisson3d-60 --repeats 7 --rss
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    geomean,
    interleaved_min,
    peak_rss_growth,
    pyamg_matrices,
    pygsp_matrices,
    snap_matrices,
)

SCALING_MIN_FLOPS = 10_000_000
_PYGSP = ("Minnesota", "Bunny", "Airfoil", "Logo", "DavidSensorNet:64", "DavidSensorNet:500", "TwoMoons")


@dataclasses.dataclass
class Case:
    name: str
    a: sp.csr_array
    b: sp.csr_array


# ---------------------------------------------------------------------- matrices
def _csr(m) -> sp.csr_array:
    m = sp.csr_array(m)
    if m.dtype.kind not in "fc":
        m = m.astype(np.float64)
    m.sum_duplicates()
    m.sort_indices()
    return m


def rmat_case(scale: int, ef: int, flop_cap: float, seed: int) -> Case:
    import flexsparse as fs

    a = fs.to_scipy(fs.rmat(scale, ef, seed=seed))
    a = _csr(a)
    deg = np.diff(a.indptr)
    cum = np.concatenate(([0], np.cumsum(deg[a.indices])))
    row_flops = cum[a.indptr[1:]] - cum[a.indptr[:-1]]
    k = 1
    while row_flops[::k].sum() > flop_cap and k < a.shape[0]:
        k *= 2
    name = f"rmat{scale}-ef{ef}" + (f" rows/{k}" if k > 1 else "")
    return Case(name, _csr(a[::k]) if k > 1 else a, a)


def uniform_case(seed: int, n: int = 1 << 18, per_row: int = 8) -> Case:
    rng = np.random.default_rng(seed)
    cols = rng.integers(0, n, n * per_row)
    a = _csr(sp.csr_array((rng.random(n * per_row), cols, np.arange(n + 1) * per_row), shape=(n, n)))
    return Case(f"uniform-2^{n.bit_length() - 1}x{per_row}", a, a)


def arrow_case(seed: int, n: int = 1 << 19, k: int = 8) -> Case:
    rng = np.random.default_rng(seed)
    diag = np.arange(n)
    dense_rows = np.repeat(np.arange(k), n), np.tile(np.arange(n), k)
    dense_cols = np.tile(np.arange(n), k), np.repeat(np.arange(n - k, n), n)
    rows = np.concatenate([diag, dense_rows[0], dense_cols[0]])
    cols = np.concatenate([diag, dense_rows[1], dense_cols[1]])
    a = _csr(sp.coo_array((rng.random(rows.size), (rows, cols)), shape=(n, n)))
    return Case(f"arrow-2^{n.bit_length() - 1}-k{k}", a, a)


def poisson_case() -> Case | None:
    try:
        import pyamg
    except ImportError:
        print("[skip] poisson3d: pyamg not installed")
        return None
    a = _csr(pyamg.gallery.poisson((60, 60, 60)))
    return Case("poisson3d-60", a, a)


def build_suite(quick: bool, flop_cap: float, seed: int) -> list[Callable[[], Case | None]]:
    """Deferred constructors (a case is built when it is run, so memory holds one at a time)."""
    makers: list[Callable[[], Case | None]] = []
    small = {**pyamg_matrices(), **pygsp_matrices(_PYGSP), **snap_matrices()}
    for name, m in small.items():
        makers.append(lambda name=name, m=m: Case(name, _csr(m), _csr(m)))
    scales = (16,) if quick else (16, 18, 20)
    for scale in scales:
        for ef in (8, 16):
            makers.append(lambda s=scale, e=ef: rmat_case(s, e, flop_cap, seed))
    makers.append(poisson_case)
    if not quick:
        makers.append(lambda: uniform_case(seed))
        makers.append(lambda: arrow_case(seed))
    return makers


# ---------------------------------------------------------------------- peers
def setup_peers(threads: int) -> dict[str, str]:
    """Import GraphBLAS and MKL with ``threads`` threads; returns {peer: status}."""
    status = {}
    libs = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))
    if libs and "MKL_RT" not in os.environ:
        os.environ["MKL_RT"] = libs[0]
    try:
        import sparse_dot_mkl

        sparse_dot_mkl.mkl_set_num_threads(threads)
        status["mkl"] = f"sparse_dot_mkl {sparse_dot_mkl.__version__}, {sparse_dot_mkl.mkl_get_max_threads()} threads"
    except Exception as exc:  # noqa: BLE001 - a missing peer is reported, not fatal
        status["mkl"] = f"unavailable ({exc})"
    try:
        import graphblas as gb

        gb.ss.config["nthreads"] = threads
        status["graphblas"] = f"python-graphblas {gb.__version__}, {gb.ss.config['nthreads']} threads"
    except Exception as exc:  # noqa: BLE001
        status["graphblas"] = f"unavailable ({exc})"
    return status


def peer_functions(case: Case, status: dict[str, str], threads: int | None = None
                   ) -> dict[str, Callable[[], object]]:
    """The peers' products; ``threads`` (e.g. 1) runs GraphBLAS and MKL on that many threads
    for the call instead of the count :func:`setup_peers` set."""
    a, b = case.a, case.b
    fns: dict[str, Callable[[], object]] = {"scipy": lambda: a @ b}
    if not status["graphblas"].startswith("unavailable"):
        import graphblas as gb

        ga = gb.io.from_scipy_sparse(a)
        gbb = ga if b is a else gb.io.from_scipy_sparse(b)
        fns["graphblas"] = lambda: ga.mxm(gbb).new()
        if threads is not None:
            fns["graphblas"] = _with_threads(fns["graphblas"], lambda n: gb.ss.config.__setitem__("nthreads", n),
                                             lambda: gb.ss.config["nthreads"], threads)
    if not status["mkl"].startswith("unavailable"):
        import sparse_dot_mkl
        from sparse_dot_mkl import dot_product_mkl

        fns["mkl"] = lambda: dot_product_mkl(a, b)
        if threads is not None:
            fns["mkl"] = _with_threads(fns["mkl"], sparse_dot_mkl.mkl_set_num_threads,
                                       sparse_dot_mkl.mkl_get_max_threads, threads)
    return fns


def _with_threads(fn: Callable[[], object], set_threads: Callable[[int], object], get_threads: Callable[[], int],
                  n: int) -> Callable[[], object]:
    def run() -> object:
        old = get_threads()
        set_threads(n)
        try:
            return fn()
        finally:
            set_threads(old)
    return run


# ---------------------------------------------------------------------- measuring
def product_stats(case: Case) -> dict[str, int]:
    a, b = case.a, case.b
    bdeg = np.diff(b.indptr)
    return {"n_rows": a.shape[0], "nnz_a": a.nnz, "flops": int(bdeg[a.indices].sum()),
            "max_row_a": int(np.diff(a.indptr).max(initial=0))}


def check_result(res, case: Case, ref) -> bool:
    """Row lengths of the structural product (flexsparse keeps cancelled entries, SciPy drops
    them) and row sums of SciPy's product ``ref``."""
    import flexsparse as fs

    if isinstance(res, np.ndarray):  # format="auto" chose a dense result
        return bool(np.allclose(res, sp.csr_array(ref).toarray(), rtol=1e-9, atol=1e-12))
    c = fs.to_scipy(res)
    pattern = [sp.csr_array((np.ones(m.nnz), m.indices, m.indptr), shape=m.shape) for m in (case.a, case.b)]
    if not np.array_equal(np.diff(c.indptr), np.diff((pattern[0] @ pattern[1]).indptr)):
        return False
    scale = abs(c).sum(axis=1) + 1e-300
    return bool(np.all(np.abs(c.sum(axis=1) - sp.csr_array(ref).sum(axis=1)) <= 1e-9 * scale))


def measure(case: Case, status: dict[str, str], threads: int, repeats: int, peer_scaling: bool = False) -> dict:
    """Interleaved wall times (and one-thread CPU times) of flexsparse and the peers;
    ``peer_scaling`` adds GraphBLAS and MKL on one thread to the wall-time rounds of products
    above ``SCALING_MIN_FLOPS`` (their own two-thread over one-thread speed-up, same rounds)."""
    import flexsparse as fs

    A = fs.as_coo(case.a)
    B = A if case.b is case.a else fs.as_coo(case.b)
    fns: dict[str, Callable[[], object]] = {
        "fs_einsum": lambda: fs.einsum("ij,jk->ik", A, B),
        "fs_matmul": lambda: A @ B,
        "fs_1t": lambda: fs.einsum("ij,jk->ik", A, B, threads=1),
        **peer_functions(case, status),
    }
    if threads != 2:
        fns["fs_einsum"] = lambda: fs.einsum("ij,jk->ik", A, B, threads=threads)
    if peer_scaling and product_stats(case)["flops"] > SCALING_MIN_FLOPS:
        fns.update({f"{k}_1t": f for k, f in peer_functions(case, status, threads=1).items() if k != "scipy"})
    t0 = time.perf_counter()
    ref = fns["scipy"]()
    # products under 0.1 s of SciPy time get more rounds (up to 100x, ~0.1 s of SciPy time a
    # library): a minimum of a few short calls on a shared VM is mostly noise (Bunny, 7.5 ms on
    # two threads: 7.3-8.1 ms in a third of 40 back-to-back calls, 15-18 ms in half of them)
    repeats *= max(1, min(100, int(0.1 / max(time.perf_counter() - t0, 1e-6))))
    res = fns["fs_einsum"]()
    ok = check_result(res, case, ref) and check_result(fns["fs_1t"](), case, ref)
    out = product_stats(case)
    c = fs.to_scipy(res if not isinstance(res, np.ndarray) else fs.to_scipy(ref))
    out.update(nnz_c=int(c.nnz), max_row_c=int(np.diff(c.indptr).max(initial=0)), ok=ok)
    del res, ref, c
    for fn in fns.values():  # warm every path once more (caches, thread teams)
        fn()
    out["times"] = interleaved_min(fns, repeats)
    # CPU time of every thread of the process: robust under load where wall time is not.
    # One thread each (the peers switched to one thread for the call), and the parallel
    # flexsparse run, whose CPU time over the serial one is the work the threads add.
    cpu_fns = {"fs_1t": fns["fs_1t"], "fs_nt": fns["fs_einsum"],
               **{f"{k}_1t": f for k, f in peer_functions(case, status, threads=1).items()}}
    for fn in cpu_fns.values():
        fn()
    out["cpu"] = interleaved_min(cpu_fns, repeats, clock=time.process_time)
    return out


def rss_child(index: int, args: argparse.Namespace) -> None:
    """Print the product's peak RSS growth and its input/output bytes as JSON (run in a
    fresh process so that no earlier product's memory is reused)."""
    import flexsparse as fs

    case = build_suite(args.quick, args.flop_cap, args.seed)[index]()  # only this case is built
    # load every kernel the product may run (JIT cache) outside the measurement: products of
    # the same dtypes that take the serial and the parallel paths, with sparse and dense results
    for n, nnz in ((64, 256), (128, 1800), (64, 1500), (600, 36000), (1 << 17, 1 << 19)):
        w = fs.as_coo(sp.random_array((n, n), density=nnz / n**2, rng=0, format="csr", dtype=case.a.dtype))
        fs.einsum("ij,jk->ik", w, w)
        del w
    fs.free_buffers()  # the warm-up's output mappings: the product measured starts on none
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)  # hand freed heap memory back before measuring
    except (OSError, AttributeError):
        pass
    A = fs.as_coo(case.a)
    B = A if case.b is case.a else fs.as_coo(case.b)
    res, growth = peak_rss_growth(lambda: fs.einsum("ij,jk->ik", A, B))

    def nbytes(m) -> int:
        return int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes)

    out = res.nbytes if isinstance(res, np.ndarray) else nbytes(res.to_csr(sort=False))
    inputs = nbytes(case.a) + (0 if case.b is case.a else nbytes(case.b))
    print(json.dumps({"growth": growth, "inputs": inputs, "output": out}))


def rss_of(index: int, name: str, args: argparse.Namespace) -> float | None:
    cmd = [sys.executable, __file__, "--rss-child", str(index), "--flop-cap", str(args.flop_cap),
           "--seed", str(args.seed)] + (["--quick"] if args.quick else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        print(f"[rss] {name}: {exc}")
        return None
    return None if r["growth"] is None else r["growth"] / (r["inputs"] + r["output"])


# ---------------------------------------------------------------------- report
def _ms(t: float | None) -> str:
    return "-" if t is None else f"{t * 1e3:.3f}" if t < 0.01 else f"{t * 1e3:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="pyamg, pygsp, SNAP, scale-16 R-MAT, Poisson")
    ap.add_argument("--threads", type=int, default=2, help="threads of GraphBLAS, MKL and flexsparse")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (minimum kept)")
    ap.add_argument("--flop-cap", type=float, default=64e6, help="R-MAT products: row-sample above this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated case names (prefix match)")
    ap.add_argument("--rss", action="store_true", help="measure peak RSS growth in a child per matrix")
    ap.add_argument("--wait-policy", default="PASSIVE", choices=("PASSIVE", "ACTIVE", "default"),
                    help="OMP_WAIT_POLICY of every OpenMP runtime (GNU for numba and GraphBLAS, Intel "
                         "for MKL); set before any is loaded")
    ap.add_argument("--workers", action="store_true",
                    help="only break down --threads-thread kernel runs above 10M multiply-adds per worker "
                         "(late start, busy time, balance, contention) against one thread")
    ap.add_argument("--crossover", action="store_true",
                    help="only time 1 vs --threads threads on growing products (the one-thread rule)")
    ap.add_argument("--peer-scaling", action="store_true",
                    help="also time GraphBLAS and MKL on one thread above 10M multiply-adds (their 2t/1t)")
    ap.add_argument("--rss-child", type=int, default=-1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.wait_policy != "default":
        # Spinning idle threads of one library steal the cores from the next one in the
        # interleaved rounds (MKL's Intel OpenMP spins 200 ms after each call by default),
        # and on a shared machine they make every parallel region wait for a time slice.
        os.environ["OMP_WAIT_POLICY"] = args.wait_policy
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.rss_child >= 0:
        rss_child(args.rss_child, args)
        return 0

    import numba

    import flexsparse as fs

    numba.set_num_threads(args.threads)
    if args.crossover:
        crossover_report(args)
        return 0
    if args.workers:
        workers_report(args)
        return 0
    status = setup_peers(args.threads)
    load = os.getloadavg()
    print(f"# SpGEMM C = A @ B | {time.strftime('%Y-%m-%d %H:%M')} | {platform.processor() or platform.machine()} "
          f"{os.cpu_count()} cpus | load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"# flexsparse {fs.__version__}: numba {numba.__version__} {numba.get_num_threads()} threads "
          f"(layer {numba.threading_layer() if hasattr(numba, 'threading_layer') else '?'}), "
          f"scipy 1 thread, " + ", ".join(f"{k}: {v}" for k, v in status.items()))
    print(f"# min of {args.repeats} interleaved warm runs; ratios vs the best peer; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}")
    only = [s for s in args.only.split(",") if s]
    rows = []
    head = (f"{'matrix':30s} {'flops':>9s} {'nnz(C)':>9s} {'maxA':>6s} {'maxC':>7s} {'einsum':>8s} {'@':>8s} "
            f"{'scipy':>8s} {'GrB':>8s} {'MKL':>8s} {'e/best':>6s} {'@/best':>6s} {'1t/sp':>6s} "
            f"{'2t/1t':>5s} {'rss':>5s} {'c1/sp':>5s} {'c1/b1':>5s} {'cN/c1':>5s} ok")
    print(head)
    for index, make in enumerate(build_suite(args.quick, args.flop_cap, args.seed)):
        case = make()
        if case is None or (only and not any(case.name.startswith(o) for o in only)):
            continue
        r = measure(case, status, args.threads, args.repeats, args.peer_scaling)
        t = r["times"]
        peers = {k: t[k] for k in ("scipy", "graphblas", "mkl") if k in t}
        best = min(peers.values())
        r.update(name=case.name, best=best, best_peer=min(peers, key=peers.get),
                 ratio=t["fs_einsum"] / best, ratio_mm=t["fs_matmul"] / best,
                 ratio_1t=t["fs_1t"] / t["scipy"],
                 speedup=t["fs_1t"] / t["fs_einsum"] if r["flops"] > SCALING_MIN_FLOPS else None,
                 rss=rss_of(index, case.name, args) if args.rss else None)
        c = r["cpu"]
        r.update(cpu_1t_scipy=c["fs_1t"] / c["scipy_1t"],
                 cpu_1t_best=c["fs_1t"] / min(v for k, v in c.items() if k.endswith("_1t") and k != "fs_1t"),
                 cpu_nt_1t=c["fs_nt"] / c["fs_1t"])
        r["peer_speedup"] = {k: t[f"{k}_1t"] / t[k] for k in ("graphblas", "mkl") if f"{k}_1t" in t}
        rows.append(r)
        speedup = "" if r["speedup"] is None else f"{r['speedup']:.2f}"
        rss = "" if r["rss"] is None else f"{r['rss']:.2f}"
        print(f"{case.name:30s} {r['flops']:9.3g} {r['nnz_c']:9d} {r['max_row_a']:6d} {r['max_row_c']:7d} "
              f"{_ms(t['fs_einsum']):>8s} {_ms(t['fs_matmul']):>8s} {_ms(t.get('scipy')):>8s} "
              f"{_ms(t.get('graphblas')):>8s} {_ms(t.get('mkl')):>8s} {r['ratio']:6.2f} {r['ratio_mm']:6.2f} "
              f"{r['ratio_1t']:6.2f} {speedup:>5s} {rss:>5s} {r['cpu_1t_scipy']:5.2f} {r['cpu_1t_best']:5.2f} "
              f"{r['cpu_nt_1t']:5.2f} {'yes' if r['ok'] else 'NO'}"
              + "".join(f"  {k} 2t/1t {v:.2f}" for k, v in r["peer_speedup"].items()), flush=True)
        del case
    summarize(rows, args)
    overhead_report()
    return 0


def overhead_report(repeats: int = 3000) -> None:
    """Fixed cost of the einsum layers on a tiny product (pyamg airfoil, 260 x 260): the
    compiled kernel alone, the kernel's Python wrapper, ``fs.einsum`` and ``A @ A``."""
    try:
        import pyamg
    except ImportError:
        print("[skip] overhead: pyamg not installed")
        return
    import flexsparse as fs
    from flexsparse.kernels.cpu import spgemm as k
    from flexsparse.kernels.cpu._spgemm_flops import _row_flops

    m = _csr(pyamg.gallery.load_example("airfoil")["A"])
    A = fs.as_coo(m)
    a = A.to_csr()
    n = a.n_rows
    flops = np.empty(n, dtype=np.int64)
    total = _row_flops(a.indptr, a.indices, a.indptr, flops, 0, n)
    bounds, dense, like = np.array([0, n]), np.ones(1, dtype=bool), np.empty(0, dtype=a.indices.dtype)
    fns = {
        "kernel": lambda: k.spgemm_csr_csr_serial(a.indptr, a.indices, a.data, a.indptr, a.indices, a.data,
                                                  n, True, flops, total, bounds, dense, 0, False, like),
        "spgemm": lambda: k.spgemm_trusted(a, a),
        "einsum": lambda: fs.einsum("ij,jk->ik", A, A),
        "A @ A": lambda: A @ A,
        "scipy": lambda: m @ m,
    }
    for fn in fns.values():
        fn()
    t = interleaved_min(fns, repeats)
    print(f"\nfixed overhead, pyamg airfoil ({n} x {n}, {total} multiply-adds), min of {repeats}: "
          + ", ".join(f"{name} {v * 1e6:.1f} us" for name, v in t.items())
          + f"; einsum - kernel = {(t['einsum'] - t['kernel']) * 1e6:.1f} us  [target <= 30 us]")


def crossover_report(args: argparse.Namespace) -> None:
    """One thread against ``--threads`` threads on products of growing size (row samples
    ``A[::k] @ A`` of R-MAT scale 16, edge factor 8), the rule that forces one thread
    switched off: wall-clock minimum of ``--repeats`` interleaved rounds and the process
    CPU time of the parallel run over the serial one. Sets
    ``flexsparse._limits.SPGEMM_PARALLEL_MIN_FLOPS``; meaningful on an idle machine only
    (the load average is printed)."""
    import flexsparse as fs
    from flexsparse.kernels.cpu import spgemm as k

    a = _csr(fs.to_scipy(fs.rmat(16, 8, seed=args.seed)))
    b = fs.CSR.from_scipy(a)
    k.PARALLEL_MIN_FLOPS = 0
    print(f"\n1 vs {args.threads} threads (rule off), R-MAT 16/8 row samples, load {os.getloadavg()[0]:.2f}")
    print(f"{'rows/k':>7s} {'flops':>9s} {'1t ms':>8s} {f'{args.threads}t ms':>8s} {'1t/Nt':>6s} {'cpu Nt/1t':>9s}")
    for step in (4096, 2048, 1024, 512, 256, 128, 64, 32, 16, 8, 4):
        left = fs.CSR.from_scipy(_csr(a[::step]))
        flops = int(np.diff(a.indptr)[left.indices].sum())
        fns = {"1": lambda: k.spgemm_trusted(left, b, threads=1),
               "n": lambda: k.spgemm_trusted(left, b, threads=args.threads)}
        for fn in fns.values():
            fn()
        reps = max(args.repeats, 5) * (8 if flops < 1 << 20 else 1)
        wall = interleaved_min(fns, reps)
        cpu = interleaved_min(fns, reps, clock=time.process_time)
        print(f"{step:7d} {flops:9d} {_ms(wall['1']):>8s} {_ms(wall['n']):>8s} {wall['1'] / wall['n']:6.2f} "
              f"{cpu['n'] / max(cpu['1'], 1e-9):9.2f}", flush=True)


def workers_report(args: argparse.Namespace) -> None:
    """Where the ``--threads``-thread kernel loses against ``threads`` times one thread, per
    product above 10M multiply-adds (the kernel alone, ``spgemm_trusted`` with the flops
    counted once; the run with the lowest wall time of ``--repeats`` rounds): from the cycle
    stamps each worker leaves in ``spgemm.LAST_TRACE``, the late start of the last worker to
    begin, each worker's busy time, the balance (longest / mean busy time), the contention
    (sum of busy times / the one-thread busy time: the work the threads add by sharing caches,
    memory and cores) and the time outside the kernel (partition, buffers, trim)."""
    from numba import njit

    from flexsparse.kernels.cpu import spgemm as k
    from flexsparse.kernels.cpu._spgemm_rows import cycles

    stamp = njit(lambda: cycles())
    c0, t0 = stamp(), time.perf_counter()
    time.sleep(0.2)
    per_ms = (stamp() - c0) / (time.perf_counter() - t0) / 1e3
    print(f"\n# {args.threads} threads vs 1, kernel alone, best of {args.repeats} rounds, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'matrix':30s} {'1t ms':>7s} {'Nt ms':>7s} {'1t/Nt':>6s} {'late ms':>7s} {'busy ms':>15s} "
          f"{'balance':>7s} {'content.':>8s} {'outside 1t/Nt ms':>16s}")
    only = [s for s in args.only.split(",") if s]
    for make in build_suite(args.quick, args.flop_cap, args.seed):
        case = make()
        if case is None or (only and not any(case.name.startswith(o) for o in only)):
            continue
        a, b = fs_csr(case.a), fs_csr(case.b)
        flops, total = k.count_flops(a, b)
        if total <= 1e7:
            continue
        best: dict[int, tuple] = {}
        for _ in range(args.repeats):
            for th in (1, args.threads):
                t0 = time.perf_counter()
                k.spgemm_trusted(a, b, k._rule_auto, 0, False, th, (flops, total))
                wall = (time.perf_counter() - t0) * 1e3
                tr = k.LAST_TRACE
                if wall < best.get(th, (np.inf,))[0]:
                    best[th] = (wall, (tr[:, 5] - tr[:, 4]) / per_ms, (tr[:, 4].max() - tr[:, 4].min()) / per_ms,
                                (tr[:, 5].max() - tr[:, 4].min()) / per_ms)
        (w1, b1, _, s1), (wn, bn, late, sn) = best[1], best[args.threads]
        print(f"{case.name:30s} {w1:7.1f} {wn:7.1f} {w1 / wn:6.2f} {late:7.2f} "
              f"{'/'.join(f'{x:.1f}' for x in bn):>15s} {bn.max() / bn.mean():7.2f} {bn.sum() / b1[0]:8.2f} "
              f"{w1 - s1:7.1f}/{wn - sn:.1f}", flush=True)


def fs_csr(m):
    import flexsparse as fs

    return fs.CSR.from_scipy(_csr(m))


def summarize(rows: list[dict], args: argparse.Namespace) -> None:
    if not rows:
        print("no case ran")
        return
    ratios = [r["ratio"] for r in rows]
    within = sum(x <= 1.0 for x in ratios)
    ones = [r["ratio_1t"] for r in rows]
    scal = [r["speedup"] for r in rows if r["speedup"] is not None]
    rss = [r["rss"] for r in rows if r["rss"] is not None]
    print()
    print(f"einsum vs best peer: geomean {geomean(ratios):.3f}x, <= 1.0x on {within}/{len(rows)} "
          f"({100 * within / len(rows):.0f} %)  [targets: geomean <= 0.8, >= 80 %]")
    print(f"A @ B vs best peer: geomean {geomean([r['ratio_mm'] for r in rows]):.3f}x")
    print(f"one thread vs SciPy: geomean {geomean(ones):.3f}x, worst {max(ones):.2f}x "
          f"({rows[int(np.argmax(ones))]['name']})  [target: every matrix <= 1.0]")
    if scal:
        print(f"{args.threads} threads over 1 (> {SCALING_MIN_FLOPS / 1e6:.0f}M multiply-adds): "
              f"min {min(scal):.2f}x, geomean {geomean(scal):.2f}x  [target >= 1.8]")
    for peer in ("graphblas", "mkl"):
        ps = [(r["speedup"], r["peer_speedup"][peer]) for r in rows if peer in r.get("peer_speedup", {})]
        if ps:
            print(f"{peer} {args.threads} threads over 1, same products and rounds: geomean "
                  f"{geomean([p for _, p in ps]):.2f}x, min {min(p for _, p in ps):.2f}x (flexsparse on "
                  f"the same products: geomean {geomean([f for f, _ in ps]):.2f}x)")
    if rss:
        print(f"peak RSS growth / (inputs + output): max {max(rss):.2f}  [target <= 1.5]")
    c1 = [r["cpu_1t_scipy"] for r in rows]
    print(f"CPU time, one thread each: flexsparse / SciPy geomean {geomean(c1):.3f}x, worst {max(c1):.2f}x; "
          f"flexsparse / best one-thread peer geomean {geomean([r['cpu_1t_best'] for r in rows]):.3f}x")
    big = [r["cpu_nt_1t"] for r in rows if r["speedup"] is not None]
    if big:
        print(f"CPU time of {args.threads} threads / 1 thread (> {SCALING_MIN_FLOPS / 1e6:.0f}M multiply-adds): "
              f"geomean {geomean(big):.2f}, max {max(big):.2f} (an idle machine's speed-up is at most "
              f"{args.threads}x over this)")
    print("\n| matrix | flops | nnz(C) | max row A / C | flexsparse einsum ms | flexsparse `@` ms | SciPy ms | "
          "GraphBLAS ms | MKL ms | einsum / best | 1 thread / SciPy | 2t / 1t | RSS growth | "
          "CPU 1t / SciPy | CPU 1t / best 1t peer | CPU 2t / 1t |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["times"]
        sp_ = "" if r["speedup"] is None else f"{r['speedup']:.2f}"
        rs = "" if r["rss"] is None else f"{r['rss']:.2f}"
        print(f"| {r['name']} | {r['flops']:.3g} | {r['nnz_c']:,} | {r['max_row_a']:,} / {r['max_row_c']:,} | "
              f"{_ms(t['fs_einsum'])} | {_ms(t['fs_matmul'])} | {_ms(t.get('scipy'))} | "
              f"{_ms(t.get('graphblas'))} | {_ms(t.get('mkl'))} | **{r['ratio']:.2f}** | {r['ratio_1t']:.2f} | "
              f"{sp_} | {rs} | {r['cpu_1t_scipy']:.2f} | {r['cpu_1t_best']:.2f} | {r['cpu_nt_1t']:.2f} |")
    print(f"| geomean | | | | | | | | | **{geomean(ratios):.2f}** | {geomean(ones):.2f} | "
          f"{geomean(scal) if scal else float('nan'):.2f} | | {geomean(c1):.2f} | "
          f"{geomean([r['cpu_1t_best'] for r in rows]):.2f} | "
          f"{geomean([r['cpu_nt_1t'] for r in rows if r['speedup'] is not None]):.2f} |")


if __name__ == "__main__":
    sys.exit(main())
