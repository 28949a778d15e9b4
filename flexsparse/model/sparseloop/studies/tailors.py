"""ExTensor-N / -P / -OB (Tailors + Swiftiles) on sparse matrices, A @ A, with actual data.

Hardware (``TLParams``): an ExTensor-style SpMSpM accelerator — DRAM -> a last-level buffer
(LLB) holding tiles of A and B -> ``pes`` processing elements, each accumulating one output
while intersecting a row of A with a column of B (skipping on both operands) -> ``pes`` MACs.
A and B are stored compressed (coordinate lists under row pointers, or under a list of the
nonempty rows with ``row_format="CP"``; ``md_bits`` per coordinate); Z is compressed at DRAM
with the actual pattern of A @ A and receives each K tile's partial sums. Energies: Horowitz
45 nm (``common.ert_for``). Effectual computes are counted exactly on the data
(``evaluate(..., exact_joint=True)``).

Tilings: uniform square tiles of edge ``t`` along M, K and N (the matrix is padded with zero
rows/columns to a multiple of the largest candidate edge).

* ExTensor-N: the largest edge whose *dense* A and B tiles fit the LLB (never overflows).
* ExTensor-P (prescient): the largest candidate edge whose fullest tile pair fits, found by
  counting every tile at every candidate size (a pass over the coordinates per size: its DRAM
  reads and time are added as the "tiling tax").
* ExTensor-OB: Swiftiles picks the edge from ``swiftiles_samples`` random tiles (area scaled so
  that the ``1 - overflow_target`` quantile fills the buffer) and Tailors overbooks the LLB: the
  overflow of a tile streams from DRAM on every use. Sampling reads are its tiling tax.

Metrics: cycles and energy of each, speedup and energy gain of OB over N and P, the realised
overflow rate. Every parameter is an architecture or algorithm parameter with its source; the
conclusions are re-checked with each halved and doubled. Cost: a few engine evaluations per
matrix (each a second or less for 10^5-10^6 nonzeros).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexsparse.model.sparseloop.studies.common import ert_for, geomean, sensitivity

__all__ = ["TLParams", "compare", "study"]


@dataclass(frozen=True)
class TLParams:
    """Architecture and algorithm parameters (sources in comments)."""

    llb_words: int = 65536      # LLB capacity (our choice: small enough that the test graphs need tiling)
    pes: int = 128              # PEs and MACs (ExTensor-style array, as in flexsparse's extensor preset)
    dram_bw: float = 32.0       # DRAM words/cycle (same DRAM as the DNN studies)
    llb_bw: float = 128.0       # LLB words/cycle (one word per PE per cycle)
    dram_scale: float = 1.0     # x Horowitz DRAM pJ/B
    sram_scale: float = 1.0     # x Horowitz SRAM pJ/B
    mac_pj: float = 1.5         # fp16 multiply 1.1 + add 0.4 pJ (Horowitz)
    md_bits: int = 16           # bits per stored coordinate / row pointer
    swiftiles_samples: int = 64  # tiles Swiftiles samples (Tailors paper: a small sample)
    overflow_target: float = 0.10  # fraction of tiles Swiftiles lets overflow (Tailors paper: 10%)
    row_format: str = "UOP"     # rows inside a tile: "UOP" (CSR row pointers) or "CP" (only nonempty rows)


def _arch(p: TLParams, overbook: bool) -> dict:
    return {"version": 0.3, "subtree": [{"name": "sys", "local": [
        {"name": "DRAM", "class": "DRAM", "attributes": {"width": 32, "datawidth": 32, "read_bandwidth": p.dram_bw,
                                                         "write_bandwidth": p.dram_bw,
                                                         "metadata_storage_width": p.md_bits,
                                                         "metadata_datawidth": p.md_bits}},
        {"name": "LLB", "class": "SRAM", "attributes": {"depth": p.llb_words, "width": 32, "datawidth": 32,
                                                        "read_bandwidth": p.llb_bw, "write_bandwidth": p.llb_bw,
                                                        "metadata_storage_width": p.md_bits,
                                                        "metadata_storage_depth": p.llb_words,
                                                        "metadata_datawidth": p.md_bits,
                                                        "overbooking": overbook}}],
        "subtree": [{"name": f"PE[0..{p.pes - 1}]", "local": [
            {"name": "PEB", "class": "regfile", "attributes": {"depth": 16, "width": 32, "datawidth": 32}},
            {"name": "MAC", "class": "fpmac", "attributes": {"datawidth": 32}}]}]}]}


def _ert(p: TLParams) -> dict:
    levels = [("DRAM", "DRAM", 32, 1, 0, p.md_bits), ("LLB", "SRAM", 32, 1, p.llb_words * 4, p.md_bits),
              ("PEB", "SRAM", 32, 1, 64, p.md_bits)]
    return ert_for(levels, "MAC", p.mac_pj, p.dram_scale, p.sram_scale)["ERT"]


def _mapping(n: int, t: int, pes: int) -> list[dict]:
    """Tiles of t x t at the LLB (DRAM loops K innermost, then N, then M); each PE owns one row
    of the A tile (M spatial) and walks the columns of B (N), intersecting along K; outputs
    accumulate in the PE buffer and go to DRAM after each K tile (partial sums merged there)."""
    q = n // t
    return [
        {"target": "PEB", "type": "bypass", "keep": ["Z"], "bypass": ["A", "B"]},
        {"target": "LLB", "type": "bypass", "keep": ["A", "B"], "bypass": ["Z"]},
        {"target": "PEB", "type": "temporal", "factors": f"M=1 N=1 K={t}", "permutation": "KMN"},
        {"target": "LLB", "type": "spatial", "factors": f"M={pes} N=1 K=1", "permutation": "MNK"},
        {"target": "LLB", "type": "temporal", "factors": f"M={t // pes} N={t} K=1", "permutation": "NMK"},
        {"target": "DRAM", "type": "temporal", "factors": f"M={q} N={q} K={q}", "permutation": "KNM"},
    ]


def _ranks(formats: str, bits: int) -> list[dict]:
    return [{"format": f, "metadata-word-bits": bits, "payload-word-bits": bits} if f == "UOP"
            else {"format": f, "metadata-word-bits": bits} for f in formats.split()]


def _sparse(p: TLParams) -> dict:
    """A and B compressed: at the LLB a tile is row pointers (UOP over the two M loops of A, over N
    for B) with coordinate lists along K (CP); at DRAM the tiles themselves are indexed CSR-like
    (UOP over tile rows, CP over the non-empty tiles of a row), so empty tiles cost nothing.
    Z is compressed at DRAM with the pattern of A @ A: each K tile's partial sums are read and
    written back at Z's final density (an upper bound on a partial's nonzeros). The LLB
    intersects A and B (each read only where the other is nonzero) and the MACs skip."""
    def fmt(ranks_a: str, ranks_b: str) -> list[dict]:
        return [{"name": "A", "rank-application-order": "inner-to-outer", "ranks": _ranks(ranks_a, p.md_bits)},
                {"name": "B", "rank-application-order": "inner-to-outer", "ranks": _ranks(ranks_b, p.md_bits)}]
    r = p.row_format
    if r not in ("UOP", "CP"):
        raise ValueError(f"TLParams.row_format must be 'UOP' or 'CP', got {r!r}")
    z = {"name": "Z", "rank-application-order": "inner-to-outer", "ranks": _ranks(f"UOP CP {r} {r} CP", p.md_bits)}
    return {"targets": [
        {"name": "DRAM", "representation-format": {"data-spaces": fmt(f"UOP CP {r} {r} CP", f"UOP CP {r} CP") + [z]}},
        {"name": "LLB", "representation-format": {"data-spaces": fmt(f"{r} {r} CP", f"{r} CP")},
         "action-optimization": [{"type": "skipping", "target": "A", "condition-on": ["B"]},
                                 {"type": "skipping", "target": "B", "condition-on": ["A"]}]},
        {"name": "PEB", "action-optimization": [{"type": "skipping", "target": "Z", "condition-on": ["A", "B"]}]},
        {"name": "MAC", "compute-optimization": [{"type": "skipping"}]}]}


_DENSITIES: dict = {}


def _densities(a_coords: np.ndarray, n: int) -> tuple[Any, Any, Any]:
    """Actual-data densities of A, B = A and Z = A @ A (pattern from SciPy's product)."""
    import scipy.sparse as sps

    from flexsparse.model.sparseloop.density import ActualData
    a = sps.csr_matrix((np.ones(a_coords.shape[1], dtype=np.float32), (a_coords[0], a_coords[1])), shape=(n, n))
    a.sum_duplicates()
    z = (a @ a).tocoo()
    ac = a.tocoo()
    coords = np.stack([ac.row, ac.col]).astype(np.int64)
    return (ActualData.from_coords(coords, "A", assume_unique=True),
            ActualData.from_coords(coords, "B", assume_unique=True),
            ActualData.from_coords(np.stack([z.row, z.col]).astype(np.int64), "Z", assume_unique=True))


def _problem(n: int, dens) -> dict:
    return {"shape": {"name": "spmspm", "dimensions": ["M", "N", "K"],
                      "data-spaces": [{"name": "A", "projection": [[["M"]], [["K"]]]},
                                      {"name": "B", "projection": [[["K"]], [["N"]]]},
                                      {"name": "Z", "projection": [[["M"]], [["N"]]], "read-write": True}]},
            "instance": {"M": n, "N": n, "K": n}}


def _evaluate(p: TLParams, n: int, t: int, dens, overbook: bool):
    from flexsparse.model.sparseloop.engine import evaluate, load_spec
    spec = load_spec([{"architecture": _arch(p, overbook), "problem": _problem(n, dens), "ERT": _ert(p),
                       "mapping": _mapping(n, t, p.pes), "sparse_optimizations": _sparse(p)}])
    for i, d in enumerate(dens):
        spec.problem.densities[i] = d.bind(spec.problem.dataspaces[i].size(spec.problem.bounds),
                                           spec.problem.dataspaces[i].extents(spec.problem.bounds))
    return evaluate(spec, exact_joint=True)      # effectual computes counted exactly on the data


def _tile_occupancy(d, t: int) -> np.ndarray:
    """Nonzeros of every t x t tile (empty ones included), row-major over the tile grid."""
    blocks, counts, grid = d.block_counts((t, t))
    out = np.zeros(math.prod(grid))
    out[blocks[0] * grid[1] + blocks[1]] = counts
    return out


def choose_tiles(a, n: int, p: TLParams, seed: int = 0) -> dict[str, Any]:
    """Tile edges of ExTensor-N, -P and -OB for A (n x n, padded), and the words each reads from
    DRAM to choose them (the tiling tax).

    * N: the largest candidate edge whose dense tile fits the LLB share of one operand.
    * P: the largest candidate whose fullest tile fits; counting the tiles costs one pass over the
      coordinates (row pointers and column indices) per candidate size.
    * OB (Swiftiles): start from the edge whose *mean* tile fills the share (``share / density``
      elements), read ``swiftiles_samples`` random tiles of that edge, take their
      ``1 - overflow_target`` quantile ``O`` and scale the tile area by ``share / O``; the
      candidate nearest that edge (in ratio) is used. Its tax is the sampled tiles' coordinates
      and row pointers.
    """
    share = p.llb_words / 2                          # A and B tiles each get half of the LLB
    md = p.md_bits / 32                              # words per coordinate
    cands = [t for t in range(p.pes, n + 1, p.pes) if n % t == 0]
    nnz = a.coords.shape[1]
    t_n = max([t for t in cands if t * t <= share] or [cands[0]])
    fits = [t for t in cands if _tile_occupancy(a, t).max() <= share]
    t_p = max(fits or [cands[0]])
    tax_p = len(cands) * (nnz + n + 1) * md
    dens = nnz / (n * n)
    t0 = int(min(n, max(1, round(math.sqrt(share / max(dens, 1e-300))))))
    occ0 = _tile_occupancy(a, t0)
    rng = np.random.default_rng(seed)
    pick = rng.choice(occ0.size, size=min(p.swiftiles_samples, occ0.size), replace=False)
    sample = occ0[pick]
    q = max(float(np.quantile(sample, 1 - p.overflow_target)), 1.0)
    t_goal = min(n, t0 * math.sqrt(share / q))
    t_ob = max([t for t in cands if t <= t_goal] or [cands[0]])
    tax_ob = (float(sample.sum()) + pick.size * (t0 + 1)) * md
    return {"candidates": cands, "share": share, "N": t_n, "P": t_p, "OB": t_ob, "swiftiles_start": t0,
            "swiftiles_quantile": q, "swiftiles_goal": t_goal, "tax_words": {"N": 0.0, "P": tax_p, "OB": tax_ob}}


def compare(coords: np.ndarray, n: int, name: str = "matrix", p: TLParams = TLParams(),
            seed: int = 0) -> dict[str, Any]:
    """Cycles and energy of ExTensor-N, -P and -OB on A @ A (A given by its nonzero coordinates,
    padded with empty rows and columns to a multiple of ``24 * pes``)."""
    step = p.pes * 24                # many divisors: candidate edges about 1.5x apart
    n_pad = math.ceil(n / step) * step
    key = (name, n, int(coords.shape[1]), n_pad)
    if key not in _DENSITIES:         # Z = A @ A and the tile histograms are reused across runs
        _DENSITIES[key] = _densities(coords, n_pad)
    dens = _DENSITIES[key]
    for d in dens:
        d.bind(n_pad * n_pad, (n_pad, n_pad))
    a = dens[0]
    tiles = choose_tiles(a, n_pad, p, seed)
    from flexsparse.model.arch import DRAM_PJ_PER_BYTE
    e_word = DRAM_PJ_PER_BYTE * p.dram_scale * 4
    res: dict[str, Any] = {"name": name, "n": n, "n_padded": n_pad, "nnz": int(a.coords.shape[1]),
                           "nnz_Z": int(dens[2].coords.shape[1]),
                           "tile_edges": {k: tiles[k] for k in ("N", "P", "OB")},
                           "swiftiles": {k: tiles[k] for k in ("swiftiles_start", "swiftiles_quantile",
                                                               "swiftiles_goal", "share")}}
    for k in ("N", "P", "OB"):
        ev = _evaluate(p, n_pad, tiles[k], dens, k == "OB")
        tax = tiles["tax_words"][k]
        occ = _tile_occupancy(a, tiles[k])
        res[k] = {"cycles": ev.cycles + tax / p.dram_bw, "energy_uJ": (ev.energy_pj + tax * e_word) / 1e6,
                  "tax_words": tax, "computes": ev.computes, "edge": tiles[k],
                  "tile_fill_p90": float(np.quantile(occ, 0.9) / tiles["share"]),
                  "tiles_overflowing": float(np.mean(occ > tiles["share"])),
                  "overflow_fraction": ev.overflow.get("LLB", {}).get("A", 0.0),
                  "levels": {lv.name: {"cycles": lv.cycles, "energy_uJ": lv.energy_pj / 1e6} for lv in ev.levels}}
    for base in ("N", "P"):
        res[f"speedup_vs_{base}"] = res[base]["cycles"] / res["OB"]["cycles"]
        res[f"energy_vs_{base}"] = res[base]["energy_uJ"] / res["OB"]["energy_uJ"]
    return res


def rmat(scale: int, edge_factor: int = 8, abc: tuple[float, float, float] = (0.57, 0.19, 0.19),
         seed: int = 0) -> tuple[np.ndarray, int]:
    """R-MAT graph (Graph500 parameters by default): ``edge_factor * 2**scale`` edges drawn by
    recursive quadrant choice, duplicates merged, vertices randomly relabelled.
    Returns (coordinates (2, nnz), n)."""
    rng = np.random.default_rng(seed)
    n, m = 1 << scale, edge_factor << scale
    a, b, c = abc
    r = np.zeros(m, dtype=np.int64)
    col = np.zeros(m, dtype=np.int64)
    for bit in range(scale):
        u = rng.random(m)
        down = u >= a + b                      # quadrants c and d: row bit set
        right = ((u >= a) & (u < a + b)) | (u >= a + b + c)
        r |= down.astype(np.int64) << bit
        col |= right.astype(np.int64) << bit
    perm = rng.permutation(n)
    keys = np.unique(perm[r] * n + perm[col])
    return np.stack([keys // n, keys % n]), n


def chung_lu(n: int, nnz: int, alpha: float = 0.8, seed: int = 0) -> tuple[np.ndarray, int]:
    """Power-law (Chung-Lu) n x n pattern with about ``nnz`` nonzeros (``PowerLaw`` workload model)."""
    from flexsparse.model.workload import PowerLaw
    r, c = PowerLaw(nnz / (n * n), alpha).sample((n, n), np.random.default_rng(seed))
    return np.stack([r, c]).astype(np.int64), n


def shared_graphs(root: str | None = None) -> list[tuple[str, np.ndarray, int]]:
    """The SNAP graphs of ``../shared/data`` (ca-GrQc, ca-HepTh) when present, else none."""
    import os
    from pathlib import Path
    base = Path(root) if root else Path(os.environ.get("FLEXSPARSE_SHARED_DATA", "../shared/data"))
    out = []
    for name in ("ca-GrQc", "ca-HepTh"):
        f = base / f"{name}.mat"
        if f.is_file():
            import scipy.io
            m = scipy.io.loadmat(str(f))["Problem"][0, 0]["A"].tocoo()
            out.append((name, np.stack([m.row, m.col]).astype(np.int64), int(m.shape[0])))
    return out


def generated_graphs(seed: int = 0) -> list[tuple[str, np.ndarray, int]]:
    """Generated power-law graphs: R-MAT scale 14 (Graph500 parameters, edge factor 8) and
    Chung-Lu graphs of 16k and 32k vertices, 8 nonzeros per row, degree exponent 0.8."""
    c, n = rmat(14, 8, seed=seed)
    out = [("rmat-s14", c, n)]
    for n in (16384, 32768):
        c, n = chung_lu(n, 8 * n, 0.8, seed)
        out.append((f"chung-lu-{n // 1024}k", c, n))
    return out


CLAIMS = ("faster_than_N", "faster_than_P", "less_energy_than_N", "less_energy_than_P")
PUBLISHED = {"speedup_vs_N": 52.7, "speedup_vs_P": 2.3, "energy_vs_N": 22.5, "energy_vs_P": 2.5}


def study(matrices: list[tuple[str, np.ndarray, int]], p: TLParams = TLParams(),
          with_sensitivity: bool = True) -> dict[str, Any]:
    """``compare`` on each matrix. Claims (geomean over the matrices): ExTensor-OB is faster than
    ExTensor-N and -P and uses less energy than both; the published averages are listed beside."""
    def run(q: TLParams, keep_rows: bool = False) -> dict:
        rows = []
        for name, c, n in matrices:
            rows.append(compare(c, n, name, q))
        g = {k: geomean(r[k] for r in rows) for k in ("speedup_vs_N", "speedup_vs_P", "energy_vs_N", "energy_vs_P")}
        claims = {"faster_than_N": g["speedup_vs_N"] > 1, "faster_than_P": g["speedup_vs_P"] > 1,
                  "less_energy_than_N": g["energy_vs_N"] > 1, "less_energy_than_P": g["energy_vs_P"] > 1}
        out = {"geomean": g, "claims": claims, "holds": all(claims.values()),
               "tile_edges": {r["name"]: r["tile_edges"] for r in rows}}
        if keep_rows:
            out["rows"] = rows
        return out
    base = run(p, keep_rows=True)
    rows = base.pop("rows")
    out = {"params": p.__dict__, "rows": rows, "geomean": base["geomean"], "claims": base["claims"],
           "holds": base["holds"], "published": PUBLISHED}
    if with_sensitivity:
        out["sensitivity"] = sensitivity(p, run, base=base)
        # The one categorical choice, the other way round.
        other = "CP" if p.row_format == "UOP" else "UOP"
        out["alternatives"] = {f"row_format={other}": run(dataclasses.replace(p, row_format=other))}
    return out
