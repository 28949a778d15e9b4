"""FLAASH on the Sparseloop engine: sparse dot-product engines vs a dense array of equal MACs.

Workload: FLAASH's tensor-contraction layers (``flexsparse/model/workloads/tcl.yaml``), an
activation ``A[i1, i2, k]`` contracted over its last mode with a factor ``B[j, k]``:
``Z[i, j] = sum_k A[i, k] B[j, k]`` with ``i`` the flattened leading modes. Both operands are
uniformly sparse at density ``d`` (hypergeometric model).

Hardware (``FLParams``): DRAM -> a global buffer (GB) holding both operands -> ``engines``
sparse dot-product engines (SDPEs), each with a fiber buffer (FB, ``sdpe_bw`` words per cycle),
an accumulator register (ACC) and one multiply-accumulate unit.

* FLAASH: operands stored as FLAASH's format, a pointer table over the leading coordinate (UOP)
  with (index, value) fibers along K (CP); ``md_bits`` per index. A job is one (i, j) pair;
  jobs are spread over the SDPEs (j across engines, then i, which is FLAASH's round-robin for
  these shapes). An SDPE keeps its B fiber and streams A fibers (multicast to the engines that
  share ``i``); it merges the two sorted fibers with two pointers, so it *reads every stored
  element of both* (no skipping of reads: a merge cannot know a coordinate is unmatched
  before reading it), and multiplies only matching coordinates (compute skipping). Each read
  of the fiber buffer is one merge step: ``sdpe_bw`` steps per cycle.
* Dense: the same hierarchy and MAC count without sparse optimizations (every product
  computed, operands uncompressed).

Claims checked separately (each with sensitivity, every parameter halved and doubled): FLAASH
is faster than the dense array at every density in 0.5-5% on every shape; its speedup grows as
the density falls; its cycles are linear in the operands' nonzeros (R^2 >= 0.99 per shape). The
output is written uncompressed, so where it outweighs the operands (small K, many jobs) the
write-back sets the time and linearity fails: the model says so rather than assuming it. The
published 24.5x / 5.3x / 10.3x compare simulated accelerator time against software PyTorch and
are not reproducible on an accelerator model; they are listed for context only.
Cost: two engine evaluations per (shape, density), a few ms each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexsparse.model.sparseloop.studies.common import ert_for, sensitivity

__all__ = ["FLParams", "SHAPES", "DENSITIES", "run", "study"]

# (name, leading modes of A, K, J): the TCL activations of FLAASH's evaluation (workloads/tcl.yaml).
SHAPES = [("tcl_3x3x1024", (3, 3), 1024, 64), ("tcl_7x7x512", (7, 7), 512, 64),
          ("tcl_10x10x100", (10, 10), 100, 64)]
DENSITIES = (0.005, 0.01, 0.02, 0.05)
PUBLISHED_SPEEDUP_VS_SOFTWARE = {"tcl_3x3x1024": 24.5, "tcl_7x7x512": 5.3, "tcl_10x10x100": 10.3}


@dataclass(frozen=True)
class FLParams:
    """Architecture parameters (sources in comments)."""

    engines: int = 128          # SDPEs (FLAASH simulator: 128)
    sdpe_bw: float = 2.0        # fiber-buffer words per SDPE per cycle (two operands, as a dense MAC is fed)
    gb_bw: float = 64.0         # GB words/cycle (our choice: half a word per engine per cycle)
    dram_bw: float = 32.0       # DRAM words/cycle (same DRAM as the other studies)
    md_bits: int = 16           # bits per stored index (K <= 65536)
    gb_kib: int = 512           # GB capacity (holds one layer's operands)
    dram_scale: float = 1.0     # x Horowitz DRAM pJ/B
    sram_scale: float = 1.0     # x Horowitz SRAM pJ/B
    mac_pj: float = 1.5         # fp16 multiply 1.1 + add 0.4 pJ (Horowitz)


def _arch(p: FLParams) -> dict:
    return {"version": 0.3, "subtree": [{"name": "sys", "local": [
        {"name": "DRAM", "class": "DRAM", "attributes": {"width": 32, "datawidth": 32, "read_bandwidth": p.dram_bw,
                                                         "write_bandwidth": p.dram_bw,
                                                         "metadata_storage_width": p.md_bits}},
        {"name": "GB", "class": "SRAM", "attributes": {"depth": p.gb_kib * 256, "width": 32, "datawidth": 32,
                                                       "read_bandwidth": p.gb_bw, "write_bandwidth": p.gb_bw,
                                                       "metadata_storage_width": p.md_bits,
                                                       "metadata_storage_depth": p.gb_kib * 256}}],
        "subtree": [{"name": f"SDPE[0..{p.engines - 1}]", "local": [
            {"name": "FB", "class": "regfile", "attributes": {"depth": 4096, "width": 32, "datawidth": 32,
                                                             "read_bandwidth": p.sdpe_bw,
                                                             "write_bandwidth": p.sdpe_bw,
                                                             "metadata_storage_width": p.md_bits,
                                                             "metadata_storage_depth": 4096}},
            {"name": "ACC", "class": "regfile", "attributes": {"depth": 1, "width": 32, "datawidth": 32}},
            {"name": "MAC", "class": "fpmac", "attributes": {"datawidth": 32}}]}]}]}


def _ert(p: FLParams) -> dict:
    levels = [("DRAM", "DRAM", 32, 1, 0, p.md_bits), ("GB", "SRAM", 32, 1, p.gb_kib * 1024, p.md_bits),
              ("FB", "SRAM", 32, 1, 4096 * 4, p.md_bits), ("ACC", "SRAM", 32, 1, 4, 0)]
    return ert_for(levels, "MAC", p.mac_pj, p.dram_scale, p.sram_scale)["ERT"]


def _problem(i: int, k: int, j: int, d: float) -> dict:
    dens = {"distribution": "hypergeometric", "density": d}
    return {"shape": {"name": "tcl", "dimensions": ["I", "J", "K"],
                      "data-spaces": [{"name": "A", "projection": [[["I"]], [["K"]]]},
                                      {"name": "B", "projection": [[["J"]], [["K"]]]},
                                      {"name": "Z", "projection": [[["I"]], [["J"]]], "read-write": True}]},
            "instance": {"I": i, "J": j, "K": k, "densities": {"A": dens, "B": dens}}}


def _mapping(i: int, k: int, j: int, engines: int) -> list[dict]:
    """Jobs across the engines: J first, the rest of the engines over I; K is walked in the SDPE."""
    sj = math.gcd(j, engines)
    si = max(d for d in range(1, min(i, engines // sj) + 1) if i % d == 0)
    return [
        {"target": "ACC", "type": "bypass", "keep": ["Z"], "bypass": ["A", "B"]},
        {"target": "FB", "type": "bypass", "keep": ["A", "B"], "bypass": ["Z"]},
        {"target": "GB", "type": "bypass", "keep": ["A", "B"], "bypass": ["Z"]},
        {"target": "ACC", "type": "temporal", "factors": f"I=1 J=1 K={k}", "permutation": "KIJ"},
        {"target": "FB", "type": "temporal", "factors": "I=1 J=1 K=1", "permutation": "KIJ"},
        {"target": "GB", "type": "spatial", "factors": f"I={si} J={sj} K=1", "permutation": "JIK", "split": 1},
        {"target": "GB", "type": "temporal", "factors": f"I={i // si} J={j // sj} K=1", "permutation": "IJK"},
        {"target": "DRAM", "type": "temporal", "factors": "I=1 J=1 K=1", "permutation": "IJK"},
    ]


def _sparse(p: FLParams) -> dict:
    # Pointer table over the leading coordinate (split in two ranks by the spatial job spread).
    fmt = [{"name": ds, "ranks": [{"format": "UOP", "payload-word-bits": p.md_bits},
                                  {"format": "UOP", "payload-word-bits": p.md_bits},
                                  {"format": "CP", "metadata-word-bits": p.md_bits}]} for ds in ("A", "B")]
    fb = [{"name": ds, "ranks": [{"format": "CP", "metadata-word-bits": p.md_bits}]} for ds in ("A", "B")]
    return {"targets": [
        {"name": "DRAM", "representation-format": {"data-spaces": fmt}},
        {"name": "GB", "representation-format": {"data-spaces": fmt}},
        {"name": "FB", "representation-format": {"data-spaces": fb}},
        {"name": "ACC", "action-optimization": [{"type": "skipping", "target": "Z", "condition-on": ["A", "B"]}]},
        {"name": "MAC", "compute-optimization": [{"type": "skipping"}]}]}


def evaluate_point(p: FLParams, shape: tuple, d: float, design: str) -> Any:
    """One design ("flaash" or "dense") on one TCL shape at density ``d``."""
    from flexsparse.model.sparseloop.engine import evaluate, load_spec
    _name, lead, k, j = shape
    i = math.prod(lead)
    spec = {"architecture": _arch(p), "problem": _problem(i, k, j, d), "ERT": _ert(p),
            "mapping": _mapping(i, k, j, p.engines)}
    if design == "flaash":
        spec["sparse_optimizations"] = _sparse(p)
    return evaluate(load_spec([spec]))


def run(p: FLParams = FLParams(), shapes=SHAPES, densities=DENSITIES) -> list[dict]:
    """Cycles and energy of FLAASH and the dense array per shape and density."""
    rows = []
    for shape in shapes:
        for d in densities:
            fl, de = evaluate_point(p, shape, d, "flaash"), evaluate_point(p, shape, d, "dense")
            _name, lead, k, j = shape
            nnz = d * (math.prod(lead) * k + j * k)
            rows.append({"shape": shape[0], "density": d, "nnz": nnz, "flaash_cycles": float(fl.cycles),
                         "dense_cycles": float(de.cycles), "flaash_energy_uJ": fl.energy_uJ,
                         "dense_energy_uJ": de.energy_uJ, "effectual_macs": float(fl.computes),
                         "speedup_vs_dense": de.cycles / fl.cycles,
                         "energy_gain_vs_dense": de.energy_uJ / fl.energy_uJ})
    return rows


CLAIMS = ("faster_than_dense", "speedup_grows_as_density_falls", "linear_in_nnz")


def conclusions(rows: list[dict]) -> dict[str, Any]:
    """Three claims per shape: faster than the dense array at every density; speedup
    non-decreasing as density falls; cycles linear in the operands' nonzeros (R^2 >= 0.99)."""
    out: dict[str, Any] = {"per_shape": {}}
    claims = {c: True for c in CLAIMS}
    for name in dict.fromkeys(r["shape"] for r in rows):
        sub = sorted((r for r in rows if r["shape"] == name), key=lambda r: r["density"])
        x = np.array([r["nnz"] for r in sub])
        y = np.array([r["flaash_cycles"] for r in sub])
        coef = np.polyfit(x, y, 1)
        resid = y - np.polyval(coef, x)
        r2 = float(1 - resid.var() / y.var()) if y.var() > 0 else 1.0
        got = {"faster_than_dense": all(r["speedup_vs_dense"] > 1 for r in sub),
               "speedup_grows_as_density_falls": all(a["speedup_vs_dense"] >= b["speedup_vs_dense"]
                                                     for a, b in zip(sub, sub[1:])),
               "linear_in_nnz": r2 >= 0.99}
        for c in CLAIMS:
            claims[c] &= got[c]
        out["per_shape"][name] = {**got, "linear_r2": r2,
                                  "speedup_range": [sub[-1]["speedup_vs_dense"], sub[0]["speedup_vs_dense"]]}
    out["claims"] = claims
    out["holds"] = all(claims.values())
    return out


def study(p: FLParams = FLParams(), with_sensitivity: bool = True) -> dict[str, Any]:
    """The sweep, its conclusions, and their sensitivity to every parameter."""
    rows = run(p)
    res = {"params": p.__dict__, "rows": rows, "conclusions": conclusions(rows),
           "published_speedup_vs_software": PUBLISHED_SPEEDUP_VS_SOFTWARE}
    if with_sensitivity:
        def check(q):
            c = conclusions(run(q))
            return {"holds": c["holds"], "claims": c["claims"],
                    "speedup_range": {k: v["speedup_range"] for k, v in c["per_shape"].items()},
                    "linear_r2": {k: v["linear_r2"] for k, v in c["per_shape"].items()}}
        res["sensitivity"] = sensitivity(p, check)
    return res
