"""Bounded-memory SpGEMM: conservative vs prescient vs overbook (Swiftiles + Tailors) vs unbounded.

Problems:
  * ``hepth``: ``A @ A`` of the SNAP collaboration graph ca-HepTh (``../shared/data``;
    a generated power-law graph of the same size when the file is absent, said so);
  * ``frostt4d``: a FROSTT-like power-law 4-D tensor ``X[i,j,k,l]`` (``flexsparse.random``),
    self-contracted over modes (2,3): ``C[(i,j),(i',j')] = sum_kl X[i,j,k,l] X[i',j',k,l]``,
    i.e. ``X_(01) @ X_(01)^T`` after matricising modes (0,1) x (2,3).

The limit is 1/8 of the unbounded peak working set (the working-set formula of
``flexsparse.tiling.workingset`` on the whole product). Every run happens in a fresh
SUBPROCESS that first loads the data and compiles the kernels on a tiny product; its
resident size at that point is the fixed baseline (interpreter + libraries + compiled code +
operands), reported separately, and the peak growth is the run's resident high-water mark
minus that baseline. The high-water mark is Linux's VmHWM, reset just before the run via
/proc/self/clear_refs (the data generation's transient peak would otherwise hide the run's
peak in ``ru_maxrss``); elsewhere ``ru_maxrss`` is used (the JSON says which). Tiled runs
write their result to a temporary directory (``out=``) so the output does not accumulate
in memory; the unbounded run holds its result (that is its working set). Times come from a
second, in-memory run of each strategy (no disk writes).

Run: ``python benchmarks/bench_tiling.py [--quick] [--no-plot]``. Prints a table and saves
``benchmarks/results/tiling.png``. Timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import power_law_graph

from flexsparse import _rss

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
STRATEGIES = ("unbounded", "unbounded-mt", "conservative", "prescient", "overbook")


# ----------------------------------------------------------------------------- problems
def _powerlaw_graph(n: int, nnz: int, seed: int = 0):
    """Symmetric 0/1 power-law graph (``flexsparse.random``, alpha 0.8) as a SciPy CSR matrix."""
    import scipy.sparse as sp

    return sp.csr_matrix(power_law_graph(n, nnz, alpha=0.8, seed=seed, values="ones"))


def _frostt_like(shape: tuple[int, ...], nnz: int, alpha: float, seed: int = 0):
    """Power-law 4-D tensor (``flexsparse.random``, per-mode popularity ~ rank**-alpha),
    matricised (0,1) x (2,3); returns ``(A, A.T)`` as SciPy CSR matrices."""
    import scipy.sparse as sp

    import flexsparse as fs

    x = fs.random(shape, nnz=nnz, seed=seed, distribution="powerlaw", alpha=alpha)
    i, j, k, l = x.coords.astype(np.int64)
    vals = x.data + 0.5
    a = sp.csr_matrix((vals, (i * shape[1] + j, k * shape[3] + l)),
                      shape=(shape[0] * shape[1], shape[2] * shape[3]))
    return a, a.T.tocsr()


def load_problem(name: str, quick: bool):
    """``(A, B, description)`` for a problem name."""
    if name == "hepth":
        path = DATA / "ca-HepTh.mat"
        if path.exists():
            import scipy.io
            a = scipy.io.loadmat(path)["Problem"][0, 0]["A"].tocsr().astype(np.float64)
            desc = "ca-HepTh A@A"
        else:
            a = _powerlaw_graph(9877, 26000)
            desc = "generated power-law graph A@A (ca-HepTh.mat absent)"
        return a, a, desc
    if name == "frostt4d":
        shape, nnz = ((200, 150, 60, 50), 60_000) if quick else ((400, 300, 100, 80), 200_000)
        a, b = _frostt_like(shape, nnz, 0.4)
        return a, b, f"power-law 4-D {shape} self-contraction over modes (2,3)"
    raise ValueError(f"unknown problem {name!r}")


def unbounded_ws(a, b) -> int:
    """Working set of the whole product as one tile (exact counts)."""
    from flexsparse._util import index_dtype_for, result_dtype
    from flexsparse.tiling.engine import as_operand
    from flexsparse.tiling.strategies import TileStatistics
    from flexsparse.tiling.workingset import ByteModel, tile_bytes
    A, B = as_operand(a, "a"), as_operand(b, "b")
    bm = ByteModel.for_output(result_dtype(A.data.dtype, B.data.dtype), index_dtype_for(b.shape[1]))
    st = TileStatistics(A, B, bm)
    m, k, n = st.shape
    nnz_c = int(st.output_counts(np.arange(m), 1).sum())
    u, nb = st.touched(0, m, 1)
    return int(tile_bytes(bm, m, n, k, A.nnz, u, int(nb[0]), nnz_c))


# ----------------------------------------------------------------------------- child
def _start_peak() -> tuple[str, int]:
    """Begin a peak measurement; returns (method, baseline bytes): VmHWM reset to the current
    resident size (:func:`flexsparse._rss.reset_peak`), or ``ru_maxrss`` where that is not
    possible (growth may then read low)."""
    if _rss.reset_peak():
        return "VmHWM", _rss.resident_bytes()
    return "ru_maxrss", _rss.peak_bytes()


def child(cfg: dict) -> dict:
    """One measured run in this (fresh) process."""
    import gc

    import scipy.sparse as sp

    from flexsparse.tiling import tiled_spgemm
    from flexsparse.tiling.engine import reference_spgemm
    a, b, _ = load_problem(cfg["problem"], cfg["quick"])
    # compile every kernel on a tiny product (not measured)
    t = sp.random(50, 50, density=0.1, format="csr", random_state=0)
    with tempfile.TemporaryDirectory() as d:
        for s in ("conservative", "prescient", "overbook"):
            tiled_spgemm(t, t, memory_limit="4KiB", tiling=s)
            tiled_spgemm(t, t, memory_limit="4KiB", tiling=s, out=os.path.join(d, s)).__getitem__(0).load()
    reference_spgemm(t, t)
    reference_spgemm(t, t, threads=1)
    gc.collect()
    method, base = _start_peak()
    strategy, limit = cfg["strategy"], cfg["limit"]
    res: dict = {"baseline_rss": base, "rss_method": method}
    if strategy.startswith("unbounded"):
        # the tiled kernel is serial: "unbounded" is the engine on 1 thread, "-mt" on all
        t0 = time.perf_counter()
        c = reference_spgemm(a, b, threads=None if strategy.endswith("-mt") else 1)
        res["seconds"] = time.perf_counter() - t0
        res["growth"] = _rss.peak_bytes() - base
        res.update(tiles=1, util=cfg["ws_full"] / limit, sampling=0.0, nnz=int(c.nnz),
                   overbooked=0, passes=1, peak_ws=cfg["ws_full"])
        return res
    from flexsparse.tiling import TilingRefusedError
    try:
        if cfg["mode"] == "disk":
            with tempfile.TemporaryDirectory() as d:
                lazy, rep = tiled_spgemm(a, b, memory_limit=limit, tiling=strategy,
                                         out=os.path.join(d, "c"))
                res["growth"] = _rss.peak_bytes() - base
                res["nnz"] = lazy.nnz
        else:
            c, rep = tiled_spgemm(a, b, memory_limit=limit, tiling=strategy)
            res["nnz"] = int(c.nnz)
    except TilingRefusedError as exc:   # conservative declines products it would take > 20x on
        res.update(refused=str(exc), growth=_rss.peak_bytes() - base, nnz=None, seconds=0.0, sampling=0.0,
                   tiles=0, planned=0, util=0.0, overbooked=0, passes=0, peak_ws=0)
        return res
    res.update(seconds=rep.total_seconds, sampling=rep.sampling_seconds, tiles=rep.tiles,
               planned=rep.planned_tiles, util=rep.mean_utilisation,
               overbooked=rep.overbooked_tiles, passes=rep.passes, peak_ws=rep.peak_ws_bytes)
    return res


def run_child(cfg: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)],
                         capture_output=True, text=True, check=False, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"child {cfg} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main
def _mib(x: float) -> str:
    return f"{x / 2**20:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller problems")
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG")
    ap.add_argument("--problems", default="hepth,frostt4d")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    all_rows = []
    for prob in args.problems.split(","):
        a, b, desc = load_problem(prob, args.quick)
        ws_full = unbounded_ws(a, b)
        limit = ws_full // 8
        print(f"\n== {prob}: {desc}; A {a.shape} nnz {a.nnz}, B {b.shape} nnz {b.nnz}")
        print(f"   unbounded working set {_mib(ws_full)} MiB -> limit {_mib(limit)} MiB (1/8)")
        rows = {}
        for s in STRATEGIES:
            base = {"problem": prob, "quick": args.quick, "strategy": s, "limit": limit,
                    "ws_full": ws_full}
            mem = run_child({**base, "mode": "disk"})
            tim = mem if s.startswith("unbounded") else run_child({**base, "mode": "memory"})
            rows[s] = {**tim, "growth": mem["growth"], "baseline_rss": mem["baseline_rss"],
                       "nnz_disk": mem["nnz"], "rss_method": mem["rss_method"]}
        hdr = (f"{'strategy':<13}{'tiles':>8}{'util%':>8}{'time s':>9}{'sampl%':>8}"
               f"{'overbk':>8}{'passes':>7}{'peakWS MiB':>11}{'RSS+ MiB':>10}{'RSS+/lim':>9}"
               f"{'base MiB':>9}")
        print(hdr)
        for s, r in rows.items():
            if r.get("refused"):
                print(f"{s:<13} declined up front: {r['refused']}")
                continue
            frac = r["sampling"] / r["seconds"] if r["seconds"] else 0.0
            print(f"{s:<13}{r['tiles']:>8}{100 * r['util']:>8.1f}{r['seconds']:>9.3f}"
                  f"{100 * frac:>8.2f}{r['overbooked']:>8}{r['passes']:>7}"
                  f"{_mib(r['peak_ws']):>11}{_mib(r['growth']):>10}{r['growth'] / limit:>9.2f}"
                  f"{_mib(r['baseline_rss']):>9}")
            all_rows.append({"problem": prob, "strategy": s, "limit": limit, **r})
        ob, co, pr, un = (rows[s] for s in ("overbook", "conservative", "prescient", "unbounded"))
        declined = bool(co.get("refused"))
        checks = [
            ("tiled peak RSS growth <= 1.1x limit",
             all(rows[s]["growth"] <= 1.1 * limit for s in ("conservative", "prescient", "overbook"))),
            ("conservative within 20x overbook's time, or declined up front",
             declined or co["seconds"] <= 20 * ob["seconds"]),
            ("overbook tiles <= conservative / 3" + (" (conservative declined)" if declined else ""),
             declined or ob["tiles"] * 3 <= co["tiles"]),
            ("overbook utilisation >= 2x conservative" + (" (conservative declined)" if declined else ""),
             declined or ob["util"] >= 2 * co["util"]),
            ("overbook time <= prescient / 1.5", ob["seconds"] * 1.5 <= pr["seconds"]),
            ("overbook time <= 1.3x unbounded", ob["seconds"] <= 1.3 * un["seconds"]),
            ("overbook sampling < 5% of its time", ob["sampling"] < 0.05 * ob["seconds"]),
            ("all results have the unbounded nnz",
             all(r["nnz"] == un["nnz"] and r["nnz_disk"] == un["nnz"] for r in rows.values()
                 if not r.get("refused"))),
        ]
        print("   (targets compare with 'unbounded' = the flexsparse engine on 1 thread, since the"
              " tiled kernel is serial; 'unbounded-mt' = the engine on all threads)")
        for name, ok in checks:
            print(f"   [{'PASS' if ok else 'FAIL'}] {name}")
        print(f"   peak memory measured with {ob['rss_method']}")
    out_json = ROOT / "benchmarks" / "results" / "tiling.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    from flexsparse._util import atomic_write
    with atomic_write(out_json, "w") as f:
        json.dump(all_rows, f, indent=1)
    if not args.no_plot:
        plot(all_rows, ROOT / "benchmarks" / "results" / "tiling.png")
    return 0


def plot(rows: list[dict], path: Path) -> None:
    """Tiles vs utilisation, time and peak memory per strategy, one row of panels per problem."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: pip install flexsparse[plot]; no plot written")
        return
    from flexsparse._util import atomic_write
    probs = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = plt.subplots(len(probs), 3, figsize=(14, 4 * len(probs)), squeeze=False)
    colors = {"unbounded": "gray", "unbounded-mt": "black", "conservative": "tab:red", "prescient": "tab:blue",
              "overbook": "tab:green"}
    for i, prob in enumerate(probs):
        rs = [r for r in rows if r["problem"] == prob and not r.get("refused")]
        ax = axes[i, 0]
        for r in rs:
            ax.scatter(r["tiles"], 100 * r["util"], color=colors[r["strategy"]], s=60,
                       label=r["strategy"])
        ax.set_xscale("log")
        ax.set_xlabel("tiles executed")
        ax.set_ylabel("mean buffer utilisation (%)")
        ax.set_title(f"{prob}: tiles vs utilisation")
        ax.legend(fontsize=8)
        names = [r["strategy"] for r in rs]
        ax = axes[i, 1]
        samp = [r["sampling"] for r in rs]
        rest = [r["seconds"] - r["sampling"] for r in rs]
        ax.bar(names, rest, color=[colors[n] for n in names], label="execution")
        ax.bar(names, samp, bottom=rest, color="black", alpha=0.5, label="sampling/counting")
        ax.set_ylabel("time (s)")
        ax.set_title(f"{prob}: time (noisy, shared 2-core machine)")
        ax.legend(fontsize=8)
        ax = axes[i, 2]
        ax.bar(names, [r["growth"] / 2**20 for r in rs], color=[colors[n] for n in names])
        ax.axhline(rs[0]["limit"] / 2**20, color="k", ls="--", label="limit")
        ax.axhline(1.1 * rs[0]["limit"] / 2**20, color="k", ls=":", label="1.1 x limit")
        ax.set_yscale("log")
        ax.set_ylabel("peak RSS growth over baseline (MiB)")
        ax.set_title(f"{prob}: measured peak memory")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    print(f"plot saved to {path}")


if __name__ == "__main__":
    sys.exit(main())
