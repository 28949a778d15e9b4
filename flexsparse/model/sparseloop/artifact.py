"""Validation against the Sparseloop MICRO'22 artifact (Accelergy-Project/micro22-sparseloop-artifact).

The artifact is not part of this repository. Point ``FLEXSPARSE_SPARSELOOP_ARTIFACT`` (or the
``root`` argument) at a checkout; any directory containing
``workspace/2022.micro.artifact/evaluation_setups`` or ``evaluation_setups`` works. Each case
feeds the artifact's own inputs to :func:`~flexsparse.model.sparseloop.engine.evaluate` and
reads the reference from its ``timeloop-model.stats.txt``:

* ``table7``: Eyeriss on AlexNet conv1-5, dense (``dense_outputs``) and with sparse input
  activations and DRAM compression (``ref_outputs``): ``aggregated_input.yaml`` + ``ERT.yaml``.
* ``fig15``: TC, STC, STC-flexible (CP/RLE), dual-compressed STC and DSTC on four ResNet-50
  layers at four weight densities: ``aggregated_input.yaml`` + ``ERT.yaml`` + ``map.yaml``.
* ``fig12``: the Eyeriss v2 PE on eight sparse MobileNet layers with uniform densities, and three
  of them with actual-data masks, assembled from the setup's parts as its ``sweep.py`` does.
* ``dstc_fig13`` (no Timeloop reference outputs in the artifact): DSTC on a 4096^3 SpMSpM at A
  density 1.0-0.3 and B density 1.0/0.4; latency normalised to the dense case against the DSTC
  paper's latencies digitised in the setup's ``scripts/baseline.yaml``, scored with the
  artifact's own accuracy formula (mean of ``1 - |reference - model| / reference`` over the
  sparse cases).

Per-level pJ/compute references are the level's total energy over the actual computes, read
from the level blocks (the summary table rounds to 0.01 pJ). Cost: a fraction of a second per
case.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from flexsparse.model.sparseloop.reference import parse_stats
from flexsparse.model.sparseloop.yamlio import load_text

__all__ = ["ARTIFACT_ENV", "Case", "SETUPS", "cases", "compare", "dstc_fig13", "find_artifact", "summarize"]

ARTIFACT_ENV = "FLEXSPARSE_SPARSELOOP_ARTIFACT"
SETUPS = ("table7", "fig15", "fig12")
_DIRS = {"table7": "table7_eyeriss_setup", "fig15": "fig15_stc_related_setup", "fig12": "fig12_eyerissv2_pe_setup"}


@dataclass
class Case:
    """One artifact case: its inputs and its reference report."""

    setup: str
    name: str
    files: list[Any]
    ref: Path


def find_artifact(root: str | Path | None = None) -> Optional[Path]:
    """The ``evaluation_setups`` directory of the artifact, or None when it is not available."""
    cand = root if root is not None else os.environ.get(ARTIFACT_ENV)
    if not cand:
        return None
    p = Path(cand)
    for sub in ("", "evaluation_setups", "workspace/2022.micro.artifact/evaluation_setups",
                "2022.micro.artifact/evaluation_setups"):
        q = p / sub if sub else p
        if (q / _DIRS["table7"]).is_dir():
            return q
    return None


def cases(setup: str, root: Path) -> list[Case]:
    """All cases of ``setup`` ("table7", "fig15" or "fig12") under ``root``."""
    if setup not in SETUPS:
        raise ValueError(f"unknown artifact setup {setup!r}; valid: {', '.join(SETUPS)}")
    base = root / _DIRS[setup]
    out: list[Case] = []
    if setup == "table7":
        for kind, label in (("dense_outputs", "dense"), ("ref_outputs", "sparse-IA")):
            for d in sorted((base / kind).glob("alexnet_conv*")):
                out.append(Case(setup, f"{d.name} {label}", [d / "aggregated_input.yaml", d / "ERT.yaml"],
                                d / "output" / "timeloop-model.stats.txt"))
    elif setup == "fig15":
        for d in sorted((base / "ref_outputs").glob("*/*/*/*")):
            if (d / "map.yaml").is_file():
                layer, design = d.parent.name, d.name
                out.append(Case(setup, f"{layer} {design}",
                                [d / "aggregated_input.yaml", d / "ERT.yaml", d / "map.yaml"],
                                d / "output" / "timeloop-model.stats.txt"))
    else:
        wl = base / "workload" / "mobilenet0.5-sparse"
        for group in ("uniform_only", "uniform_actual"):
            for d in sorted((base / "ref_outputs" / group).glob("L*/*")):
                layer, dens = d.parent.name, d.name
                wfile = wl / dens / f"{layer}.yaml"
                files: list[Any] = [wfile]
                if dens == "actual_data":
                    files = [_patched_workload(wfile, wl / dens / "actual_data_masks", layer)]
                files += [base / "hardware-specs" / "designs" / "arch.yaml",
                          base / "hardware-specs" / "configurations" / "SI-SW.yaml",
                          base / "ert_art" / "ERT.yaml",
                          base / "mappings" / "mobilenet0.5-sparse" / f"{layer}-perfect_factor.yaml"]
                out.append(Case(setup, f"{layer} {dens} ({group})", files, d / "output" / "timeloop-model.stats.txt"))
    return out


def _patched_workload(path: Path, masks: Path, layer: str) -> Any:
    """The workload with its mask paths pointed at the local masks (as the setup's sweep does)."""
    data = load_text(path.read_text(), str(path))
    dens = data["problem"]["instance"]["densities"]
    for ds, stem in (("Inputs", "iacts"), ("Weights", "weights")):
        if ds in dens and isinstance(dens[ds], dict):
            dens[ds]["data_file_path"] = str(masks / f"{layer}_{stem}.txt")
    return data


def _ref_levels(ref: dict[str, Any]) -> tuple[dict[str, float], float]:
    computes = ref.get("computes") or ref.get("algorithmic_computes")
    levels = ref["levels"]
    out = {}
    for i, (name, lv) in enumerate(levels.items()):
        if lv["dataspaces"]:
            e = sum(float(d.get("Energy (total)", 0.0)) + float(d.get("Temporal Reduction Energy (total)", 0.0))
                    + float(d.get("Address Generation Energy (total)", 0.0)) for d in lv["dataspaces"].values())
        else:
            e = float(lv.get("specs", {}).get("Energy (total)", 0.0))
        out["compute" if i == 0 else name] = e
    return out, float(computes or 1.0)


def compare(case: Case) -> dict[str, Any]:
    """Evaluate one case and compare cycles, energy and per-level pJ/compute with its reference."""
    from flexsparse.model.sparseloop.engine import evaluate, load_spec
    ref = parse_stats(case.ref)
    ev = evaluate(load_spec(case.files))
    ref_e, ref_c = _ref_levels(ref)
    mine = ev.pj_per_compute()
    levels = {}
    for name, e in ref_e.items():
        r = e / ref_c
        m = mine.get(name, 0.0)
        levels[name] = {"model": m, "reference": r, "error": (m / r - 1) if r else None}
    return {"setup": case.setup, "case": case.name, "cycles": ev.cycles, "ref_cycles": ref["cycles"],
            "cycles_error": ev.cycles / ref["cycles"] - 1, "energy_uJ": ev.energy_uJ, "ref_energy_uJ": ref["energy_uJ"],
            "energy_error": ev.energy_uJ / ref["energy_uJ"] - 1, "computes": ev.computes,
            "ref_computes": ref.get("computes"), "levels": levels}


def summarize(rows: list[dict[str, Any]], tol: float, level_floor: float = 0.1) -> dict[str, Any]:
    """Pass counts: cycles and energy within ``tol``; per-level pJ/compute within ``tol`` where the
    reference is at least ``level_floor`` pJ."""
    n = len(rows)
    both = sum(abs(r["cycles_error"]) <= tol and abs(r["energy_error"]) <= tol for r in rows)
    lv_total = lv_ok = 0
    worst = 0.0
    for r in rows:
        for v in r["levels"].values():
            if v["reference"] >= level_floor and v["error"] is not None:
                lv_total += 1
                lv_ok += abs(v["error"]) <= tol
                worst = max(worst, abs(v["error"]))
    both, lv_ok = int(both), int(lv_ok)
    return {"cases": n, "cycles_and_energy_within": both, "fraction": both / n if n else 0.0,
            "max_cycles_error": max((abs(r["cycles_error"]) for r in rows), default=0.0),
            "max_energy_error": max((abs(r["energy_error"]) for r in rows), default=0.0),
            "levels_checked": lv_total, "levels_within": lv_ok, "max_level_error": worst}


def dstc_fig13(root: Path) -> dict[str, Any]:
    """The fig13 DSTC setup against the digitised DSTC-paper latencies (both normalised to dense)."""
    from flexsparse.model.sparseloop.engine import evaluate, load_spec
    base = root / "fig13_dstc_setup"
    truth = load_text((base / "scripts" / "baseline.yaml").read_text(), str(base / "scripts" / "baseline.yaml"))
    cycles = {}
    for a in truth:
        for b in truth[a]:
            d = base / "ref_outputs" / f"B_{float(b)}-A_{float(a)}"
            cycles[(float(a), float(b))] = evaluate(load_spec([d / "aggregated_input.yaml", d / "ERT.yaml"])).cycles
    dense_model, dense_ref = cycles[(1.0, 1.0)], float(truth[1.0][1.0])
    rows, acc = [], []
    for (a, b), c in cycles.items():
        model, ref = c / dense_model, float(truth[a][b]) / dense_ref
        rows.append({"A_density": a, "B_density": b, "cycles": int(c), "model": model, "reference": ref,
                     "error": (model - ref) / ref})
        if (a, b) != (1.0, 1.0):
            acc.append(1 - abs(ref - model) / ref)
    return {"rows": rows, "average_accuracy": sum(acc) / len(acc)}
