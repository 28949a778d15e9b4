"""GEMM designs: ``generic`` (Sparseloop-style), ``dense``, ``stc`` (2:4), ``dstc`` (dual-side), ``highlight`` (HSS).

All share one dataflow (:func:`flexsparse.model.dataflow.gemm_traffic`): A (weights, [m, k]) and B
(activations, [k, n]) move DRAM -> GLB -> a ``array_rows x array_cols`` PE array; outputs are
written once. Designs differ only in what their hardware can skip:

* ``dense``: nothing; cycles = padded m x k x n / MACs.
* ``generic``: applies the architecture's per-operand features: ``skip`` at ``compute`` saves
  time and energy, ``gate`` saves energy only (Sparseloop's semantics).
* ``stc``: weights that obey 2:4 along k run in half the cycles with 2-bit metadata per kept
  value; anything else runs dense.
* ``highlight``: HSS weights (outer levels skip empty groups, the 2:4-style lower level skips
  zeros inside kept groups) -> cycles scale with the HSS density; H:H levels carry no metadata;
  zero activations are gated.
* ``dstc``: outer product per k on ``fragment_rows x fragment_cols`` warp tiles; A's column
  fragment and B's row fragment are condensed (bitmask) and multiplied on an ``array_rows x
  array_cols`` unit in ceil(a / rows) * ceil(b / cols) cycles plus ``step_overhead_cycles``
  per non-empty step; partial sums go to an accumulation buffer (read+write per MAC).
  Counts come from the data (per-k fragment sums) or from binomial expectations.

Cost: O(1) for statistical operands, O(nnz log nnz) for actual data.
"""

from __future__ import annotations

import math

import numpy as np

from flexsparse.model.arch import Architecture, SparseFeature
from flexsparse.model.dataflow import (
    binom_ceil_mean,
    fragment_ceil_sums,
    gemm_traffic,
    hss_levels,
    is_gh_compatible,
    level_cycles,
    level_energy,
    storage_bits,
)
from flexsparse.model.report import Report
from flexsparse.model.workload import Actual, MatmulWorkload

__all__ = ["evaluate_gemm"]


def _nnz(w: MatmulWorkload, op: str) -> float:
    model = getattr(w, op)
    if isinstance(model, Actual):
        return float(model.nnz)
    return (w.density_a * w.m * w.k) if op == "a" else (w.density_b * w.k * w.n)


def _padded_macs(arch: Architecture, w: MatmulWorkload) -> float:
    rows, cols = int(arch.param("array_rows", 1)), int(arch.param("array_cols", 1))
    return float(math.ceil(w.m / rows) * rows * w.k * math.ceil(w.n / cols) * cols)


def _finish(design: str, arch: Architecture, w: MatmulWorkload, compute_cycles: float, executed: float,
            energy_macs: float, fa: SparseFeature | None, fb: SparseFeature | None,
            extra_reads: dict[str, float] | None = None, extras: dict | None = None) -> Report:
    """Traffic, energy and time of one layer given its compute cycles and MAC counts."""
    wb = arch.word_bytes
    av, am = storage_bits(fa, w.a, (w.m, w.k), _nnz(w, "a"), fiber_axis=1, word_bits=arch.word_bits)
    bv, bm = storage_bits(fb, w.b, (w.k, w.n), _nnz(w, "b"), fiber_axis=0, word_bits=arch.word_bits)
    a_bytes, b_bytes = av * wb + am / 8, bv * wb + bm / 8
    tr = gemm_traffic(arch, w.m, w.k, w.n, a_bytes, b_bytes, executed)
    for name, extra in (extra_reads or {}).items():  # e.g. DSTC's accumulation buffer read-modify-write
        tr.reads[name] = tr.reads.get(name, 0.0) + extra
        tr.writes[name] = tr.writes.get(name, 0.0) + extra
    cycles = max(compute_cycles, level_cycles(arch, tr))
    levels = level_energy(arch, tr)
    cu = arch.compute
    compute_pj = (energy_macs * (cu.mac_energy_pj + cu.overhead_energy_pj)
                  + (executed - energy_macs) * cu.gated_energy_pj)
    c = w.count
    eff = w.effectual_macs()
    return Report(design, w.name, cycles=cycles * c, clock_hz=arch.clock_hz,
                  energy_by_level={k: v * c for k, v in levels.items()}, compute_energy_pj=compute_pj * c,
                  dram_bytes=(tr.reads[arch.levels[0].name] + tr.writes[arch.levels[0].name]) * c,
                  buffer_utilization=tr.buffer_utilization, algorithmic_macs=w.algorithmic_macs,
                  effectual_macs=eff, executed_macs=executed * c,
                  extras={"a_bytes": a_bytes, "b_bytes": b_bytes, "compute_cycles": compute_cycles * c,
                          **(extras or {})})


def _dense(arch: Architecture, w: MatmulWorkload) -> Report:
    alg = float(w.m * w.k * w.n)
    return _finish("dense", arch, w, _padded_macs(arch, w) / arch.compute.count, alg, alg, None, None)


def _generic(arch: Architecture, w: MatmulWorkload) -> Report:
    alg = float(w.m * w.k * w.n)
    eff = w.effectual_macs() / w.count
    dens = {"a": w.density_a, "b": w.density_b}
    acts = {op: (arch.feature(op.upper(), "compute").action if arch.feature(op.upper(), "compute") else "none")
            for op in ("a", "b")}

    def macs(kinds: tuple[str, ...]) -> float:
        ops = [op for op in ("a", "b") if acts[op] in kinds]
        if len(ops) == 2:
            return eff
        return alg * (dens[ops[0]] if ops else 1.0)
    time_macs, energy_macs = macs(("skip",)), macs(("skip", "gate"))
    glb = arch.levels[1].name if len(arch.levels) > 1 else arch.levels[0].name
    fa, fb = arch.feature("A", glb) or arch.feature("A"), arch.feature("B", glb) or arch.feature("B")
    fa = fa if fa is not None and fa.level != "compute" else None
    fb = fb if fb is not None and fb.level != "compute" else None
    padded = _padded_macs(arch, w) / alg
    return _finish("generic", arch, w, math.ceil(time_macs * padded / arch.compute.count), time_macs,
                   energy_macs, fa, fb)


def _stc(arch: Architecture, w: MatmulWorkload) -> Report:
    alg = float(w.m * w.k * w.n)
    ok = w.weights and is_gh_compatible(w.a, 2, 4, (w.m, w.k), axis=1) and w.density_a < 1.0
    if not ok:  # dense mode: no metadata, full cycles
        rep = _finish("stc", arch, w, _padded_macs(arch, w) / arch.compute.count, alg, alg, None, None,
                      extras={"sparse_mode": False})
        return rep
    fa = SparseFeature("A", arch.levels[1].name if len(arch.levels) > 1 else arch.levels[0].name, "gh", 2, "skip")
    # 2:4 storage: half the values (zeros padded into the kept slots), 2 bits each
    from flexsparse.model.workload import Structured
    w24 = MatmulWorkload(w.name, w.m, w.k, w.n, Structured(2, 4), w.b, w.count, w.weights)
    half = alg / 2
    rep = _finish("stc", arch, w24, _padded_macs(arch, w) / 2 / arch.compute.count, half, half, fa, None,
                  extras={"sparse_mode": True})
    return _relabel(rep, w)


def _relabel(rep: Report, w: MatmulWorkload) -> Report:
    from dataclasses import replace
    return replace(rep, effectual_macs=w.effectual_macs())


def _highlight(arch: Architecture, w: MatmulWorkload) -> Report:
    alg = float(w.m * w.k * w.n)
    levels = hss_levels(w.a) if w.weights else None
    low_h, up_max = int(arch.param("hss_lower_h", 4)), int(arch.param("hss_upper_h_max", 8))
    glb = arch.levels[1].name if len(arch.levels) > 1 else arch.levels[0].name
    if levels is None:
        if not isinstance(w.a, Actual) and w.density_a < 1.0 and w.weights:
            raise ValueError(f"highlight needs HSS (G:H per level) weights; layer {w.name!r} has "
                             f"unstructured density {w.density_a:.3g} (use HSS(...) or Structured(g, h))")
        rep = _finish("highlight", arch, w, _padded_macs(arch, w) / arch.compute.count, alg, alg * w.density_b,
                      None, None, extras={"hss": None})
        return rep
    if levels[-1][1] != low_h or any(h > up_max for _, h in levels[:-1]) or len(levels) > 2:
        raise ValueError(f"highlight supports HSS 'G1:H1 -> G0:{low_h}' with H1 <= {up_max}; layer {w.name!r} "
                         f"has levels {levels}")
    d = w.density_a
    fa = SparseFeature("A", glb, "hss", 0, "skip")
    executed = alg * d
    return _finish("highlight", arch, w, _padded_macs(arch, w) * d / arch.compute.count, executed,
                   executed * w.density_b, fa, None, extras={"hss": levels})


def _dstc_step_sums(arch: Architecture, w: MatmulWorkload) -> tuple[float, float]:
    """(sum over steps of ceil(a/rows)*ceil(b/cols), number of non-empty steps)."""
    fr, fc = int(arch.param("fragment_rows", 64)), int(arch.param("fragment_cols", 64))
    ar, ac = int(arch.param("array_rows", 8)), int(arch.param("array_cols", 8))
    per_k = []
    for op, frag, width, length in (("a", fr, ar, w.m), ("b", fc, ac, w.n)):
        model = getattr(w, op)
        if isinstance(model, Actual):
            other, kk = (model.coords[0], model.coords[1]) if op == "a" else (model.coords[1], model.coords[0])
            per_k.append(fragment_ceil_sums(other // frag, kk, w.k, width))
        else:
            d = w.density_a if op == "a" else w.density_b
            full, rest = divmod(length, frag)  # the last fragment is shorter when frag does not divide
            s = full * binom_ceil_mean(frag, d, width) + binom_ceil_mean(rest, d, width)
            nz = full * binom_ceil_mean(frag, d, width, True) + binom_ceil_mean(rest, d, width, True)
            per_k.append((np.full(w.k, s), np.full(w.k, nz)))
    (sa, na), (sb, nb) = per_k
    return float(np.dot(sa, sb)), float(np.dot(na, nb))


def _dstc(arch: Architecture, w: MatmulWorkload) -> Report:
    ar, ac = int(arch.param("array_rows", 8)), int(arch.param("array_cols", 8))
    units = max(1, arch.compute.count // (ar * ac))
    work, steps = _dstc_step_sums(arch, w)
    cycles = (work + float(arch.param("step_overhead_cycles", 0.0)) * steps) / units
    eff = w.effectual_macs() / w.count
    glb = arch.levels[1].name if len(arch.levels) > 1 else arch.levels[0].name
    fa, fb = SparseFeature("A", glb, "bitmask", 1, "skip"), SparseFeature("B", glb, "bitmask", 1, "skip")
    acc = [lv.name for lv in arch.levels if lv.name.lower().startswith("acc")]
    extra = {acc[0]: eff * 4.0} if acc else {}  # fp32 partial sum read + write per effectual MAC
    return _finish("dstc", arch, w, cycles, eff, eff, fa, fb, extra_reads=extra,
                   extras={"outer_product_steps": steps * w.count})


GEMM_DESIGNS = {"generic": _generic, "dense": _dense, "stc": _stc, "dstc": _dstc, "highlight": _highlight}


def evaluate_gemm(design: str, arch: Architecture, w: MatmulWorkload) -> Report:
    """One layer on one of :data:`GEMM_DESIGNS`."""
    if not isinstance(w, MatmulWorkload):
        raise ValueError(f"design {design!r} evaluates matrix products, got a {type(w).__name__}")
    return GEMM_DESIGNS[design](arch, w)


