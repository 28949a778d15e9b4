"""Run a design study and write its JSON, markdown tables and plot (``flexsparse model study``).

``run_study(name, out)`` runs one of ``STUDIES`` (``highlight``, ``tailors``, ``flaash``) with its
sensitivity analysis, writes ``out/<name>.json``, ``out/<name>.md`` (parameters, results,
claims, and for every claim the halved/doubled parameters under which it fails) and
``out/<name>.png``. Markdown tables never truncate (plain text); numbers carry 3-4 significant
digits. Cost: that of the study (HighLight minutes, Tailors minutes with the graphs, FLAASH
seconds), atomic writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flexsparse._util import atomic_write

__all__ = ["STUDIES", "markdown", "run_study"]

STUDIES = ("highlight", "tailors", "flaash")


def _md_table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, bool):
            return "yes" if v else "**no**"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _params_md(params: dict[str, Any]) -> str:
    return _md_table(["parameter", "value"], [[k, v] for k, v in params.items()])


def _sensitivity_md(sens: dict[str, Any] | None) -> str:
    if not sens:
        return "_sensitivity not run_\n"
    out = [f"Variants run: {len(sens['variants'])} (every numeric parameter halved and doubled)."]
    if "claims" in sens:
        rows = []
        for c, v in sens["claims"].items():
            flipped = v["fails_under"] if v["holds_at_base"] else \
                [k for k in sens["variants"] if k not in v["fails_under"]]
            verdict = ("holds under every variant" if v["holds_at_base"] and not flipped else
                       "fails under: " if v["holds_at_base"] else
                       "fails under every variant" if not flipped else "holds under: ")
            rows.append([c, v["holds_at_base"], verdict + (", ".join(flipped) if flipped and verdict.endswith(": ")
                                                           else "")])
        out.append(_md_table(["claim", "holds at base", "halved / doubled parameters"], rows))
    else:
        out.append(f"Holds everywhere: {sens['holds_everywhere']}; fails under: "
                   f"{', '.join(sens['fails_under']) or 'none'}")
    return "\n\n".join(out) + "\n"


def _highlight_md(res: dict[str, Any]) -> str:
    parts = ["## HighLight vs dense, STC and DSTC (EDP of six layers)", "", "Parameters:", "",
             _params_md(res["params"]), ""]
    for act in sorted({r["act_density"] for r in res["rows"]}, reverse=True):
        rows = [r for r in res["rows"] if r["act_density"] == act]
        parts += [f"### activation density {act}", "",
                  _md_table(["degree", "weight density", "dense EDP", "STC / dense", "DSTC / dense",
                             "HighLight / dense", "best", "HighLight / best"],
                            [[r["degree"], r["weight_density"], r["dense"]["edp"],
                              r["stc"]["edp"] / r["dense"]["edp"], r["dstc"]["edp"] / r["dense"]["edp"],
                              r["highlight"]["edp"] / r["dense"]["edp"], r["best"], r["highlight_vs_best"]]
                             for r in rows]), ""]
    conc = res["conclusions"]
    parts += ["### geomean EDP gain of HighLight over the 12 degrees (published: up to 6.4x)", "",
              _md_table(["activation density", "vs dense", "vs STC", "vs DSTC", "best or within 5% at"],
                        [[a, v["geomean_gain"]["dense"], v["geomean_gain"]["stc"], v["geomean_gain"]["dstc"],
                          f"{v['highlight_best_or_within_5pct']}/{v['degrees']}"] for a, v in conc.items()]), "",
              "### claims and their sensitivity", "", _sensitivity_md(res.get("sensitivity"))]
    return "\n".join(parts)


def _tailors_md(res: dict[str, Any]) -> str:
    rows = res["rows"]
    g, pub = res["geomean"], res["published"]
    parts = ["## ExTensor-N / -P / -OB (Tailors + Swiftiles) on A @ A", "", "Parameters:", "",
             _params_md(res["params"]), "",
             _md_table(["matrix", "n", "nnz(A)", "nnz(A@A)", "tile N", "tile P", "tile OB",
                        "OB tiles overflowing", "OB data overflowing", "speedup vs N", "speedup vs P",
                        "energy gain vs N", "energy gain vs P"],
                       [[r["name"], r["n"], r["nnz"], r.get("nnz_Z", ""), r["tile_edges"]["N"], r["tile_edges"]["P"],
                         r["tile_edges"]["OB"], r["OB"]["tiles_overflowing"], r["OB"]["overflow_fraction"],
                         r["speedup_vs_N"], r["speedup_vs_P"], r["energy_vs_N"], r["energy_vs_P"]] for r in rows]),
             "", _md_table(["", "speedup vs N", "speedup vs P", "energy gain vs N", "energy gain vs P"],
                           [["geomean (this model)", g["speedup_vs_N"], g["speedup_vs_P"], g["energy_vs_N"],
                             g["energy_vs_P"]],
                            ["published mean (22 workloads)", pub["speedup_vs_N"], pub["speedup_vs_P"],
                             pub["energy_vs_N"], pub["energy_vs_P"]]]),
             "", "Cycles and energy per design:", "",
             _md_table(["matrix", "design", "edge", "cycles", "energy (uJ)", "tiling tax (words)",
                        "90th pct tile / share"],
                       [[r["name"], k, r[k]["edge"], r[k]["cycles"], r[k]["energy_uJ"], r[k]["tax_words"],
                         r[k]["tile_fill_p90"]] for r in rows for k in ("N", "P", "OB")]),
             "", "### claims and their sensitivity", "", _sensitivity_md(res.get("sensitivity"))]
    for name, alt in (res.get("alternatives") or {}).items():
        ga = alt["geomean"]
        parts += [f"Alternative design choice {name}: geomean speedup vs N {ga['speedup_vs_N']:.4g}, vs P "
                  f"{ga['speedup_vs_P']:.4g}; energy gain vs N {ga['energy_vs_N']:.4g}, vs P {ga['energy_vs_P']:.4g}; "
                  "claims " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in alt["claims"].items()) + "."]
    return "\n".join(parts)


def _flaash_md(res: dict[str, Any]) -> str:
    conc = res["conclusions"]
    parts = ["## FLAASH vs a dense array of equal MACs (TCL layers)", "", "Parameters:", "",
             _params_md(res["params"]), "",
             _md_table(["shape", "density", "nnz (A + B)", "effectual MACs", "FLAASH cycles", "dense cycles",
                        "speedup", "energy gain"],
                       [[r["shape"], r["density"], r["nnz"], r["effectual_macs"], r["flaash_cycles"],
                         r["dense_cycles"], r["speedup_vs_dense"], r["energy_gain_vs_dense"]] for r in res["rows"]]),
             "", _md_table(["shape", "faster than dense", "speedup grows as density falls", "linear in nnz",
                            "R^2", "published speedup vs software PyTorch (context only)"],
                           [[k, v["faster_than_dense"], v["speedup_grows_as_density_falls"], v["linear_in_nnz"],
                             v["linear_r2"], res["published_speedup_vs_software"].get(k, "")]
                            for k, v in conc["per_shape"].items()]),
             "", "### claims and their sensitivity", "", _sensitivity_md(res.get("sensitivity"))]
    return "\n".join(parts)


def markdown(name: str, res: dict[str, Any]) -> str:
    """Markdown report of one study's result."""
    return {"highlight": _highlight_md, "tailors": _tailors_md, "flaash": _flaash_md}[name](res)


def _runner(name: str, data: Path | None, sensitivity: bool) -> Callable[[], dict[str, Any]]:
    if name == "highlight":
        from flexsparse.model.sparseloop.studies import highlight
        return lambda: highlight.study(with_sensitivity=sensitivity)
    if name == "tailors":
        from flexsparse.model.sparseloop.studies import tailors
        return lambda: tailors.study(tailors.shared_graphs(str(data) if data else None) + tailors.generated_graphs(),
                                     with_sensitivity=sensitivity)
    if name == "flaash":
        from flexsparse.model.sparseloop.studies import flaash
        return lambda: flaash.study(with_sensitivity=sensitivity)
    raise ValueError(f"unknown study {name!r}; valid: {', '.join(STUDIES)}")


def run_study(name: str, out: Path, sensitivity: bool = True, data: Path | None = None) -> dict[str, Any]:
    """Run study ``name``; write ``out/<name>.json``, ``.md`` and ``.png``; return the result."""
    from flexsparse.model import plots
    run = _runner(name, data, sensitivity)
    t0 = time.perf_counter()
    res = run()
    res["seconds"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / f"{name}.json", "w") as f:
        json.dump(res, f, indent=1, default=float)
    with atomic_write(out / f"{name}.md", "w") as f:
        f.write(markdown(name, res) + "\n")
    {"highlight": plots.plot_highlight_study, "tailors": plots.plot_tailors_study,
     "flaash": plots.plot_flaash_study}[name](res, out / f"{name}.png")
    return res
