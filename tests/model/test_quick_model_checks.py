"""Unit checks of the quick design models (flexsparse.model.validation).

They hold by construction (golden arithmetic, HighLight's ideal time, FLAASH's per-job cost) or by
calibration (the quick DSTC knobs were set against the same table): regression checks of the
quick models, not evidence of fidelity. The external validation is
tests/model/test_sparseloop_artifact.py (Sparseloop engine vs the artifact's reference outputs).
"""

from __future__ import annotations

import numpy as np
import pytest

from flexsparse.model import validation as v


def test_unit_golden_arithmetic():
    g = v.sparseloop_golden()
    assert g == {"algorithmic_macs": 512.0, "effectual_macs": 64.0, "cycles": 64.0}


def test_regression_dstc_calibrated_knobs_reproduce_table():
    t = v.dstc_table()
    assert len(t["rows"]) == 10
    dense = [r for r in t["rows"] if r["a"] == 1.0 and r["b"] == 1.0][0]
    assert dense["model"] == pytest.approx(4600.0)
    for r in t["rows"]:
        assert abs(r["error"]) <= 0.10, r


def test_dstc_cycles_monotone_in_density():
    rows = {(r["a"], r["b"]): r["model"] for r in v.dstc_table(size=1024)["rows"]}
    for a in (0.9, 0.7, 0.5, 0.3):
        assert rows[(a, 1.0)] < rows[(min(1.0, round(a + 0.2, 1)) if a < 0.9 else 1.0, 1.0)]
        assert rows[(a, 0.4)] < rows[(a, 1.0)]


@pytest.mark.parametrize("workload", ["resnet50", "transformer"])
def test_unit_highlight_quick_model_best_or_near_best(workload):
    s = v.highlight_sweep(workload)
    assert len(s["rows"]) == 12
    assert max(r["sparsity"] for r in s["rows"]) > 0.8
    for r in s["rows"]:
        best = min(r["edp"].values())
        assert r["edp"]["highlight"] <= 1.05 * best, r
    assert 0 <= s["dense_overhead"] <= 0.05
    for base in ("dense", "stc", "dstc"):
        assert s["geomean_edp_gain"][base] > 1.0


def test_highlight_gain_grows_with_sparsity():
    rows = sorted(v.highlight_sweep("resnet50")["rows"], key=lambda r: r["sparsity"])
    gains = [r["edp"]["dense"] / r["edp"]["highlight"] for r in rows]
    assert gains[-1] > 3 * gains[0]


def test_unit_quick_tailors_on_generated_powerlaw():
    from dataclasses import replace

    from flexsparse.model import load_architecture
    arch = load_architecture("extensor")
    arch = arch.replace(levels=(arch.levels[0], replace(arch.levels[1], capacity=4096), arch.levels[2]))
    t = v.tailors_compare(v.powerlaw_matrix(20000, 0.0005, 0.8, seed=0), "pl", arch)
    assert t["speedup_vs_n"] > 10
    assert t["speedup_vs_p"] > 1
    assert t["energy_vs_n"] > 1 and t["energy_vs_p"] > 1
    assert 0.05 <= t["overflow_rate"] <= 0.15
    assert t["sampling_fraction_of_prescient"] < 0.25
    assert t["tile_edges"]["n"] < t["tile_edges"]["p"] < t["tile_edges"]["ob"]
    assert t["b90_occupancy_fraction"]["n"] < 0.1  # dense-sized tiles waste the buffer
    assert t["overbooked_tiles"] > 0 and t["bumped_bytes"] > 0
    n = t["reports"]["n"]
    assert n.overbooked_tiles == 0 and n.bumped_bytes == 0


def test_unit_quick_flaash_density_and_linearity():
    s = v.flaash_sweep(densities=(0.005, 0.01, 0.02, 0.05), engines=(64, 128))
    for shape in {r["shape"] for r in s["rows"]}:
        sel = sorted((r for r in s["rows"] if r["shape"] == shape and r["engines"] == 128), key=lambda r: r["density"])
        cyc = [r["cycles"] for r in sel]
        assert cyc == sorted(cyc) and cyc[0] < cyc[-1]
        sp = [r["speedup_vs_dense"] for r in sel]
        assert sp[0] > sp[-1] > 1
        e64 = [r for r in s["rows"] if r["shape"] == shape and r["engines"] == 64 and r["density"] == 0.05][0]
        assert e64["cycles"] > sel[-1]["cycles"]
    for r2 in s["linear_r2"].values():
        assert r2 > 0.98


def test_flaash_cost_balanced_beats_round_robin_on_skew():
    b = v.flaash_balance()
    assert b["skewed"]["cost_balanced"] < b["skewed"]["round_robin"]
    assert b["skewed"]["gain"] > 2.0
    assert b["uniform"]["cost_balanced"] <= b["uniform"]["round_robin"] * 1.001
    assert b["skewed"]["cb_imbalance"] < 1.1


def test_geomean():
    assert v.geomean([1, 4]) == pytest.approx(2.0)
    assert v.geomean(np.array([3.0])) == pytest.approx(3.0)
