"""Unit checks of the quick design models (``flexsparse model unit-checks``; tests/model).

These are NOT validations: each holds by construction or by calibration of the quick models'
own knobs, so none could expose a modelling error. The external validation of the model is the
Sparseloop engine against the Sparseloop artifact's reference outputs
(:mod:`flexsparse.model.sparseloop.artifact`), and the design claims are re-derived on that
engine with sensitivity analyses (:mod:`flexsparse.model.sparseloop.studies`).

1. :func:`sparseloop_golden` - arithmetic of the 8x8x8 SpMSpM (effectual MACs are
   ``m k n dA dB`` by construction).
2. :func:`dstc_table` - the quick DSTC model against the digitised table; its step overhead,
   fragment size and bandwidth were chosen against that same table (a calibration).
3. :func:`highlight_sweep` - quick-model EDP across 12 HSS degrees (HighLight's cycles are the
   ideal dense time x density by construction).
4. :func:`tailors_compare` - quick ExTensor-N / -P / -OB (dominated by the ``tile_pair_cycles``
   knob).
5. :func:`flaash_sweep` / :func:`flaash_balance` - quick FLAASH (each job ``1 + len_a + len_b``
   cycles by construction).

Every function returns plain dicts of numbers. Cost: seconds (the statistical checks are
O(layers); the tiled ones O(nnz log nnz) per tiling).

>>> sparseloop_golden()["cycles"]
64.0
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from flexsparse.model.arch import Architecture, load_architecture
from flexsparse.model.designs import evaluate
from flexsparse.model.workload import (
    HSS,
    Actual,
    ContractionWorkload,
    MatmulWorkload,
    PowerLaw,
    Structured,
    Uniform,
    load_workload,
    with_operands,
)

__all__ = ["DSTC_TABLE", "HSS_DEGREES", "sparseloop_golden", "dstc_table", "highlight_sweep", "tailors_compare",
           "flaash_sweep", "flaash_balance", "geomean", "powerlaw_matrix", "extensor_arch"]

#: Sparseloop artifact's digitised DSTC cycles for 4096^3: A density -> (B = 1.0, B = 0.4).
DSTC_TABLE = {1.0: (4600, 2500), 0.9: (4160, 2300), 0.7: (3300, 1820), 0.5: (2690, 1480), 0.3: (1930, 1100)}
#: HighLight's example set: upper {4:4, 4:5, 4:6, 4:7} x lower {4:4, 2:4, 1:4}.
HSS_DEGREES = tuple(((4, h1), (g0, 4)) for h1 in (4, 5, 6, 7) for g0 in (4, 2, 1))


def geomean(xs: Any) -> float:
    """Geometric mean of positive numbers."""
    xs = np.asarray(list(xs), dtype=float)
    return float(np.exp(np.mean(np.log(xs))))


def sparseloop_golden() -> dict[str, float]:
    """8x8x8, A fixed-structured density 0.25, B 0.5, one MAC that skips on either zero operand."""
    w = MatmulWorkload("sparseloop-golden", 8, 8, 8, Structured(2, 8), Structured(4, 8))
    r = evaluate("generic", w)
    return {"algorithmic_macs": r.algorithmic_macs, "effectual_macs": r.effectual_macs, "cycles": r.cycles}


def _fed(arch: Architecture, factor: float) -> Architecture:
    return arch.replace(levels=tuple(replace(lv, bandwidth=lv.bandwidth * factor) for lv in arch.levels))


def dstc_table(size: int = 4096, bandwidth_factor: float = 16.0) -> dict[str, Any]:
    """Model cycles for every cell of :data:`DSTC_TABLE`, scaled so the dense corner reads 4600.

    ``bandwidth_factor`` multiplies every level's bandwidth of the ``dstc`` preset (a GPU's memory
    system feeds its tensor cores; our 64 B/cycle DRAM would make 4096^3 memory bound).
    """
    arch = _fed(load_architecture("dstc"), bandwidth_factor)
    raw = {}
    for da in DSTC_TABLE:
        for db in (1.0, 0.4):
            w = MatmulWorkload("dstc", size, size, size, Uniform(da), Uniform(db))
            raw[(da, db)] = evaluate("dstc", w, arch).cycles
    scale = 4600.0 / raw[(1.0, 1.0)]
    rows = []
    for da, (c1, c2) in DSTC_TABLE.items():
        for db, pub in ((1.0, c1), (0.4, c2)):
            model = raw[(da, db)] * scale
            rows.append({"a": da, "b": db, "published": pub, "model": model, "error": (model - pub) / pub})
    return {"scale": scale, "rows": rows, "max_abs_error": max(abs(r["error"]) for r in rows)}


def highlight_sweep(workload: str = "resnet50", act_density: float = 1.0,
                    designs: tuple[str, ...] = ("dense", "stc", "dstc", "highlight")) -> dict[str, Any]:
    """EDP (pJ*s), cycles and energy of each design at each HSS degree of the weights."""
    base = load_workload(workload)
    rows = []
    for levels in HSS_DEGREES:
        w = with_operands(base, a=HSS(levels), b=Uniform(act_density))
        reps = {d: evaluate(d, w) for d in designs}
        rows.append({"levels": levels, "sparsity": 1 - HSS(levels).density,
                     "edp": {d: r.edp for d, r in reps.items()}, "cycles": {d: r.cycles for d, r in reps.items()},
                     "energy": {d: r.energy_pj for d, r in reps.items()}})
    gains = {d: geomean(r["edp"][d] / r["edp"]["highlight"] for r in rows) for d in designs if d != "highlight"}
    worst_gap = max(r["edp"]["highlight"] / min(r["edp"].values()) for r in rows)
    dense_row = rows[0]
    return {"workload": workload, "rows": rows, "geomean_edp_gain": gains, "worst_gap_to_best": worst_gap,
            "dense_overhead": dense_row["edp"]["highlight"] / dense_row["edp"]["dense"] - 1}


def powerlaw_matrix(n: int, density: float, alpha: float = 0.8, seed: int = 0) -> Actual:
    """A generated power-law n x n matrix (the tests' stand-in for SNAP graphs)."""
    r, c = PowerLaw(density, alpha).sample((n, n), np.random.default_rng(seed))
    return Actual(np.stack([r, c]).astype(np.int64), (n, n))


def extensor_arch(glb_bytes: int = 4096) -> Architecture:
    """The ``extensor`` preset with a ``glb_bytes`` tile buffer (small matrices need a small buffer
    to have more than a handful of tiles)."""
    arch = load_architecture("extensor")
    return arch.replace(levels=(arch.levels[0], replace(arch.levels[1], capacity=glb_bytes)) + arch.levels[2:])


def tailors_compare(matrix: Any, name: str = "matrix", arch: Architecture | None = None) -> dict[str, Any]:
    """ExTensor-N/-P/-OB on ``matrix @ matrix``: speedups, energy ratios, overflow and sampling cost."""
    w = MatmulWorkload.from_data(matrix, matrix if not isinstance(matrix, Actual) else matrix, name=name)
    reps = {s: evaluate(f"extensor-{s}", w, arch) for s in ("n", "p", "ob")}
    ob, p = reps["ob"], reps["p"]
    return {
        "name": name, "nnz": int(w.a.nnz) if isinstance(w.a, Actual) else None,
        "speedup_vs_n": reps["n"].cycles / ob.cycles, "speedup_vs_p": p.cycles / ob.cycles,
        "energy_vs_n": reps["n"].energy_pj / ob.energy_pj, "energy_vs_p": p.energy_pj / ob.energy_pj,
        "overflow_rate": ob.extras["overflow_rate"], "overflow_rate_nonempty": ob.extras["overflow_rate_nonempty"],
        "sampling_fraction_of_prescient":
            ob.extras["preprocessing_bytes"] / max(p.extras["preprocessing_bytes"], 1e-300),
        "tile_edges": {s: r.extras["tile_edge"] for s, r in reps.items()},
        "b90_occupancy_fraction": {s: r.extras["b90_occupancy_fraction"] for s, r in reps.items()},
        "bumped_bytes": ob.bumped_bytes, "overbooked_tiles": ob.overbooked_tiles, "tiles": ob.tiles,
        "reports": reps,
    }


def _dense_like(engines: int) -> Architecture:
    """The dense design resized to ``engines`` MACs (same count as FLAASH's engines)."""
    arch = load_architecture("dense")
    rows = 2 ** (int(math.log2(engines)) // 2)
    return arch.replace(compute=replace(arch.compute, count=engines),
                        design_params={"array_rows": rows, "array_cols": engines // rows})


def flaash_sweep(densities: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05),
                 engines: tuple[int, ...] = (32, 64, 128, 256), seed: int = 0) -> dict[str, Any]:
    """FLAASH cycles on the TCL shapes per density and engine count, and speedup over ``dense``."""
    shapes = load_workload("tcl").layers
    rows = []
    base = load_architecture("flaash")
    for c in shapes:
        for d in densities:
            w = ContractionWorkload(c.name, c.a_shape, c.b_shape, Uniform(d), Uniform(d))
            dense = evaluate("dense", w, _dense_like(128))
            for e in engines:
                arch = base.replace(compute=replace(base.compute, count=e),
                                    design_params={**base.design_params, "engines": e})
                r = evaluate("flaash", w, arch, seed=seed)
                rows.append({"shape": c.name, "density": d, "engines": e, "cycles": r.cycles,
                             "nnz": r.extras["nnz"], "dense_cycles": dense.cycles,
                             "speedup_vs_dense": dense.cycles / r.cycles})
    sel = [r for r in rows if r["engines"] == 128]
    nnz, cyc = np.array([r["nnz"] for r in sel]), np.array([r["cycles"] for r in sel])
    fits = {}
    for name in {r["shape"] for r in sel}:
        idx = [i for i, r in enumerate(sel) if r["shape"] == name]
        x, y = nnz[idx], cyc[idx]
        coef = np.polyfit(x, y, 1)
        resid = y - np.polyval(coef, x)
        fits[name] = float(1 - resid.var() / y.var()) if y.var() > 0 else 1.0
    return {"rows": rows, "linear_r2": fits}


def flaash_balance(fibers_a: int = 512, fibers_b: int = 128, k: int = 4096, density: float = 0.01,
                   alpha: float = 1.0, engines: int = 128, seed: int = 0) -> dict[str, Any]:
    """Round-robin vs cost-balanced on skewed (power-law) fibers; J = ``fibers_b`` jobs per row."""
    rng = np.random.default_rng(seed)
    out = {}
    for label, model in (("uniform", Uniform(density)), ("skewed", PowerLaw(density, alpha))):
        ra, ca = model.sample((fibers_a, k), rng)
        rb, cb = model.sample((fibers_b, k), rng)
        w = ContractionWorkload(label, (fibers_a, k), (fibers_b, k), Actual(np.stack([ra, ca]), (fibers_a, k)),
                                Actual(np.stack([rb, cb]), (fibers_b, k)))
        arch = load_architecture("flaash")
        arch = arch.replace(design_params={**arch.design_params, "engines": engines})
        rr, cb_ = evaluate("flaash", w, arch), evaluate("flaash-cb", w, arch)
        out[label] = {"round_robin": rr.cycles, "cost_balanced": cb_.cycles, "gain": rr.cycles / cb_.cycles,
                      "rr_imbalance": rr.extras["load_imbalance"], "cb_imbalance": cb_.extras["load_imbalance"]}
    return out
