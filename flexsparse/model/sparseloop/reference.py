"""Parser of ``timeloop-model.stats.txt``, the text report of Timeloop/Sparseloop.

The report lists levels (``=== name ===``) with per-data-space stat blocks (``    Inputs:``
followed by ``key : value`` lines; per-rank format stats span several lines), then a summary
(``Cycles``, ``Energy: X uJ``, ``Utilization``) and a ``pJ/Compute`` table per level. Every
number is read from the file; nothing is typed in by hand. Cost: one pass over the lines.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["parse_stats"]

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _value(text: str) -> Any:
    text = text.strip()
    m = re.fullmatch(rf"({_NUM})\s*(pJ|uJ|words/cycle|fJ|um\^2|mm\^2)?", text)
    if m:
        v = float(m.group(1))
        return int(v) if v.is_integer() and "." not in m.group(1) else v
    return text


def parse_stats(path: str | Path) -> dict[str, Any]:
    """Summary and per-level statistics of one ``timeloop-model.stats.txt``."""
    lines = Path(path).read_text().splitlines()
    out: dict[str, Any] = {"levels": {}, "pj_per_compute": {}, "pj_per_algorithmic_compute": {}}
    level = None
    ds = None
    section = None
    rank_key = None
    table = None
    for raw in lines:
        line = raw.rstrip()
        if not line.strip():
            continue
        m = re.match(r"^=== (.+) ===$", line.strip())
        if m and section != "summary":
            level = out["levels"].setdefault(m.group(1), {"dataspaces": {}})
            ds, rank_key = None, None
            continue
        if line.startswith("Networks"):
            section, level = "networks", None
            continue
        if line.startswith("Operational Intensity Stats"):
            section, level = "oi", None
            continue
        if line.startswith("Summary Stats"):
            section, level = "summary", None
            continue
        if section == "summary":
            if line.startswith("pJ/Compute"):
                table = out["pj_per_compute"]
                continue
            if line.startswith("pJ/Algorithmic-Compute"):
                table = out["pj_per_algorithmic_compute"]
                continue
            m = re.match(r"^\s+(.+?)\s*=\s*(" + _NUM + r")\s*$", line)
            if m and table is not None:
                table[m.group(1).strip()] = float(m.group(2))
                continue
            m = re.match(r"^([A-Za-z/ ()@0-9.*-]+?)\s*[:=]\s*(.+)$", line)
            if m:
                key, val = m.group(1).strip(), m.group(2).strip()
                if key == "Energy":
                    out["energy_uJ"] = float(val.split()[0])
                elif key == "Cycles":
                    out["cycles"] = int(float(val))
                elif key == "Utilization":
                    out["utilization"] = float(val)
                elif key == "Algorithmic Computes":
                    out["algorithmic_computes"] = int(float(val))
                elif key in ("Actual Computes", "Computes"):
                    out["computes"] = int(float(val))
                elif key == "Area":
                    out["area_mm2"] = float(val.split()[0])
            continue
        if level is None or section in ("networks", "oi"):
            continue
        m = re.match(r"^    (\w+)(?: \(Streamed\))?:\s*$", line)
        if m:
            ds = level["dataspaces"].setdefault(m.group(1), {})
            rank_key = None
            continue
        m = re.match(r"^\s+Rank (\d+) \(metadata, payload\): \((\s*" + _NUM + r"),\s*(" + _NUM + r")\)", line)
        if m and ds is not None and rank_key is not None:
            ds.setdefault(rank_key, {})[int(m.group(1))] = (float(m.group(2)), float(m.group(3)))
            continue
        m = re.match(r"^\s+(.+?)\s*:\s*(.*)$", line)
        if m:
            key, val = m.group(1).strip(), m.group(2)
            if ds is not None and raw.startswith("        "):
                if val.strip() == "":
                    rank_key = key
                    ds[key] = {}
                else:
                    ds[key] = _value(val)
                    rank_key = None
            else:
                target = level.setdefault("specs" if ds is None else "other", {})
                target[key] = _value(val)
        elif re.match(r"^\s+(.+?)\s*$", line) and ds is not None:
            key = line.strip()
            if key.endswith(("storage capacity", "(per-instance)")):
                rank_key = key
                ds[key] = {}
    for lv in out["levels"].values():
        for st in lv["dataspaces"].values():
            for act in ("reads", "fills", "updates"):
                dense = st.get(f"Scalar {act} (per-instance)")
                if dense is not None:
                    st.setdefault(f"Algorithmic scalar {act} (per-instance)", dense)
                    st.setdefault(f"Actual scalar {act} (per-instance)", dense)
                    st.setdefault(f"Gated scalar {act} (per-instance)", 0)
                    st.setdefault(f"Skipped scalar {act} (per-instance)", 0)
            if "Utilized capacity" in st:
                st.setdefault("Data tile shape", st["Utilized capacity"])
    return out
