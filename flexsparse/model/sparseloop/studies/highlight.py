"""HighLight vs a dense tensor core, STC and DSTC over the HSS degrees and activation densities.

Hardware (``HLParams``): the tensor-core hierarchy of the Sparseloop paper's STC/DSTC study —
DRAM (``dram_bw`` words/cycle) -> 256 KiB SMEM (``smem_bw`` words/cycle, 64-word blocks) ->
4 register files of 2 KiB (one per sub-partition) -> 1024 int8 MACs (4 x 16 x 16) — with energies
from the Horowitz 45 nm table (``common.ert_for``). Weights ``A[M, K]`` carry the HSS degree
``4:H1 -> G0:4`` along K; activations ``B[K, N]`` are uniformly sparse (hypergeometric).

Designs (Sparseloop terms; the structure follows the Sparseloop artifact's descriptions):

* ``dense``: no sparse optimization; zeros are computed.
* ``stc``: 2:4 only. Weights whose inner level is 2:4-compatible (G0 <= 2) are stored with 2-bit
  coordinates and a 32-wide K fiber is condensed onto the 16 MAC columns (spatial skipping of
  B and Z conditioned on A): at most 2x; finer or other sparsity is processed as values.
* ``dstc``: both operands bitmask-compressed; the 16 x 16 array position-skips zeros of A's
  column and B's row fragments (outer product), paying load imbalance in the last pass.
* ``highlight``: both HSS levels are condensed along K (the K fiber is ``16 / density`` wide and
  always holds exactly 16 nonzeros per row, so the condensation is perfectly balanced);
  metadata is ``log2 H0`` bits per kept value plus ``log2 H1`` bits per kept block (spread over
  its G0 values); zero activations gate the MACs (energy only). This reading of the HighLight
  paper is ours (REFERENCES.md section 1); ``shared`` design choices are listed in MODEL.md.

K is padded to a multiple of the condensed fiber (same padded problem for all designs at a
degree). Metric: energy-delay product of the layer set (sum of energies x sum of cycles).
Cost: ``designs x degrees x densities x layers`` evaluations (~20 ms each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from flexsparse.model.sparseloop.studies.common import ert_for, gemm_problem, geomean, largest_divisor, sensitivity

__all__ = ["DEGREES", "HLParams", "LAYERS", "run", "study"]

# (upper H1, lower G0) of the HSS degrees 4:H1 -> G0:4, densest first (HighLight's 12 degrees).
DEGREES = [(h1, g0) for g0 in (4, 2, 1) for h1 in (4, 5, 6, 7)]
# (name, M, K, N): ResNet-50 im2col GEMMs and Transformer-Big projections (flexsparse.model workloads).
LAYERS = [("resnet50.l2.b1.conv2", 128, 1152, 784), ("resnet50.l2.conv3", 512, 128, 784),
          ("resnet50.l3.conv1", 256, 1024, 196), ("resnet50.l4.b1.conv1", 512, 1024, 196),
          ("transformer.qkv_proj", 3072, 1024, 512), ("transformer.ffn1", 4096, 1024, 512)]
DESIGNS = ("dense", "stc", "dstc", "highlight")


@dataclass(frozen=True)
class HLParams:
    """Architecture parameters (sources in comments)."""

    dram_scale: float = 1.0     # x Horowitz DRAM 243.75 pJ/B (midpoint of 1.3-2.6 nJ / 64 bit)
    sram_scale: float = 1.0     # x Horowitz SRAM pJ/B interpolated on capacity
    mac_pj: float = 0.23        # int8 multiply 0.2 pJ + int8 add 0.03 pJ (Horowitz)
    dram_bw: float = 32.0       # DRAM words/cycle (Sparseloop STC/DSTC study)
    smem_bw: float = 42.0       # SMEM words/cycle (Sparseloop STC/DSTC study)
    smem_kib: int = 256         # SMEM capacity (Sparseloop STC/DSTC study)
    rf_bw: float = 256.0        # register-file words/cycle per sub-partition (Sparseloop study)


def _arch(p: HLParams, dstc: bool) -> dict:
    depth = p.smem_kib * 1024 // 64
    dram = {"name": "DRAM", "class": "DRAM", "attributes": {"width": 64, "datawidth": 8, "cluster-size": 1,
                                                            "read_bandwidth": p.dram_bw, "write_bandwidth": p.dram_bw,
                                                            "metadata_storage_width": 64}}
    smem = {"name": "SMEM", "class": "storage", "attributes": {
        "data_storage_depth": depth, "data_storage_width": 512, "datawidth": 8, "cluster-size": 1,
        "metadata_storage_depth": 2 * depth, "metadata_storage_width": 64, "read_bandwidth": p.smem_bw,
        "write_bandwidth": p.smem_bw}}
    rf = {"name": "RF", "class": "storage", "attributes": {
        "data_storage_depth": 2048, "data_storage_width": 8, "datawidth": 8, "cluster-size": 1, "meshX": 1,
        "meshY": 4, "metadata_storage_depth": 128, "metadata_storage_width": 16, "read_bandwidth": p.rf_bw,
        "write_bandwidth": p.rf_bw}}
    mac = {"name": "MAC", "class": "compute", "attributes": {"datawidth": 8, "meshX": 16, "meshY": 64}}
    if dstc:
        lrf = {"name": "LRF", "class": "storage", "attributes": {
            "data_storage_depth": 64, "data_storage_width": 16, "datawidth": 8, "meshX": 1, "meshY": 4,
            "metadata_storage_depth": 32, "metadata_storage_width": 4}}
        sub = {"name": "Sub[0..3]", "local": [rf, lrf], "subtree": [{"name": "PE[0..255]", "local": [mac]}]}
    else:
        lrf = {"name": "LRF", "class": "storage", "attributes": {
            "data_storage_depth": 1, "data_storage_width": 8, "datawidth": 8, "meshX": 16, "meshY": 64,
            "metadata_storage_depth": 1, "metadata_storage_width": 8}}
        sub = {"name": "Sub[0..3]", "local": [rf], "subtree": [{"name": "PE[0..255]", "local": [lrf, mac]}]}
    return {"version": 0.3, "subtree": [{"name": "system", "local": [dram],
                                         "subtree": [{"name": "SM", "local": [smem], "subtree": [sub]}]}]}


def _ert(p: HLParams, dstc: bool) -> dict:
    levels = [("DRAM", "DRAM", 8, 8, 0, 64), ("SMEM", "SRAM", 8, 64, p.smem_kib * 1024, 64),
              ("RF", "SRAM", 8, 1, 2048, 16),
              ("LRF", "SRAM", 8, 2 if dstc else 1, 128 if dstc else 1, 4 if dstc else 8)]
    return ert_for(levels, "MAC", p.mac_pj, p.dram_scale, p.sram_scale)


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def _tc_mappings(m: int, k: int, n: int, fiber: int, smem_words: int, a_frac: float = 1.0) -> list[list[dict]]:
    """Tensor-core dataflow: LRF holds one weight and streams N; RF holds outputs of a 16 x N tile;
    16 MAC columns take a K fiber of ``fiber`` (condensed to 16 when > 16); 4 sub-partitions split M.
    Candidates differ in the SMEM tile (M and N multiples, K split) and the DRAM loop order."""
    out = []
    kr_all = k // fiber
    for nl in sorted({largest_divisor(n, 128), largest_divisor(n, 32)}):
        for ms in _divisors(m // 64, 4):
            for ns in _divisors(n // nl, 4):
                kd = next((d for d in range(1, kr_all + 1) if kr_all % d == 0 and
                           64 * ms * (k // d) * a_frac + (k // d) * nl * ns <= smem_words), None)
                if kd is None:
                    continue
                for order in ("KNM", "KMN"):
                    out.append([
                        {"target": "LRF", "type": "bypass", "keep": ["A"], "bypass": ["B", "Z"]},
                        {"target": "RF", "type": "bypass", "keep": ["Z"], "bypass": ["A", "B"]},
                        {"target": "SMEM", "type": "bypass", "keep": ["A", "B"], "bypass": ["Z"]},
                        {"target": "LRF", "type": "temporal", "factors": f"M=1 N={nl} K=1", "permutation": "NMK"},
                        {"target": "RF", "type": "spatial", "factors": f"M=16 N=1 K={fiber}", "permutation": "KMN",
                         "split": 1},
                        {"target": "RF", "type": "temporal", "factors": f"M=1 N=1 K={kr_all // kd}",
                         "permutation": "KMN"},
                        {"target": "SMEM", "type": "spatial", "factors": "M=4 N=1 K=1", "permutation": "MNK",
                         "split": 0},
                        {"target": "SMEM", "type": "temporal", "factors": f"M={ms} N={ns} K=1", "permutation": "NMK"},
                        {"target": "DRAM", "type": "temporal",
                         "factors": f"M={m // (64 * ms)} N={n // (nl * ns)} K={kd}", "permutation": order}])
    return out


def _dstc_mappings(m: int, k: int, n: int, smem_words: int, a_frac: float = 1.0) -> list[list[dict]]:
    """DSTC's outer-product dataflow: each sub-partition's 16 x 16 array takes 32-row fragments of A
    and up to 64-column fragments of B per K step; RF accumulates the outputs. Candidates differ in
    the SMEM tile and the DRAM loop order."""
    out = []
    mm = m // 32
    n4 = largest_divisor(n // 16, 4)
    nn = n // (16 * n4)
    for sm, sn in ((2, 2), (4, 1), (1, 4)):
        if mm % sm or nn % sn:
            continue
        for ms in _divisors(mm // sm, 4):
            for ns in _divisors(nn // sn, 4):
                for kd in _divisors(k, 64):
                    a = 32 * sm * ms * (k // kd) * a_frac
                    b = (k // kd) * 16 * n4 * sn * ns
                    if a + b > smem_words:
                        continue
                    for order in ("MNK", "NMK"):
                        out.append([
                            {"target": "LRF", "type": "bypass", "keep": ["A", "B"], "bypass": ["Z"]},
                            {"target": "RF", "type": "bypass", "keep": ["Z"], "bypass": ["A", "B"]},
                            {"target": "SMEM", "type": "bypass", "keep": ["A", "B"], "bypass": ["Z"]},
                            {"target": "LRF", "type": "spatial", "factors": "M=16 N=16 K=1", "permutation": "NMK",
                             "split": 1},
                            {"target": "LRF", "type": "temporal", "factors": f"M=2 N={n4} K=1", "permutation": "NMK"},
                            {"target": "RF", "type": "temporal", "factors": f"M=1 N=1 K={k // kd}",
                             "permutation": "KMN"},
                            {"target": "SMEM", "type": "spatial", "factors": f"M={sm} N={sn} K=1", "permutation": "NMK",
                             "split": 0},
                            {"target": "SMEM", "type": "temporal", "factors": f"M={ms} N={ns} K=1",
                             "permutation": "NMK"},
                            {"target": "DRAM", "type": "temporal",
                             "factors": f"M={mm // (sm * ms)} N={nn // (sn * ns)} K={kd}", "permutation": order}])
                    break           # the smallest K split that fits
    return out


def _ranks(md_bits: int, n_uop: int, inner: str = "CP") -> list[dict]:
    return [{"format": "UOP", "payload-word-bits": 0} for _ in range(n_uop)] + \
        [{"format": inner, "metadata-word-bits": md_bits}]


def highlight_md_bits(h1: int, g0: int) -> int:
    """HighLight metadata per kept value: log2 H0 bits if the lower level is sparse, plus log2 H1
    bits per kept block of the upper level shared by its G0 values; a dense (H:H) level has none."""
    bits = (2 if g0 < 4 else 0) + (math.log2(h1) / g0 if h1 > 4 else 0)
    return math.ceil(bits - 1e-9)


def _sparse(design: str, h1: int, g0: int) -> dict | None:
    if design == "dense" or (design == "stc" and g0 > 2) or (design == "highlight" and h1 == 4 and g0 == 4):
        return None
    if design in ("stc", "highlight"):
        bits = 2 if design == "stc" else highlight_md_bits(h1, g0)
        tg = [{"name": "DRAM", "representation-format": {"data-spaces": [
                  {"name": "A", "rank-application-order": "inner-to-outer", "ranks": _ranks(bits, 7)}]}},
              {"name": "SMEM", "representation-format": {"data-spaces": [
                  {"name": "A", "rank-application-order": "inner-to-outer", "ranks": _ranks(bits, 5)}]}},
              {"name": "RF", "action-optimization": [
                  {"type": "skipping-spatial", "target": "B", "condition-on": ["A"]},
                  {"type": "skipping-spatial", "target": "Z", "condition-on": ["A"]}]},
              {"name": "LRF", "representation-format": {"data-spaces": [
                  {"name": "A", "ranks": [{"format": "CP", "metadata-word-bits": bits}]}]}}]
        if design == "highlight":
            tg.append({"name": "MAC", "compute-optimization": [{"type": "gating"}]})
        return {"targets": tg}
    bm = [{"format": "B", "metadata-word-bits": 0, "payload-word-bits": 0},
          {"format": "B", "metadata-word-bits": 1, "payload-word-bits": 0}]
    uop = [{"format": "UOP", "payload-word-bits": 0}]
    fmt = [{"name": ds, "rank-application-order": "inner-to-outer", "ranks": bm} for ds in ("A", "B")]
    def outer(n):
        return [{"name": ds, "rank-application-order": "inner-to-outer", "ranks": uop * n + bm} for ds in ("A", "B")]
    return {"targets": [
        {"name": "DRAM", "representation-format": {"data-spaces": outer(12)}},
        {"name": "SMEM", "representation-format": {"data-spaces": outer(8)}},
        {"name": "RF", "action-optimization": [{"type": "skipping", "target": "Z", "condition-on": ["A", "B"]}]},
        {"name": "LRF", "representation-format": {"data-spaces": fmt},
         "action-optimization": [{"type": "position-skipping", "target": "A", "condition-on": []},
                                 {"type": "position-skipping", "target": "B", "condition-on": []}]}]}


def _density_a(design: str, h1: int, g0: int) -> Any:
    if design == "stc":
        return 0.5 if g0 <= 2 else 1.0           # STC sees (and exploits) the 2:4 pattern only
    return {"distribution": "hss", "levels": [[4, h1], [g0, 4]], "rank": 1}


def padded(k: int, n: int, h1: int, g0: int) -> tuple[int, int]:
    """K padded to whole condensed fibers of every design, N to whole 16-column blocks."""
    fiber = 16 * h1 // g0
    step = math.lcm(32, fiber)
    return math.ceil(k / step) * step, math.ceil(n / 16) * 16


def _spec(p: HLParams, design: str, layer: tuple, h1: int, g0: int, act: float, mapping: list[dict]) -> dict:
    name, m, k, n = layer
    k_pad, n_pad = padded(k, n, h1, g0)
    dens_b = 1.0 if act >= 1 else {"distribution": "hypergeometric", "density": act}
    spec = {"architecture": _arch(p, design == "dstc"),
            "problem": gemm_problem(m, k_pad, n_pad, _density_a(design, h1, g0), dens_b, name),
            "ERT": _ert(p, design == "dstc")["ERT"], "mapping": mapping}
    sp = _sparse(design, h1, g0)
    if sp:
        spec["sparse_optimizations"] = sp
    return spec


_MAPPINGS: dict = {}


def best_mapping(design: str, layer: tuple, h1: int, g0: int) -> list[dict]:
    """Lowest-EDP candidate of the design's dataflow at dense activations and default parameters
    (the same small mapping space for every design; kept fixed across activation densities and in
    the sensitivity runs)."""
    from flexsparse.model.sparseloop.engine import evaluate, load_spec
    key = (design, layer, h1, g0)
    if key not in _MAPPINGS:
        _name, m, k, n = layer
        k_pad, n_pad = padded(k, n, h1, g0)
        p = HLParams()
        smem_words = p.smem_kib * 1024
        # SMEM holds A compressed where the design compresses it (capacity in stored words).
        dens = (4 / h1) * (g0 / 4)
        if design == "dstc":
            cands = _dstc_mappings(m, k_pad, n_pad, smem_words, dens)
        else:
            fiber = 16 * h1 // g0
            f = 16 if design == "dense" or (design == "stc" and g0 > 2) else (32 if design == "stc" else fiber)
            frac = {"dense": 1.0, "stc": 1.0 if g0 > 2 else 0.5, "highlight": dens}[design]
            cands = _tc_mappings(m, k_pad, n_pad, f, smem_words, frac)
        if not cands:
            raise ValueError(f"no mapping of {design} fits layer {layer}")
        best = None
        for c in cands:
            ev = evaluate(load_spec([_spec(p, design, layer, h1, g0, 1.0, c)]))
            edp = ev.energy_pj * ev.cycles
            if best is None or edp < best[0]:
                best = (edp, c)
        _MAPPINGS[key] = best[1]
    return _MAPPINGS[key]


def evaluate_point(p: HLParams, design: str, layer: tuple, h1: int, g0: int, act: float) -> Any:
    """Evaluate one design on one layer at one degree and activation density."""
    from flexsparse.model.sparseloop.engine import evaluate, load_spec
    return evaluate(load_spec([_spec(p, design, layer, h1, g0, act, best_mapping(design, layer, h1, g0))]))


@dataclass
class SweepResult:
    """EDP and its parts per (activation density, degree, design)."""

    rows: list[dict] = field(default_factory=list)


def run(p: HLParams = HLParams(), acts=(1.0, 0.5, 0.3), layers=LAYERS, degrees=DEGREES) -> list[dict]:
    """Energy, cycles and EDP of every design, per activation density and degree."""
    rows = []
    for act in acts:
        for h1, g0 in degrees:
            row = {"act_density": act, "degree": f"4:{h1}->{g0}:4", "weight_density": (4 / h1) * (g0 / 4)}
            for d in DESIGNS:
                e = c = 0.0
                for layer in layers:
                    ev = evaluate_point(p, d, layer, h1, g0, act)
                    e += ev.energy_pj
                    c += ev.cycles
                row[d] = {"energy_uJ": float(e / 1e6), "cycles": float(c), "edp": float(e * c)}
            best = min(DESIGNS, key=lambda x: row[x]["edp"])
            row["best"] = best
            row["highlight_vs_best"] = float(row["highlight"]["edp"] / row[best]["edp"])
            rows.append(row)
    return rows


def conclusions(rows: list[dict], tolerance: float = 0.05) -> dict[str, Any]:
    """Per activation density: is HighLight best (within ``tolerance``) at every degree, and its
    geomean EDP gain over each baseline."""
    out = {}
    for act in sorted({r["act_density"] for r in rows}, reverse=True):
        sub = [r for r in rows if r["act_density"] == act]
        wins = sum(r["highlight_vs_best"] <= 1 + tolerance for r in sub)
        out[str(act)] = {"highlight_best_or_within_5pct": int(wins), "degrees": len(sub),
                         "holds": wins == len(sub),
                         "geomean_gain": {b: geomean(r[b]["edp"] / r["highlight"]["edp"] for r in sub)
                                          for b in ("dense", "stc", "dstc")},
                         "winners": {r["degree"]: r["best"] for r in sub}}
    return out


def study(p: HLParams = HLParams(), with_sensitivity: bool = True, layers=LAYERS) -> dict[str, Any]:
    """The sweep, its conclusions, and (optionally) their sensitivity to every parameter."""
    rows = run(p, layers=layers)
    result = {"params": p.__dict__, "rows": rows, "conclusions": conclusions(rows)}
    result["claims"] = claims(result["conclusions"])
    if with_sensitivity:
        def check(q):
            c = conclusions(run(q, layers=layers))
            cl = claims(c)
            return {"holds": all(cl.values()), "claims": cl,
                    "per_density": {a: (v["highlight_best_or_within_5pct"], v["degrees"]) for a, v in c.items()},
                    "geomean_gain": {a: v["geomean_gain"] for a, v in c.items()}}
        base = {"holds": all(result["claims"].values()), "claims": result["claims"],
                "per_density": {a: (v["highlight_best_or_within_5pct"], v["degrees"])
                                for a, v in result["conclusions"].items()},
                "geomean_gain": {a: v["geomean_gain"] for a, v in result["conclusions"].items()}}
        result["sensitivity"] = sensitivity(p, check, base=base)
    return result


def claims(conc: dict[str, Any]) -> dict[str, bool]:
    """Per activation density: HighLight is best (within 5%) at every degree, and its geomean EDP
    over the degrees beats each baseline's."""
    out = {}
    for act, v in conc.items():
        out[f"best_at_every_degree@act{act}"] = bool(v["holds"])
        for b in ("dense", "stc", "dstc"):
            out[f"beats_{b}@act{act}"] = bool(v["geomean_gain"][b] > 1)
    return out
