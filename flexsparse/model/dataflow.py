"""Counting primitives shared by the designs: occupancies, quantised fragment costs, formats, traffic.

Everything is vectorised NumPy over the nonzeros (no Python loop per nonzero):

* :func:`tile_occupancy` - nonzeros per non-empty tile of a 2-D operand, via one
  ``np.unique`` over int64 tile keys: O(nnz log nnz) time, O(nnz) space.
* :func:`fragment_ceil_sums` - for the DSTC outer-product dataflow, per reduction index k,
  the sum over row fragments of ``ceil(nnz_in_fragment / array_width)`` and the number of
  non-empty fragments (same cost as above).
* :func:`binom_ceil_mean` - the statistical counterpart: E[ceil(X / P)], X ~ Bin(L, d).
* :func:`storage_bits` - values and metadata bits of an operand in a representation
  format (uncompressed, bitmask, coordinate list, offset pairs, run-length, G:H, HSS).
* :func:`gemm_traffic` - bytes moved per level for a weight-stationary/output-stationary
  tiled GEMM on a 2-D PE array under a global-buffer capacity: O(1).

>>> binom_ceil_mean(8, 1.0, 8), binom_ceil_mean(8, 0.0, 8)
(1.0, 0.0)
>>> import numpy as np
>>> rows, cols = np.array([0, 0, 1, 5]), np.array([0, 3, 1, 5])
>>> tile_occupancy(rows, cols, (6, 6), 2, 2)[2].tolist()
[2, 1, 1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flexsparse.model.arch import Architecture, SparseFeature
from flexsparse.model.workload import HSS, Actual, DensityModel, Structured

__all__ = ["binom_ceil_mean", "tile_occupancy", "fragment_ceil_sums", "storage_bits", "Traffic",
           "gemm_traffic", "hss_levels", "is_gh_compatible", "level_energy"]


def binom_ceil_mean(length: int, density: float, width: int, nonzero: bool = False) -> float:
    """E[ceil(X / width)] for X ~ Binomial(length, density); with ``nonzero`` return P(X > 0)."""
    if length <= 0:
        return 0.0
    from scipy.stats import binom
    if nonzero:
        return float(1.0 - (1.0 - density) ** length)
    x = np.arange(length + 1)
    return float(np.dot(binom.pmf(x, length, density), np.ceil(x / width)))


def tile_occupancy(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], tr: int, tc: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tile_row, tile_col, occupancy) of every non-empty ``tr x tc`` tile, sorted by tile row."""
    if tr < 1 or tc < 1:
        raise ValueError(f"tile sizes must be >= 1, got {tr} x {tc}")
    ntc = -(-shape[1] // tc)
    keys = (rows // tr).astype(np.int64) * ntc + (cols // tc).astype(np.int64)
    uniq, occ = np.unique(keys, return_counts=True)
    return uniq // ntc, uniq % ntc, occ


def fragment_ceil_sums(frag_idx: np.ndarray, k_idx: np.ndarray, k: int, width: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Per k: sum over fragments of ceil(count / width), and the number of non-empty fragments.

    ``frag_idx`` is each nonzero's fragment (e.g. row // fragment_rows), ``k_idx`` its reduction index.
    """
    if frag_idx.size == 0:
        return np.zeros(k), np.zeros(k)
    nfrag = int(frag_idx.max()) + 1
    keys = k_idx.astype(np.int64) * nfrag + frag_idx.astype(np.int64)
    uniq, cnt = np.unique(keys, return_counts=True)
    kk = uniq // nfrag
    sums = np.bincount(kk, weights=np.ceil(cnt / width), minlength=k)
    nonempty = np.bincount(kk, minlength=k).astype(np.float64)
    return sums, nonempty


def hss_levels(model: DensityModel) -> tuple[tuple[int, int], ...] | None:
    """The (G, H) levels (outer first) of a structured model; None for unstructured ones."""
    if isinstance(model, (HSS, Structured)):
        return model.levels
    return None


def is_gh_compatible(model: DensityModel, g: int, h: int, shape: tuple[int, int], axis: int = 1) -> bool:
    """True when every group of ``h`` consecutive elements along ``axis`` holds at most ``g`` nonzeros."""
    if isinstance(model, Actual):
        if model.nnz == 0:
            return True
        other, red = (model.coords[0], model.coords[1]) if axis == 1 else (model.coords[1], model.coords[0])
        ngroups = -(-shape[axis] // h)
        _, cnt = np.unique(other.astype(np.int64) * ngroups + red // h, return_counts=True)
        return bool(cnt.max() <= g)
    levels = hss_levels(model)
    if levels is None:
        return model.density == 0.0
    g0, h0 = levels[-1]
    if h0 == h:
        return g0 <= g
    return all(gg == hh for gg, hh in levels[:-1]) and h0 % h == 0 and g0 * h <= g * h0 and g0 <= g


def storage_bits(feature: SparseFeature | None, model: DensityModel, shape: tuple[int, int], nnz: float,
                 fiber_axis: int = 1, word_bits: int = 16) -> tuple[float, float]:
    """(stored values, metadata bits) of an operand of ``shape`` with ``nnz`` nonzeros in ``feature``'s format.

    Fibers run along ``fiber_axis`` (the reduction dimension for weights). Metadata widths default
    to what the shape needs (ceil(log2(fiber length)) per coordinate) unless the feature sets them.
    """
    cells = float(shape[0]) * float(shape[1])
    fmt = feature.format if feature is not None else "uncompressed"
    flen = shape[fiber_axis]
    nfib = shape[1 - fiber_axis]
    bits = feature.metadata_bits if feature is not None and feature.metadata_bits else 0
    if fmt == "uncompressed":
        return cells, 0.0
    if fmt == "bitmask":
        return nnz, cells * (bits or 1)
    if fmt == "coordinate_list":
        return nnz, nnz * (bits or max(1, math.ceil(math.log2(max(flen, 2)))))
    if fmt == "offset_pairs":
        return nnz, (nfib + 1) * (bits or max(1, math.ceil(math.log2(max(nnz, 1) + 1))))
    if fmt == "run_length":
        return nnz, nnz * (bits or max(1, math.ceil(math.log2(max(flen, 2)))))
    levels = hss_levels(model)
    if fmt in ("gh", "hss"):
        if levels is None:
            raise ValueError(f"format {fmt!r} needs a G:H/HSS operand, got a {model.kind} density model")
        meta, frac = 0.0, 1.0
        for i, (g, h) in enumerate(levels):  # outer first; a level-i unit spans prod(inner H) elements
            frac *= g / h
            span = math.prod(hh for _, hh in levels[i + 1:])
            if g < h:  # an H:H level needs no metadata (dense models pay nothing)
                meta += cells / span * frac * (bits or max(1, math.ceil(math.log2(h))))
        kept = cells * frac
        return kept, meta
    raise ValueError(f"unknown format {fmt!r}")


@dataclass(frozen=True)
class Traffic:
    """Bytes read/written per storage level name, plus the global-buffer utilisation."""

    reads: dict[str, float]
    writes: dict[str, float]
    buffer_utilization: float


def gemm_traffic(arch: Architecture, m: int, k: int, n: int, a_bytes: float, b_bytes: float,
                 executed_macs: float, z_bytes: float | None = None) -> Traffic:
    """Traffic of a tiled GEMM: DRAM -> GLB (the larger operand streamed, the other resident in
    blocks of half the GLB), GLB -> PE array (A broadcast along array columns, B along array rows),
    PE buffers: two operand reads per executed MAC; outputs written once to GLB and DRAM.
    """
    dram, glb = arch.levels[0].name, arch.levels[1].name if len(arch.levels) > 1 else arch.levels[0].name
    wb = arch.word_bytes
    z = float(m) * n * wb if z_bytes is None else z_bytes
    cap = arch.levels[1].capacity * arch.levels[1].instances if len(arch.levels) > 1 else float("inf")
    half = cap / 2
    # Either A is resident (in ceil(A/half) blocks, B re-streamed once per block) or the reverse.
    opt_a = a_bytes + b_bytes * max(1, math.ceil(a_bytes / half))
    opt_b = b_bytes + a_bytes * max(1, math.ceil(b_bytes / half))
    dram_read = min(opt_a, opt_b)
    rows, cols = int(arch.param("array_rows", 32)), int(arch.param("array_cols", 32))
    glb_read = a_bytes * math.ceil(n / cols) + b_bytes * math.ceil(m / rows)
    reads = {dram: dram_read, glb: glb_read}
    writes = {dram: z, glb: dram_read + z}
    if len(arch.levels) > 2:
        pe = arch.levels[2].name
        reads[pe] = 2.0 * executed_macs * wb
        writes[pe] = glb_read
    util = min(1.0, (min(a_bytes, half) + min(b_bytes, half)) / cap) if cap != float("inf") else 0.0
    if len(arch.levels) == 1:
        reads = {dram: a_bytes + b_bytes}
        writes = {dram: z}
    return Traffic(reads, writes, util)


def level_energy(arch: Architecture, traffic: Traffic) -> dict[str, float]:
    """pJ per level: bytes read x read energy + bytes written x write energy."""
    out = {}
    for lv in arch.levels:
        out[lv.name] = (traffic.reads.get(lv.name, 0.0) * lv.read_energy_pj
                        + traffic.writes.get(lv.name, 0.0) * lv.write_energy_pj)
    return out


def level_cycles(arch: Architecture, traffic: Traffic) -> float:
    """The slowest level's transfer time: (reads + writes) / bandwidth, maximised over levels."""
    return max((traffic.reads.get(lv.name, 0.0) + traffic.writes.get(lv.name, 0.0)) / lv.bandwidth
               for lv in arch.levels)
