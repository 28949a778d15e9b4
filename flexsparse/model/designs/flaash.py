"""FLAASH: sparse tensor contraction over the last mode on k sparse dot-product engines (SDPEs).

Jobs: one per pair (leading coordinate i of A, leading coordinate j of B), empty fibers
included (as in the proof of concept). A job intersects the two sorted fibers with a
two-pointer merge: ``job_overhead_cycles + (len_i + len_j) / merge_per_cycle`` cycles (the
merge's worst case; one MAC per match runs in the same pipeline). Distribution:

* ``round-robin`` (published): job q = i * J + j goes to engine q mod k, in order.
* ``cost-balanced`` (ours): jobs sorted by cost, largest first, dealt in a boustrophedon
  (snake) order, which approximates longest-processing-time-first; above 4M jobs the
  model uses list scheduling's bound total / k + largest job.

Time = the most loaded engine (makespan) or the transfer time, whichever is larger. Traffic:
both tensors read once from DRAM, every fiber re-read from the GLB once per job, outputs
written once (I x J values). Cost: O(I + J + k^2) for round-robin (closed form), O(I J log(I J))
for cost-balanced up to 4M jobs, O(I + J) above.
"""

from __future__ import annotations

import math

import numpy as np

from flexsparse.model.arch import Architecture
from flexsparse.model.report import Report
from flexsparse.model.workload import Actual, ContractionWorkload, MatmulWorkload

__all__ = ["evaluate_flaash", "DISTRIBUTIONS", "engine_loads"]

DISTRIBUTIONS = ("round-robin", "cost-balanced")
_CHUNK = 1 << 22


def _fiber_lengths(model, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """nnz per leading coordinate (row-major flattened leading modes)."""
    lead = math.prod(shape[:-1])
    if isinstance(model, Actual):
        if len(shape) == 1:
            return np.array([float(model.nnz)])
        idx = np.ravel_multi_index(tuple(model.coords[:-1]), shape[:-1])
        return np.bincount(idx, minlength=lead).astype(np.float64)
    d = model.density_for((lead, shape[-1])) if hasattr(model, "density_for") else model.density
    rng = np.random.default_rng(seed)
    return rng.binomial(shape[-1], d, size=lead).astype(np.float64)


def engine_loads(la: np.ndarray, lb: np.ndarray, engines: int, distribution: str, overhead: float,
                 rate: float) -> tuple[np.ndarray, float]:
    """(per-engine cycles, makespan) for jobs cost(i, j) = overhead + (la[i] + lb[j]) / rate."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown job distribution {distribution!r}; valid: {', '.join(DISTRIBUTIONS)}")
    I, J = la.size, lb.size
    loads = np.zeros(engines)
    if I * J == 0:
        return loads, 0.0
    if distribution == "round-robin":
        # Job (i, j) runs on engine (i*J + j) mod k. Row i starts at residue s_i = i*J mod k, so the
        # loads are a circular convolution (length k) of per-residue row sums with per-residue
        # column sums: exact, O(I + J + k^2), no loop over jobs.
        k = engines
        s_i = (np.arange(I, dtype=np.int64) * (J % k)) % k
        n_s = np.bincount(s_i, minlength=k).astype(np.float64)
        a_s = np.bincount(s_i, weights=la, minlength=k)
        r_j = np.arange(J, dtype=np.int64) % k
        cb = np.bincount(r_j, minlength=k).astype(np.float64)
        lbs = np.bincount(r_j, weights=lb, minlength=k)
        e = np.arange(k)
        idx = (e[:, None] - np.arange(k)[None, :]) % k  # [engine e, residue s] -> column residue e - s
        loads = (cb[idx] * (n_s * overhead + a_s / rate)[None, :] + lbs[idx] * (n_s / rate)[None, :]).sum(axis=1)
        return loads, float(loads.max())
    if I * J <= _CHUNK:
        cost = np.sort((overhead + (la[:, None] + lb[None, :]) / rate).ravel())[::-1]
        pos = np.arange(cost.size) % (2 * engines)
        eng = np.where(pos < engines, pos, 2 * engines - 1 - pos)
        loads = np.bincount(eng, weights=cost, minlength=engines)
        return loads, float(loads.max())
    total = I * J * overhead + (J * la.sum() + I * lb.sum()) / rate
    biggest = overhead + (la.max() + lb.max()) / rate
    loads[:] = total / engines
    return loads, float(total / engines + biggest)


def evaluate_flaash(arch: Architecture, w: ContractionWorkload | MatmulWorkload, distribution: str = "round-robin",
                    seed: int = 0) -> Report:
    """FLAASH on a contraction (a matrix product is read as A rows x B columns)."""
    if isinstance(w, MatmulWorkload):
        a_shape, b_shape = (w.m, w.k), (w.n, w.k)
        la = _fiber_lengths(w.a, a_shape, seed)
        bm = w.b
        if isinstance(bm, Actual):
            bm = Actual(bm.coords[::-1].copy(), b_shape)
        lb = _fiber_lengths(bm, b_shape, seed + 1)
        name, alg, eff = w.name, w.algorithmic_macs, w.effectual_macs()
        count = w.count
    elif isinstance(w, ContractionWorkload):
        la = _fiber_lengths(w.a, w.a_shape, seed)
        lb = _fiber_lengths(w.b, w.b_shape, seed + 1)
        name, alg, count = w.name, w.algorithmic_macs, 1
        eff = w.as_matmul().effectual_macs()
    else:
        raise ValueError(f"flaash evaluates tensor contractions or matrix products, got {type(w).__name__}")
    engines = int(arch.param("engines", arch.compute.count))
    overhead = float(arch.param("job_overhead_cycles", 1.0))
    rate = float(arch.param("merge_per_cycle", 1.0))
    loads, makespan = engine_loads(la, lb, engines, distribution, overhead, rate)
    wb = arch.word_bytes
    entry = wb + 2  # value + 16-bit coordinate
    I, J = la.size, lb.size
    dram = arch.levels[0]
    dram_bytes = (la.sum() + lb.sum()) * entry + I * J * wb
    glb_bytes = (J * la.sum() + I * lb.sum()) * entry
    levels = {dram.name: dram_bytes * dram.read_energy_pj}
    cycles = max(makespan, dram_bytes / dram.bandwidth)
    if len(arch.levels) > 1:
        glb = arch.levels[1]
        levels[glb.name] = glb_bytes * glb.read_energy_pj + (la.sum() + lb.sum()) * entry * glb.write_energy_pj
        cycles = max(cycles, glb_bytes / glb.bandwidth)
    compares = J * la.sum() + I * lb.sum()
    compute_pj = eff * arch.compute.mac_energy_pj + compares * arch.compute.overhead_energy_pj
    mean = loads.mean() if loads.size else 0.0
    return Report(f"flaash-{distribution}", name, cycles=cycles * count, clock_hz=arch.clock_hz,
                  energy_by_level={k: v * count for k, v in levels.items()}, compute_energy_pj=compute_pj * count,
                  dram_bytes=dram_bytes * count, buffer_utilization=float(mean / makespan) if makespan else 0.0,
                  algorithmic_macs=alg, effectual_macs=eff, tiles=0,
                  extras={"jobs": I * J, "engines": engines, "makespan": makespan,
                          "load_imbalance": float(makespan / mean) if mean else 1.0,
                          "nnz": float(la.sum() + lb.sum())})
