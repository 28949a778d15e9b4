"""Matplotlib figures of the model (Agg backend, imported lazily; written atomically as PNG).

* :func:`plot_edp_vs_sparsity` - EDP of each design across HSS sparsity degrees.
* :func:`plot_speedup` - speedup over a baseline design per workload (grouped bars).
* :func:`plot_flaash` - FLAASH cycles vs density per TCL shape and vs engine count.
* :func:`plot_highlight_study`, :func:`plot_tailors_study`, :func:`plot_flaash_study` - the
  design studies on the Sparseloop engine (``flexsparse model study``): bars carry their
  values, published figures are drawn as labelled reference lines.

Cost: one figure per call, O(points).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from flexsparse._util import atomic_write

__all__ = ["plot_dstc", "plot_edp_vs_sparsity", "plot_flaash", "plot_flaash_study", "plot_highlight_study",
           "plot_speedup", "plot_tailors_study"]


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # message for users without the extra
        raise ImportError("plots need matplotlib: pip install flexsparse[plot]") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(fig: Any, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())
    return Path(path)


def _label(ax: Any, bars: Any, fmt: str = "{:.3g}", size: int = 7) -> None:
    """Write each bar's value above it."""
    ax.bar_label(bars, labels=[fmt.format(b.get_height()) for b in bars], fontsize=size, padding=1, rotation=90)


def _refline(ax: Any, y: float, text: str, color: str = "crimson") -> None:
    """A dashed horizontal reference line with its label at the right end."""
    ax.axhline(y, color=color, linestyle="--", linewidth=1)
    ax.annotate(text, xy=(1.0, y), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                textcoords="offset points", ha="right", va="bottom", fontsize=8, color=color,
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 1.0})


def _logaxis(ax: Any, headroom: float = 2.5) -> None:
    """Log y axis with plain-number ticks and room above the tallest bar for its label."""
    from matplotlib.ticker import FuncFormatter, LogLocator
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * headroom)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))


def _legend_outside(ax: Any) -> None:
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0.0)


def _grouped(ax: Any, groups: list[str], series: dict[str, list[float]], fmt: str = "{:.3g}") -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, vals) in enumerate(series.items()):
        bars = ax.bar([j + i * width for j in range(len(groups))], vals, width, label=name)
        _label(ax, bars, fmt)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))], groups, rotation=30, ha="right", fontsize=8)


def plot_highlight_study(res: dict[str, Any], path: str | Path) -> Path:
    """``res`` from ``studies.highlight.study``: EDP over dense per degree (one panel per activation
    density) and the geomean EDP gain of HighLight over each baseline, with the published 6.4x."""
    plt = _plt()
    acts = sorted({r["act_density"] for r in res["rows"]}, reverse=True)
    fig, axes = plt.subplots(len(acts) + 1, 1, figsize=(12, 3.6 * (len(acts) + 1)))
    for ax, act in zip(axes, acts):
        rows = [r for r in res["rows"] if r["act_density"] == act]
        degs = [f"{r['degree']}\n({1 - r['weight_density']:.0%})" for r in rows]
        series = {d: [r[d]["edp"] / r["dense"]["edp"] for r in rows] for d in ("stc", "dstc", "highlight")}
        _grouped(ax, degs, series)
        _refline(ax, 1.0, "dense", "gray")
        _logaxis(ax)
        ax.set_ylabel("EDP / dense EDP\n(lower is better)")
        ax.set_title(f"activation density {act}: EDP relative to the dense design per weight HSS degree")
        _legend_outside(ax)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    ax = axes[-1]
    conc = res["conclusions"]
    groups = [f"act {a}" for a in conc]
    series = {f"vs {b}": [conc[a]["geomean_gain"][b] for a in conc] for b in ("dense", "stc", "dstc")}
    _grouped(ax, groups, series, "{:.2f}x")
    _refline(ax, 6.4, "HighLight paper: up to 6.4x geomean EDP gain")
    _refline(ax, 1.0, "parity", "gray")
    _logaxis(ax, 1.6)
    ax.set_ylabel("geomean EDP gain of HighLight (x)")
    ax.set_title("HighLight's geomean EDP gain over the 12 degrees (above 1: HighLight better)")
    _legend_outside(ax)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_tailors_study(res: dict[str, Any], path: str | Path) -> Path:
    """``res`` from ``studies.tailors.study``: speedup and energy gain of ExTensor-OB over -N and
    -P per matrix, with the published averages (52.7x / 2.3x speedup, 22.5x / 2.5x energy)."""
    plt = _plt()
    rows = res["rows"]
    names = [r["name"] for r in rows] + ["geomean"]
    g = res["geomean"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.5))
    _grouped(a1, names, {"OB vs N": [r["speedup_vs_N"] for r in rows] + [g["speedup_vs_N"]],
                         "OB vs P": [r["speedup_vs_P"] for r in rows] + [g["speedup_vs_P"]]}, "{:.3g}x")
    _refline(a1, 52.7, "Tailors paper: 52.7x over N (mean)")
    _refline(a1, 2.3, "Tailors paper: 2.3x over P (mean)", "darkorange")
    a1.set_title("speedup of ExTensor-OB (Tailors + Swiftiles)")
    _grouped(a2, names, {"OB vs N": [r["energy_vs_N"] for r in rows] + [g["energy_vs_N"]],
                         "OB vs P": [r["energy_vs_P"] for r in rows] + [g["energy_vs_P"]]}, "{:.3g}x")
    _refline(a2, 22.5, "Tailors paper: 22.5x over N (mean)")
    _refline(a2, 2.5, "Tailors paper: 2.5x over P (mean)", "darkorange")
    a2.set_title("energy gain of ExTensor-OB")
    for a in (a1, a2):
        _refline(a, 1.0, "parity", "gray")
        _logaxis(a)
        a.set_ylabel("x (above 1: OB better)")
        a.legend(fontsize=8, loc="upper left")
        a.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_flaash_study(res: dict[str, Any], path: str | Path) -> Path:
    """``res`` from ``studies.flaash.study``: FLAASH speedup over the dense array per density and
    cycles vs operand nonzeros per TCL shape."""
    plt = _plt()
    rows = res["rows"]
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    dens = sorted({r["density"] for r in rows})
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.5))
    _grouped(a1, [f"{d:.1%}" for d in dens],
             {s: [next(r["speedup_vs_dense"] for r in rows if r["shape"] == s and r["density"] == d) for d in dens]
              for s in shapes}, "{:.3g}x")
    _refline(a1, 1.0, "parity", "gray")
    _logaxis(a1)
    a1.set_xlabel("operand density")
    a1.set_ylabel("speedup over a dense array of equal MACs (x)")
    a1.set_title("FLAASH vs dense (same engine count, bandwidths, DRAM)")
    a1.legend(fontsize=8, loc="upper right")
    a1.grid(True, axis="y", which="both", alpha=0.3)
    for s in shapes:
        sel = sorted((r for r in rows if r["shape"] == s), key=lambda r: r["nnz"])
        r2 = res["conclusions"]["per_shape"][s]["linear_r2"]
        a2.plot([r["nnz"] for r in sel], [r["flaash_cycles"] for r in sel], "o-", label=f"{s} (R^2 {r2:.3f})")
        for r in sel:
            a2.annotate(f"{r['flaash_cycles']:.0f}", (r["nnz"], r["flaash_cycles"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    a2.set_xlabel("operand nonzeros (A + B)")
    a2.set_ylabel("FLAASH cycles")
    a2.set_title("FLAASH time vs nonzeros (linear fit R^2 in the legend)")
    a2.legend(fontsize=8)
    a2.grid(True, alpha=0.3)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_edp_vs_sparsity(sweep: dict[str, Any], path: str | Path) -> Path:
    """``sweep`` from :func:`flexsparse.model.validation.highlight_sweep`; EDP normalised to dense."""
    plt = _plt()
    rows = sorted(sweep["rows"], key=lambda r: r["sparsity"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for d in rows[0]["edp"]:
        ax.plot([r["sparsity"] * 100 for r in rows], [r["edp"][d] / r["edp"]["dense"] for r in rows], "o-", label=d)
    ax.set_yscale("log")
    ax.set_xlabel("weight sparsity degree (%), HSS 4:H1 -> G0:4")
    ax.set_ylabel("EDP / dense EDP (lower is better)")
    ax.set_title(f"EDP vs sparsity on {sweep['workload']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_speedup(table: dict[str, dict[str, float]], path: str | Path, title: str = "speedup over dense") -> Path:
    """``table[workload][design] = speedup``: grouped bars, one group per workload."""
    plt = _plt()
    workloads = list(table)
    designs = list(next(iter(table.values()))) if table else []
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 * len(workloads) + 2), 4))
    width = 0.8 / max(1, len(designs))
    for i, d in enumerate(designs):
        bars = ax.bar([j + i * width for j in range(len(workloads))], [table[w][d] for w in workloads], width, label=d)
        _label(ax, bars)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(workloads))], workloads, rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("speedup (x)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_flaash(sweep: dict[str, Any], path: str | Path) -> Path:
    """``sweep`` from :func:`flexsparse.model.validation.flaash_sweep`: cycles vs density and vs engines."""
    plt = _plt()
    rows = sweep["rows"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for shape in sorted({r["shape"] for r in rows}):
        sel = sorted((r for r in rows if r["shape"] == shape and r["engines"] == 128), key=lambda r: r["density"])
        a1.plot([r["density"] * 100 for r in sel], [r["cycles"] for r in sel], "o-", label=shape)
        top = max(r["density"] for r in rows)
        sel = sorted((r for r in rows if r["shape"] == shape and r["density"] == top), key=lambda r: r["engines"])
        a2.plot([r["engines"] for r in sel], [r["cycles"] for r in sel], "o-", label=f"{shape} @ {top:.0%}")
    a1.set_xlabel("density (%)")
    a1.set_ylabel("cycles (128 engines)")
    a1.set_title("FLAASH time vs density")
    a2.set_xscale("log", base=2)
    a2.set_yscale("log")
    a2.set_xlabel("engines")
    a2.set_ylabel("cycles")
    a2.set_title("FLAASH time vs engine count")
    for a in (a1, a2):
        a.grid(True, alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_dstc(table: dict[str, Any], path: str | Path) -> Path:
    """``table`` from :func:`flexsparse.model.validation.dstc_table`: model vs published cycles."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for b, marker in ((1.0, "o"), (0.4, "s")):
        rows = sorted((r for r in table["rows"] if r["b"] == b), key=lambda r: r["a"])
        ax.plot([r["a"] for r in rows], [r["published"] for r in rows], marker + "-", label=f"published, B={b}")
        ax.plot([r["a"] for r in rows], [r["model"] for r in rows], marker + "--", label=f"model, B={b}")
    ax.set_xlabel("A density")
    ax.set_ylabel("cycles (dense corner calibrated to 4600)")
    ax.set_title(f"DSTC 4096^3: max |error| {table['max_abs_error']:.1%}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    out = _save(fig, path)
    plt.close(fig)
    return out
