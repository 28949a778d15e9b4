"""ExTensor-style tiled SpMSpM with intersection: ``extensor-n``, ``extensor-p``, ``extensor-ob``.

Dataflow (one buffer level, the GLB, split evenly between an A tile and a B tile): square
tiles of edge t; for each B tile (kk, j) (stationary) every non-empty A tile (i, kk) is
streamed in and intersected with it; empty tiles are skipped by the top-level intersection.

* DRAM reads of A = sum over kk of nnz(A[:, kk-block]) * (non-empty B tiles in block row kk).
* DRAM reads of a B tile with occupancy o, capacity C and R = (non-empty A tiles in its
  block column) reuses follow Tailors' first-order rule: o + (R - 1) * max(0, o - C).
* GLB reads: every B nonzero once per reuse, every A nonzero as streamed; outputs are
  written once (nnz(Z) estimated per row as n * (1 - exp(-macs_row / n))).
* Cycles = max(MACs / PEs, streamed elements / intersect rate) + tile pairs * setup cycles,
  or the DRAM/GLB transfer time if larger, plus tile-selection pre-processing.

Tile edge: ``-n`` sizes tiles as if dense (t^2 = C, never overflows); ``-p`` counts every tile
at ``prescient_candidates`` doublings of t (one full pass over both operands each, charged)
and keeps the largest with no overflow; ``-ob`` runs Swiftiles: start at t^2 = C / density,
sample ``swiftiles_samples`` random tiles, take the (1 - target) quantile of their occupancy O
and scale the area by C / O (only the sampled tiles' nonzeros are charged), then lets
Tailors absorb the overflows. Counting is vectorised (one ``np.unique`` per tiling):
O(nnz log nnz) per candidate size.
"""

from __future__ import annotations

import math

import numpy as np

from flexsparse.model.arch import Architecture
from flexsparse.model.dataflow import tile_occupancy
from flexsparse.model.report import Report
from flexsparse.model.workload import Actual, MatmulWorkload

__all__ = ["evaluate_extensor", "TilingChoice", "choose_tile"]

ENTRY_BYTES_EXTRA = 2  # one 16-bit in-tile coordinate stored with every value
COORD_BYTES = 2  # tile-selection passes read coordinates only
POINTER_BYTES = 4  # one CSR row pointer


def _grid_stats(A: Actual, B: Actual, t: int, k: int) -> dict:
    ia, ka, oa = tile_occupancy(A.coords[0], A.coords[1], A.shape, t, t)
    kb, jb, ob = tile_occupancy(B.coords[0], B.coords[1], B.shape, t, t)
    nk = -(-k // t)
    return {"t": t, "oa": oa, "ka": ka, "ob": ob, "kb": kb,
            "SA": np.bincount(ka, weights=oa, minlength=nk), "NA": np.bincount(ka, minlength=nk).astype(float),
            "NB": np.bincount(kb, minlength=nk).astype(float)}


class TilingChoice:
    """Tile edge chosen by a strategy and what choosing it cost (DRAM bytes, cycles)."""

    __slots__ = ("edge", "pre_bytes", "pre_count_ops", "candidates", "target_quantile_occ")

    def __init__(self, edge: int, pre_bytes: float, pre_count_ops: float, candidates: int, q: float = 0.0):
        self.edge, self.pre_bytes, self.pre_count_ops = edge, pre_bytes, pre_count_ops
        self.candidates, self.target_quantile_occ = candidates, q


def choose_tile(strategy: str, arch: Architecture, A: Actual, B: Actual, cap: int, seed: int = 0) -> TilingChoice:
    """Tile edge for ``strategy`` in {"n", "p", "ob"} given per-operand capacity ``cap`` (nonzeros)."""
    t_dense = max(1, math.isqrt(cap))
    limit = max(max(A.shape), max(B.shape))
    if strategy == "n":
        return TilingChoice(t_dense, 0.0, 0.0, 0)
    if strategy == "p":
        best, t, passes = t_dense, t_dense, 0
        for _ in range(int(arch.param("prescient_candidates", 8))):
            passes += 1
            occ = max(_max_occ(A, t), _max_occ(B, t))
            if occ > cap:
                break
            best = t
            if t >= limit:
                break
            t *= 2
        # each counting pass reads every coordinate (2 bytes) and every row pointer (4 bytes) of A and B
        per_pass = (A.nnz + B.nnz) * COORD_BYTES + (A.shape[0] + B.shape[0] + 2) * POINTER_BYTES
        return TilingChoice(best, passes * per_pass, passes * (A.nnz + B.nnz), passes)
    if strategy == "ob":
        target = float(arch.param("swiftiles_target", 0.10))
        samples = int(arch.param("swiftiles_samples", 64))
        dens = max(A.density, B.density, 1e-300)
        t0 = max(1, min(limit, int(round(math.sqrt(cap / dens)))))
        rng = np.random.default_rng(seed)
        occs, cost = [], 0.0
        for X in (A, B):
            _, _, occ = tile_occupancy(X.coords[0], X.coords[1], X.shape, t0, t0)
            ntiles = (-(-X.shape[0] // t0)) * (-(-X.shape[1] // t0))
            full = np.zeros(ntiles)
            full[: occ.size] = occ  # empty tiles have occupancy 0; positions do not matter for sampling
            pick = full[rng.integers(0, ntiles, size=samples)]
            occs.append(pick)
            # a sampled tile reads its coordinates and the row pointers of its rows
            cost += pick.sum() * COORD_BYTES + samples * (min(t0, X.shape[0]) + 1) * POINTER_BYTES
        q = float(max(np.quantile(o, 1.0 - target) for o in occs))
        t = t0 if q <= 0 else max(1, min(limit, int(round(t0 * math.sqrt(cap / q)))))
        return TilingChoice(t, cost, sum(o.sum() for o in occs), 1, q)
    raise ValueError(f"unknown tiling strategy {strategy!r}; valid: n, p, ob")


def _max_occ(X: Actual, t: int) -> int:
    if X.nnz == 0:
        return 0
    return int(tile_occupancy(X.coords[0], X.coords[1], X.shape, t, t)[2].max())


def _grid_overflow(A: Actual, B: Actual, g: dict, t: int, cap: int) -> float:
    """Largest fraction, over the two operands, of grid tiles (empty ones included) holding > cap."""
    rates = []
    for X, occ in ((A, g["oa"]), (B, g["ob"])):
        ntiles = (-(-X.shape[0] // t)) * (-(-X.shape[1] // t))
        rates.append(float((occ > cap).sum()) / ntiles)
    return max(rates)


def _output_nnz(A: Actual, B: Actual, n: int) -> float:
    rowb = np.bincount(B.coords[0], minlength=B.shape[0]).astype(float)
    macs_row = np.bincount(A.coords[0], weights=rowb[A.coords[1]], minlength=A.shape[0])
    return float(np.sum(n * -np.expm1(-macs_row / max(n, 1))))


def evaluate_extensor(strategy: str, arch: Architecture, w: MatmulWorkload, seed: int = 0,
                      tile: int | None = None) -> Report:
    """ExTensor-{N,P,OB} on one SpMSpM (statistical operands are sampled with ``seed``)."""
    if not isinstance(w, MatmulWorkload):
        raise ValueError(f"extensor designs evaluate matrix products, got a {type(w).__name__}")
    if len(arch.levels) < 2:
        raise ValueError("extensor designs need a DRAM level and a global buffer level")
    A, B = w.actual("a", seed), w.actual("b", seed)
    dram, glb = arch.levels[0], arch.levels[1]
    entry = arch.word_bytes + ENTRY_BYTES_EXTRA
    cap = max(1, int(glb.capacity * glb.instances / 2 / entry))  # nonzeros per operand tile
    choice = choose_tile(strategy, arch, A, B, cap, seed) if tile is None else TilingChoice(tile, 0.0, 0.0, 0)
    t = choice.edge
    g = _grid_stats(A, B, t, w.k)
    # B tile reuse and Tailors' bumped traffic
    R = g["NA"][g["kb"]]
    live = R > 0
    ob, R = g["ob"][live], R[live]
    over = np.maximum(0.0, ob - cap)
    b_reads = float(np.sum(ob + (R - 1) * over))
    bumped = float(np.sum((R - 1) * over))
    a_reads = float(np.dot(g["SA"], g["NB"]))
    pairs = float(np.dot(g["NA"], g["NB"]))
    z = _output_nnz(A, B, w.n)
    macs = w.effectual_macs() / w.count
    dram_bytes = (a_reads + b_reads) * entry + z * entry
    glb_reads = (a_reads + float(np.sum(ob * R))) * entry
    glb_writes = (a_reads + b_reads) * entry + z * entry
    pes = arch.compute.count
    compute = max(macs / pes, (a_reads + float(np.sum(ob * R))) / float(arch.param("intersect_per_cycle", pes)))
    compute += pairs * float(arch.param("tile_pair_cycles", 1.0))
    pre_cycles = choice.pre_bytes / dram.bandwidth
    transfer = max(dram_bytes / dram.bandwidth, (glb_reads + glb_writes) / glb.bandwidth)
    cycles = max(compute, transfer) + pre_cycles
    levels = {dram.name: dram_bytes * dram.read_energy_pj + choice.pre_bytes * dram.read_energy_pj,
              glb.name: glb_reads * glb.read_energy_pj + glb_writes * glb.write_energy_pj
              + choice.pre_count_ops * 4 * (glb.read_energy_pj + glb.write_energy_pj)}
    for lv in arch.levels[2:]:
        levels[lv.name] = 2 * macs * arch.word_bytes * lv.read_energy_pj
    live_b = int(live.sum())
    util = float(np.mean(np.minimum(ob, cap)) / cap) if live_b else 0.0
    c = w.count
    return Report(f"extensor-{strategy}", w.name, cycles=cycles * c, clock_hz=arch.clock_hz,
                  energy_by_level={k: v * c for k, v in levels.items()},
                  compute_energy_pj=macs * arch.compute.mac_energy_pj * c,
                  dram_bytes=(dram_bytes + choice.pre_bytes) * c, buffer_utilization=util,
                  algorithmic_macs=w.algorithmic_macs, effectual_macs=macs * c,
                  tiles=live_b * c, overbooked_tiles=int((over > 0).sum()) * c, bumped_bytes=bumped * entry * c,
                  preprocessing_cycles=pre_cycles * c,
                  extras={"tile_edge": t, "capacity_nnz": cap, "tile_pairs": pairs,
                          "overflow_rate": _grid_overflow(A, B, g, t, cap),
                          "overflow_rate_nonempty": float((over > 0).mean()) if live_b else 0.0,
                          "preprocessing_bytes": choice.pre_bytes, "candidates": choice.candidates,
                          "quantile_occupancy": choice.target_quantile_occ,
                          "b90_occupancy_fraction": float(np.quantile(ob, 0.9) / cap) if live_b else 0.0})
