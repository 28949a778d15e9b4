"""Structured sparsity on the CPU: block-sparse, N:M and HSS products against dense BLAS.

Target table (``W`` 4096x4096 float32, pruned by magnitude with ``flexsparse.prune`` or
given a random block layout; ``X`` random normal):

* ``W @ X`` for ``X: [4096, 256]``;
* the ``linear`` orientation ``X @ W.T`` for ``X: [B, 4096]``, ``B`` in 1, 8, 64, 256;

for 1:4, 2:4, HSS 4:6->1:4, blocks 32x32 at 10% and blocks 8x8 at 10% of the blocks, with
the sparse kernel forced (``backend="sparse"``). Each case reports the time, the best
dense time of the same orientation measured in the same run (the minimum over NumPy's
BLAS and ``torch`` on the same number of threads: ``W @ X``, ``X @ W.T``, ``(W @ X.T).T``
and ``torch.matmul`` / ``torch.nn.functional.linear``), the speed-up over it and
``time / ideal`` with ``ideal = dense time x density``.

Timing: every case is timed interleaved with its dense baselines (best of ``--reps``
each, after a warm-up), so all ratios compare runs taken under the same machine load; on
a shared machine absolute times are noisy, the ratios less so.

Settle pause (``--settle``, default 0.15 s): before EVERY timed call, dense and sparse
alike, the process sleeps so that no library's leftover spinning threads run into the next
library's call. OpenBLAS's idle workers busy-wait ``2**28`` TSC cycles (its
``thread_timeout``; 0.10 s at 2.6 GHz) after each call, torch's libgomp team 5-8 ms; on
two cores a call started inside that window shares a core with the spinner. Measured
2026-11-30 (two threads, quiet, min / median of 7): HSS 4:6->1:4 ``W @ X`` 13.2 / 16.4 ms
after a 0.2 s pause against 18.4 / 21.5 ms right after NumPy's ``W @ X``; torch's
``matmul`` 48.6 / 55.7 ms against 82.0 / 98.3 ms. Back to back (``--settle 0``, the
method before 2026-11-30) each call is charged with its predecessor's spin, which depends
on the order of the calls, not on the library timed. Every callable gets the same pause,
so the pause favours none of them; each call then starts its own thread team from idle,
the state a call meets in a program that does other work between products. ``--sweep`` adds the
crossover sweep (speed-up vs density for block sizes and N:M/HSS patterns), which sets
``DENSE_CROSSOVER`` in the formats.

Output: a markdown table on stdout, ``benchmarks/results/structured.json`` and
``benchmarks/results/structured.md``.

Run: ``python benchmarks/bench_structured.py [--threads 2] [--reps 7] [--size 4096] [--sweep]
[--clock cpu] [--vs-one-thread] [--settle 0.15]`` (``--threads 1 --clock cpu`` gives ratios
that a busy shared machine barely disturbs; ``--vs-one-thread`` also times every sparse call
on one numba thread, interleaved, to check that the threaded run is never the slower one).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CASES = [("1:4", None), ("2:4", None), ("4:6->1:4", None), ("block:32x32", 0.1), ("block:8x8", 0.1)]
BATCHES = (1, 8, 64, 256)
#: Default pause before each timed call (module docstring): OpenBLAS's idle workers spin
#: 0.10 s after a call here, so 0.15 s leaves every runtime's team asleep.
SETTLE_S = 0.15


def _threads_from_argv(argv) -> int:
    """``--threads`` must be known before NumPy loads OpenBLAS (it reads the env once)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, a in enumerate(argv):
        if a.startswith("--threads"):
            return int(a.split("=", 1)[1] if "=" in a else argv[i + 1])
    return 2


def _command(argv) -> str:
    """The command line, led by the thread and wait-policy variables of the caller's
    environment (read before :func:`main` sets the thread counts itself)."""
    env = [f"{v}={os.environ[v]}" for v in ("OMP_WAIT_POLICY", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                                            "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT",
                                            "MKL_NUM_THREADS") if v in os.environ]
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(env + ["python", "benchmarks/bench_structured.py"] + [shlex.quote(a) for a in args])


def main(argv=None) -> int:
    command, start_load = _command(argv), " / ".join(f"{x:.2f}" for x in os.getloadavg())
    threads = _threads_from_argv(argv)
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)
    import numpy as np

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import run_context

    from flexsparse._util import atomic_write
    from flexsparse.formats.block import BlockSparse
    from flexsparse.formats.layouts import make_layout
    from flexsparse.prune import prune

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7, help="timed runs per case (best is kept)")
    ap.add_argument("--size", type=int, default=4096, help="M = K (default 4096)")
    ap.add_argument("--n", type=int, default=256, help="columns of X for W @ X (default 256)")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)), help="linear batch sizes")
    ap.add_argument("--cases", default=None, help="comma-separated subset, e.g. '1:4,block:8x8'")
    ap.add_argument("--sweep", action="store_true", help="also run the crossover sweep")
    ap.add_argument("--vs-one-thread", action="store_true",
                    help="also time each sparse call on one numba thread, interleaved (column "
                         "'1 thread'): does the threaded run beat the serial one?")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall time, or process CPU time (robust on a shared machine, but only "
                         "meaningful with --threads 1: idle OpenMP threads spin)")
    ap.add_argument("--settle", type=float, default=SETTLE_S,
                    help="seconds of sleep before every timed call, dense and sparse alike, so "
                         "no library's spinning idle threads run into the next call (0: back to "
                         f"back, the method before 2026-11-30; default {SETTLE_S})")
    args = ap.parse_args(argv)
    if args.settle < 0:
        ap.error(f"--settle must be >= 0 seconds, got {args.settle}")
    import numba

    numba.set_num_threads(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # torch is optional: NumPy's BLAS is then the only baseline
        torch = None

    M = K = args.size
    rng = np.random.default_rng(0)
    W = rng.standard_normal((M, K)).astype(np.float32)
    X = rng.standard_normal((K, args.n)).astype(np.float32)
    batches = [int(b) for b in args.batches.split(",") if b]
    Xb = {b: rng.standard_normal((b, K)).astype(np.float32) for b in batches}
    tW = torch.from_numpy(W) if torch is not None else None

    def dense_fns(orient, b=None):
        """Dense baselines of one orientation: name -> callable."""
        if orient == "matmul":
            fns = {"numpy W@X": lambda: W @ X}
            if torch is not None:
                tX = torch.from_numpy(X)
                fns["torch.matmul"] = lambda: torch.matmul(tW, tX)
            return fns
        x = Xb[b]
        fns = {"numpy X@W.T": lambda: x @ W.T, "numpy (W@X.T).T": lambda: (W @ x.T).T}
        if torch is not None:
            tx = torch.from_numpy(x)
            fns["torch linear"] = lambda: torch.nn.functional.linear(tx, tW)
        return fns

    clock = time.perf_counter if args.clock == "wall" else time.process_time

    def timed(fns: dict, reps: int) -> dict:
        """Best-of-``reps`` seconds of each callable, runs interleaved after a warm-up, each
        timed call after the same ``--settle`` pause."""
        for f in fns.values():
            f()
        best = {k: np.inf for k in fns}
        for _ in range(reps):
            for k, f in fns.items():
                if args.settle:
                    time.sleep(args.settle)
                s0, w0 = _cpu_seconds(), time.perf_counter()
                t0 = clock()
                f()
                best[k] = min(best[k], clock() - t0)
                foreign.add(s0, _cpu_seconds(), time.perf_counter() - w0)
        return best

    foreign = _Foreign()

    def one_thread(fn):
        """``fn()`` on one numba thread (NumPy's and torch's thread counts unchanged)."""
        numba.set_num_threads(1)
        try:
            return fn()
        finally:
            numba.set_num_threads(threads)

    def build(spec, density, seed=0):
        if spec.startswith("block"):
            b = int(spec.split(":")[1].split("x")[0])
            grid = (-(-M // b), -(-K // b))
            S = BlockSparse.from_dense(W, b, layout=make_layout("random", grid, density, seed=seed))
        else:
            S = prune(W, spec)
        S.backend = "sparse"
        return S

    def label(spec, density):
        if spec.startswith("block"):
            return f"block {spec.split(':')[1]} @{density:.0%}"
        return ("HSS " if "->" in spec else "N:M ") + spec

    rows = []
    cases = CASES if args.cases is None else [(c, 0.1 if c.startswith("block") else None)
                                              for c in args.cases.split(",")]
    print(f"# W [{M}x{K}] float32, {threads} threads, best of {args.reps}, {args.clock} clock, "
          f"settle {args.settle:g} s; load average {os.getloadavg()[0]:.1f}", flush=True)
    for spec, density in cases:
        S = build(spec, density)
        d = S.density
        for orient, b in [("matmul", None)] + [("linear", b) for b in batches]:
            fn = (lambda S=S: S.matmul(X)) if orient == "matmul" else (lambda S=S, b=b: S.linear(Xb[b]))
            dense = dense_fns(orient, b)
            one = {"sparse 1 thread": lambda fn=fn: one_thread(fn)} if args.vs_one_thread else {}
            t = timed({"sparse": fn, **one, **dense}, args.reps)
            t_sparse = t.pop("sparse")
            t_one = t.pop("sparse 1 thread", None)
            best_name = min(t, key=t.get)
            td = t[best_name]
            row = dict(case=label(spec, density), orient=f"W@X (N={args.n})" if orient == "matmul"
                       else f"linear B={b}", density=d, ms=1e3 * t_sparse, dense_ms=1e3 * td,
                       dense_best=best_name, dense_all={k: 1e3 * v for k, v in t.items()},
                       speedup=td / t_sparse, time_over_ideal=t_sparse / (td * d) if d else float("nan"))
            if t_one is not None:
                row["ms_one_thread"] = 1e3 * t_one
            rows.append(row)
            print(f"{row['case']:<22} {row['orient']:<14} {row['ms']:8.2f} ms  dense {row['dense_ms']:8.2f} ms "
                  f"({best_name})  speed-up {row['speedup']:5.2f}x  time/ideal {row['time_over_ideal']:5.2f}"
                  + (f"  1 thread {1e3 * t_one:8.2f} ms" if t_one is not None else ""), flush=True)

    if args.sweep:
        rows += sweep(build, X, dense_fns, timed, args.reps)

    md = markdown(rows, M, K, args.n, threads, args.reps, args.clock, args.settle)
    md = (run_context(start_load, command) + f"\n- BLAS: NumPy {_numpy_blas(np)}, torch {_torch_blas(torch)}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}\n- {foreign.summary()}\n\n" + md)
    print("\n" + md)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = dict(M=M, K=K, N=args.n, dtype="float32", reps=args.reps, threads=threads, clock=args.clock,
                settle_s=args.settle, foreign_cpu=foreign.fraction(), load=os.getloadavg()[0],
                date=time.strftime("%Y-%m-%d %H:%M"),
                numpy_blas=_numpy_blas(np), torch_blas=_torch_blas(torch))
    with atomic_write(RESULTS / "structured.json", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    with atomic_write(RESULTS / "structured.md", "w") as f:
        f.write(md + "\n")
    return 0


def sweep(build, X, dense_fns, timed, reps):
    """Speed-up of the forced sparse kernel over dense BLAS across densities (crossover)."""
    rows = []
    print("--- crossover sweep (W @ X, sparse kernel forced) ---", flush=True)
    specs = [(f"block:{b}x{b}", d) for b in (8, 32) for d in (0.3, 0.5, 0.7)]
    specs += [(p, None) for p in ("1:8", "2:4", "3:4", "4:6->2:4", "3:4->2:4", "5:8", "6:8")]
    for spec, density in specs:
        S = build(spec, density, seed=1)
        t = timed({"sparse": lambda S=S: S.matmul(X), **dense_fns("matmul")}, reps)
        ts = t.pop("sparse")
        td = min(t.values())
        rows.append(dict(case=f"sweep {spec}" + (f" @{density:.0%}" if density else ""), orient="W@X",
                         density=S.density, ms=1e3 * ts, dense_ms=1e3 * td, speedup=td / ts,
                         time_over_ideal=ts / (td * S.density)))
        print(f"{spec:<14} density {S.density:.3f}  speed-up {td / ts:5.2f}x", flush=True)
    return rows


def markdown(rows, M, K, N, threads, reps, clock="wall", settle=0.0) -> str:
    pause = f"{settle:g} s pause before every timed call" if settle else "calls back to back"
    out = [f"W [{M}x{K}] float32, {threads} threads, best of {reps} ({clock} clock, {pause}), same run "
           "as the dense baseline (best of NumPy/OpenBLAS and torch).", "",
           "| case | orientation | density | time (ms) | best dense (ms) | speed-up | time / ideal |",
           "|---|---|---|---|---|---|---|"]
    one = any("ms_one_thread" in r for r in rows)
    if one:  # --vs-one-thread: the same sparse call on one numba thread, interleaved
        out[-2] += " 1 thread (ms) |"
        out[-1] += "---|"
    for r in rows:
        out.append(f"| {r['case']} | {r['orient']} | {r['density']:.3f} | {r['ms']:.2f} | {r['dense_ms']:.2f} "
                   f"| {r['speedup']:.2f}x | {r['time_over_ideal']:.2f} |"
                   + (f" {r['ms_one_thread']:.2f} |" if "ms_one_thread" in r else (" |" if one else "")))
    return "\n".join(out)


def _cpu_seconds() -> tuple[float, float, float] | None:
    """``(busy CPU seconds of the whole machine, of which steal, this process's CPU seconds)``
    from ``/proc/stat`` (jiffies) and :func:`time.process_time`; ``None`` off Linux."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal
    return busy / tick, v[7] / tick, time.process_time()


class _Foreign:
    """CPU time that other processes (and the hypervisor, as steal) took while calls were
    timed: a quiet run reads ~0. ``/proc/stat`` counts in 10 ms jiffies, so single calls
    are quantised; summed over a run the error averages out."""

    def __init__(self) -> None:
        self.timed = self.other = self.steal = 0.0
        self.ok = True

    def add(self, a, b, wall: float) -> None:
        """One timed call: snapshots ``a`` and ``b`` of :func:`_cpu_seconds`, its wall seconds."""
        if a is None or b is None:
            self.ok = False
            return
        self.timed += wall
        self.other += (b[0] - a[0]) - (b[2] - a[2])
        self.steal += b[1] - a[1]

    def fraction(self) -> float | None:
        return None if not self.ok or self.timed <= 0 else max(self.other, 0.0) / self.timed

    def summary(self) -> str:
        f = self.fraction()
        if f is None:
            return "CPU used by other processes during the timed calls: unknown"
        return (f"CPU used by other processes during the timed calls: {f:.0%} of one core "
                f"(steal {self.steal / self.timed:.0%}; a quiet run reads ~0%)")


def _numpy_blas(np) -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # older NumPy: no dict mode
        return "unknown"


def _torch_blas(torch) -> str:
    if torch is None:
        return "none"
    cfg = torch.__config__.show()
    return "MKL" if "Math Kernel Library" in cfg else "other"


if __name__ == "__main__":
    raise SystemExit(main())
