"""``stats.json`` and the summary table of an evaluation.

``stats_dict`` turns an :class:`~flexsparse.model.sparseloop.engine.Evaluation` into plain JSON:
totals (``cycles``, ``energy_uJ``, ``computes``, ``utilization``...) and, per storage level,
``pJ_per_compute``, cycles and, per data-space, the reads/fills/updates split into algorithmic,
actual, gated and skipped, plus metadata (format) traffic per rank. ``summary_table`` renders the
same as a rich table; ``table_console`` gives a console that never truncates a table when the
output is not a terminal (files, pipes, CI logs). Cost: O(levels * data-spaces).
"""

from __future__ import annotations

import sys
from typing import Any, Optional

__all__ = ["stats_dict", "summary_table", "table_console"]

_WIDE = 240   # columns used when writing to a file or pipe: wide enough for every model table


def table_console(file: Any = None, width: Optional[int] = None):
    """A rich console; outside a terminal it is wide enough that tables are never cut."""
    from rich.console import Console
    stream = file if file is not None else sys.stdout
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    if width is None and not is_tty:
        width = _WIDE
    return Console(file=file, width=width, soft_wrap=False)


def stats_dict(ev, spec=None) -> dict[str, Any]:
    """JSON-ready statistics of one evaluation."""
    pj = ev.pj_per_compute()
    out: dict[str, Any] = {
        "cycles": int(ev.cycles), "energy_uJ": ev.energy_uJ, "computes": float(ev.computes),
        "algorithmic_computes": float(ev.algorithmic_computes), "gated_computes": float(ev.gated_computes),
        "skipped_computes": float(ev.skipped_computes), "utilization": ev.utilization,
        "compute": {"energy_pJ": ev.compute_energy_pj, "cycles": int(ev.compute_cycles),
                    "pJ_per_compute": pj["compute"]},
        "pJ_per_compute_total": pj["Total"],
        "levels": {},
        "mapping": ev.mapping_text,
    }
    for lv in ev.levels:
        out["levels"][lv.name] = {"pJ_per_compute": pj[lv.name], "energy_pJ": lv.energy_pj, "cycles": int(lv.cycles),
                                  "bandwidth_throttling": lv.slowdown,
                                  "dataspaces": {k: _clean(v) for k, v in lv.dataspaces.items()}}
    if spec is not None:
        notes = list(getattr(spec.sparse, "warnings", []))
        if spec.default_energy_levels:
            notes.append("no ERT entry, default energies used for: " + ", ".join(spec.default_energy_levels))
        out["warnings"] = notes
    return out


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item"):
        return v.item()
    return v


def summary_table(ev, title: str = ""):
    """Rich table: one row per level (compute first) with energy, pJ/compute and cycles."""
    from rich.table import Table
    pj = ev.pj_per_compute()
    t = Table(title=title or None)
    for h in ("level", "energy (uJ)", "pJ/compute", "cycles", "throttling", "reads (actual)", "fills (actual)",
              "updates (actual)", "metadata reads"):
        t.add_column(h, justify="left" if h == "level" else "right", no_wrap=True)
    t.add_row("compute", f"{ev.compute_energy_pj / 1e6:.4g}", f"{pj['compute']:.4g}",
              f"{ev.compute_cycles}", "", "", "", "", "")
    for lv in ev.levels:
        acts = {a: sum(d[a]["actual"] for d in lv.dataspaces.values()) for a in ("reads", "fills", "updates")}
        md = sum(sum(x[0] + x[1] for x in d.get("metadata", {}).get("random_read", [])) for d in lv.dataspaces.values())
        t.add_row(lv.name, f"{lv.energy_pj / 1e6:.4g}", f"{pj[lv.name]:.4g}", f"{lv.cycles}", f"{lv.slowdown:.3g}",
                  f"{acts['reads']:.4g}", f"{acts['fills']:.4g}", f"{acts['updates']:.4g}", f"{md:.4g}")
    t.add_row("total", f"{ev.energy_uJ:.4g}", f"{pj['Total']:.4g}", f"{ev.cycles}", "", "", "", "", "",
              style="bold")
    t.caption = (f"computes {ev.computes:.6g} of {ev.algorithmic_computes:.6g} algorithmic "
                 f"(gated {ev.gated_computes:.4g}, skipped {ev.skipped_computes:.4g}); "
                 f"utilization {ev.utilization:.3f}")
    return t
