"""Structured sparsity on the CPU: block-sparse, N:M and HSS times dense vs dense BLAS.

Problem: ``W [4096, 4096] @ X [4096, 256]``, float32 (the shape of a transformer MLP weight
times a batch of 256 tokens). ``W`` is random normal, pruned by magnitude
(``flexsparse.prune``) or given a random block layout; ``X`` random normal.

Headline rows (targets of flexsparse issue 3):
  * dense BLAS (``np.matmul``) -- the baseline;
  * block 32x32 at 10% of blocks: speedup over dense (target >= 5x, i.e. <= 2x the ideal
    ``dense time x density``) and over torch BSR on the CPU (``to_sparse_bsr`` + ``@``,
    target >= 1.5x);
  * N:M 1:4 and HSS 4:6->1:4 (density 1/6): target >= 2x over dense;
  * dense layouts through the classes (all blocks stored; ``prune(W, "dense")``), backend
    ``"auto"``: target <= 1.1x dense time.
Sweep: block sizes 8/16/32/64 over block densities, N:M and HSS patterns, all with the
sparse kernel forced (``backend="sparse"``) so the crossover to dense is visible; the plot
(speedup over dense vs density) goes to ``benchmarks/results/structured_speedup.png`` and
the numbers to ``benchmarks/results/structured.json``.

Timing: each case is timed interleaved with the dense product (best of ``reps`` each), so
the speedup compares runs taken under the same machine load. On a shared 2-core machine
absolute times are noisy; the ratios less so.

Run: ``python benchmarks/bench_structured.py [--quick] [--no-plot] [--size 4096] [--n 256]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import best_pair  # noqa: E402

from flexsparse._util import atomic_write  # noqa: E402
from flexsparse.formats.block import BlockSparse  # noqa: E402
from flexsparse.formats.layouts import make_layout  # noqa: E402
from flexsparse.prune import prune  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def torch_bsr(W: np.ndarray, block: int, X: np.ndarray):
    """Callable running torch's CPU BSR product, or ``None`` without torch."""
    try:
        import torch
    except ImportError:
        return None
    import warnings

    torch.set_num_threads(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tw = torch.from_numpy(W).to_sparse_bsr((block, block))
    tx = torch.from_numpy(X)
    return lambda: tw @ tx


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer sweep points and repetitions")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--size", type=int, default=4096, help="M = K (default 4096)")
    ap.add_argument("--n", type=int, default=256, help="columns of X (default 256)")
    args = ap.parse_args(argv)
    reps = 3 if args.quick else 5
    M = K = args.size
    N = args.n
    rng = np.random.default_rng(0)
    W = rng.standard_normal((M, K)).astype(np.float32)
    X = rng.standard_normal((K, N)).astype(np.float32)
    dense = lambda: W @ X  # noqa: E731
    rows: list[dict] = []

    section = ["headline"]

    def record(name, kind, density, fn, extra=None):
        t, td = best_pair(fn, dense, reps)
        row = dict(name=name, kind=kind, section=section[0], density=float(density), ms=1e3 * t, dense_ms=1e3 * td,
                   speedup=td / t, vs_ideal=t / (td * density) if density else float("nan"))
        row.update(extra or {})
        rows.append(row)
        print(f"{name:<28} density {density:6.3f}  {1e3 * t:8.2f} ms  dense {1e3 * td:7.2f} ms  "
              f"speedup {td / t:5.2f}x  time/ideal {row['vs_ideal']:5.2f}"
              + "".join(f"  {k} {v:.2f}" for k, v in (extra or {}).items()), flush=True)
        return row

    print(f"W [{M}, {K}] @ X [{K}, {N}] float32; best of {reps}, interleaved with dense; "
          "shared 2-core machine (noisy)\n--- headline ---")
    # block 32x32 at 10%
    grid = (-(-M // 32), -(-K // 32))
    B = BlockSparse.from_dense(W, 32, layout=make_layout("random", grid, 0.1, seed=0))
    B.backend = "sparse"
    tb = torch_bsr(B.todense(), 32, X)
    extra = {}
    if tb is not None:
        t_ours, t_torch = best_pair(lambda: B.matmul(X), tb, reps)
        extra = {"vs_torch_bsr": t_torch / t_ours, "torch_bsr_ms": 1e3 * t_torch}
    record("block 32x32 @10%", "block32", B.block_density, lambda: B.matmul(X), extra)
    for spec in ("1:4", "4:6->1:4"):
        S = prune(W, spec)
        S.backend = "sparse"
        record(f"{'N:M' if '->' not in spec else 'HSS'} {spec}", "nm" if "->" not in spec else "hss",
               S.pattern.density, lambda S=S: S.matmul(X))
    Bd = BlockSparse.from_dense(W, 32, layout=np.ones(grid, bool))
    record("block 32x32 dense (auto)", "dense-layout", 1.0, lambda: Bd.matmul(X))
    Hd = prune(W, "dense")
    record("prune(W,'dense') (auto)", "dense-layout", 1.0, lambda: Hd.matmul(X))
    Bl = BlockSparse.from_dense(W, 32, layout=np.ones(grid, bool))
    record("block dense, linear (auto)", "dense-layout", 1.0, lambda: Bl.linear(X.T))

    print("--- sweep (sparse kernel forced) ---")
    section[0] = "sweep"
    densities = [0.05, 0.1, 0.3, 0.5] if args.quick else [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7]
    blocks = [8, 32] if args.quick else [8, 16, 32, 64]
    for b in blocks:
        g = (-(-M // b), -(-K // b))
        for d in densities:
            S = BlockSparse.from_dense(W, b, layout=make_layout("random", g, d, seed=1))
            S.backend = "sparse"
            record(f"block {b}x{b}", f"block{b}", S.block_density, lambda S=S: S.matmul(X))
    patterns = (["1:8", "1:4", "2:4", "4:6->1:4", "3:4->2:4"] if args.quick else
                ["1:8", "1:4", "2:4", "3:4", "4:7->1:4", "4:6->1:4", "4:5->1:4", "3:4->2:4",
                 "4:6->2:4"])
    for spec in patterns:
        S = prune(W, spec)
        S.backend = "sparse"
        record(f"{'HSS' if '->' in spec else 'N:M'} {spec}", "hss" if "->" in spec else "nm",
               S.pattern.density, lambda S=S: S.matmul(X))

    print("--- crossover (largest swept density where the sparse kernel still beats dense) ---")
    sweep = [r for r in rows if r["section"] == "sweep"]
    for kind in sorted({r["kind"] for r in sweep}):
        pts = sorted((r["density"], r["speedup"]) for r in sweep if r["kind"] == kind)
        wins = [d for d, s in pts if s >= 1.0]
        print(f"{kind:<10} {max(wins) if wins else 'none':>6}   " +
              "  ".join(f"{d:.3f}:{s:.2f}x" for d, s in pts))

    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = dict(M=M, K=K, N=N, dtype="float32", reps=reps, quick=args.quick,
                note="shared 2-core machine; timings noisy")
    with atomic_write(RESULTS / "structured.json", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    if not args.no_plot:
        plot(rows, RESULTS / "structured_speedup.png", meta)
    return 0


def plot(rows, path: Path, meta) -> None:
    """Speedup over dense vs density, one line per block size / family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = [r for r in rows if r["section"] == "sweep"]
    kinds = sorted({r["kind"] for r in rows})
    for kind in kinds:
        pts = sorted((r["density"], r["speedup"]) for r in rows if r["kind"] == kind)
        style = "o-" if kind.startswith("block") else "s"
        ax.plot(*zip(*pts), style, label=kind)
        if not kind.startswith("block"):
            for r in rows:
                if r["kind"] == kind:
                    ax.annotate(r["name"].split(" ", 1)[1], (r["density"], r["speedup"]),
                                fontsize=7, xytext=(3, 3), textcoords="offset points")
    d = np.linspace(0.02, 1, 100)
    ax.plot(d, 1 / d, "k:", lw=1, label="ideal 1/density")
    ax.axhline(1.0, color="grey", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="density (fraction of weights kept)",
           ylabel="speedup over dense BLAS",
           title=f"W[{meta['M']}x{meta['K']}] @ X[{meta['K']}x{meta['N']}], fp32, 2 cores (noisy)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".partial.png")
    fig.savefig(tmp, dpi=110)  # matplotlib writes the file itself; rename makes it atomic
    tmp.replace(path)
    plt.close(fig)
    print(f"plot: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
