"""Matplotlib figures of the model (Agg backend, imported lazily; written atomically as PNG).

* :func:`plot_edp_vs_sparsity` - EDP of each design across HSS sparsity degrees.
* :func:`plot_speedup` - speedup over a baseline design per workload (grouped bars).
* :func:`plot_flaash` - FLAASH cycles vs density per TCL shape and vs engine count.

Cost: one figure per call, O(points).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from flexsparse._util import atomic_write

__all__ = ["plot_edp_vs_sparsity", "plot_speedup", "plot_flaash", "plot_dstc"]


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
        ax.bar([j + i * width for j in range(len(workloads))], [table[w][d] for w in workloads], width, label=d)
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
