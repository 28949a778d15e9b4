"""Markdown and rich tables of the artifact comparison (used by ``flexsparse model artifact``).

One section per setup: the pass counts against the targets (table7 within 5%; fig15 and fig12
within 10% on at least 90% of cases, per-level pJ/compute within 10% where the reference is at
least 0.1 pJ), then one row per case with model and reference cycles and energy, their errors
and the worst per-level pJ/compute error. Cost: O(cases * levels).
"""

from __future__ import annotations

from typing import Any

from flexsparse.model.sparseloop.artifact import summarize

__all__ = ["TOLERANCES", "artifact_tables"]

TOLERANCES = {"table7": 0.05, "fig15": 0.10, "fig12": 0.10}
_TITLES = {"table7": "Table 7: Eyeriss (AlexNet conv1-5), dense and sparse-IA",
           "fig15": "Figure 15: TC / STC / STC-flexible / dual-compressed STC / DSTC on ResNet-50 layers",
           "fig12": "Figure 12: Eyeriss v2 PE on sparse MobileNet (uniform and actual-data densities)"}


def _pct(x: float) -> str:
    return f"{x * 100:+.3f}%"


def _worst_level(r: dict[str, Any]) -> tuple[str, float]:
    best = ("-", 0.0)
    for name, v in r["levels"].items():
        if v["reference"] >= 0.1 and v["error"] is not None and abs(v["error"]) >= abs(best[1]):
            best = (name, v["error"])
    return best


def artifact_tables(results: dict[str, list[dict[str, Any]]]) -> tuple[str, list]:
    """(markdown text, rich tables) for the comparison results of each setup."""
    from rich.table import Table
    md: list[str] = []
    tables = []
    for setup, rows in results.items():
        tol = TOLERANCES.get(setup, 0.10)
        s = summarize(rows, tol)
        head = (f"{s['cycles_and_energy_within']}/{s['cases']} cases with cycles and energy within "
                f"{tol:.0%}; max |error| cycles {s['max_cycles_error']:.2e}, energy {s['max_energy_error']:.2e}; "
                f"per-level pJ/compute (reference >= 0.1 pJ): {s['levels_within']}/{s['levels_checked']} within "
                f"{tol:.0%}, max |error| {s['max_level_error']:.2e}")
        md += [f"### {_TITLES.get(setup, setup)}", "", head, "",
               "| case | cycles (model) | cycles (Sparseloop) | error | energy uJ (model) | energy uJ (Sparseloop) "
               "| error | worst level pJ/compute error |",
               "|---|---:|---:|---:|---:|---:|---:|---|"]
        t = Table(title=f"{_TITLES.get(setup, setup)}\n{head}", title_justify="left")
        for h in ("case", "cycles", "ref cycles", "err", "energy uJ", "ref uJ", "err", "worst level"):
            t.add_column(h, justify="left" if h in ("case", "worst level") else "right", no_wrap=True)
        for r in rows:
            lvl, err = _worst_level(r)
            worst = f"{lvl} {_pct(err)}"
            md.append(f"| {r['case']} | {r['cycles']} | {r['ref_cycles']} | {_pct(r['cycles_error'])} | "
                      f"{r['energy_uJ']:.2f} | {r['ref_energy_uJ']:.2f} | {_pct(r['energy_error'])} | {worst} |")
            t.add_row(r["case"], str(r["cycles"]), str(r["ref_cycles"]), _pct(r["cycles_error"]),
                      f"{r['energy_uJ']:.2f}", f"{r['ref_energy_uJ']:.2f}", _pct(r["energy_error"]), worst)
        md.append("")
        tables.append(t)
    return "\n".join(md) + "\n", tables


def dstc_fig13_table(res: dict[str, Any]) -> tuple[str, Any]:
    """(markdown, rich table) of :func:`~flexsparse.model.sparseloop.artifact.dstc_fig13`."""
    from rich.table import Table
    head = (f"DSTC 4096^3 latency normalised to dense vs the DSTC paper (digitised in the artifact): "
            f"average accuracy {res['average_accuracy']:.1%} (artifact's formula)")
    md = [f"### Figure 13: {head}", "", "| A density | B density | cycles (model) | model / dense | "
          "DSTC paper / dense | error |", "|---:|---:|---:|---:|---:|---:|"]
    t = Table(title=head, title_justify="left")
    for h in ("A", "B", "cycles", "model/dense", "paper/dense", "err"):
        t.add_column(h, justify="right", no_wrap=True)
    for r in res["rows"]:
        md.append(f"| {r['A_density']} | {r['B_density']} | {r['cycles']} | {r['model']:.3f} | "
                  f"{r['reference']:.3f} | {_pct(r['error'])} |")
        t.add_row(str(r["A_density"]), str(r["B_density"]), str(r["cycles"]), f"{r['model']:.3f}",
                  f"{r['reference']:.3f}", _pct(r["error"]))
    return "\n".join(md) + "\n", t
