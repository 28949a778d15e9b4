"""Design studies on the Sparseloop engine: small instances checked against hand counts."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from flexsparse.model.sparseloop.studies import flaash, highlight, tailors
from flexsparse.model.sparseloop.studies.common import geomean, sensitivity


@dataclasses.dataclass(frozen=True)
class _P:
    a: int = 4
    b: float = 1.0
    name: str = "x"


def test_sensitivity_halves_and_doubles_every_numeric_parameter():
    seen = []

    def run(p):
        seen.append(p)
        return {"holds": p.a * p.b >= 4, "claims": {"big": p.a * p.b >= 4, "always": True}}
    out = sensitivity(_P(), run)
    assert set(out["variants"]) == {"a x0.5", "a x2", "b x0.5", "b x2"}
    assert out["fails_under"] == ["a x0.5", "b x0.5"]
    assert out["claims"]["big"] == {"holds_at_base": True, "fails_under": ["a x0.5", "b x0.5"]}
    assert out["claims"]["always"]["fails_under"] == []
    assert not out["holds_everywhere"]
    assert any(isinstance(p.a, int) and p.a == 2 for p in seen)
    assert geomean([2.0, 8.0]) == pytest.approx(4.0)


def test_flaash_effectual_macs_and_speedup():
    rows = flaash.run(shapes=flaash.SHAPES[:1], densities=(0.01, 0.05))
    _name, lead, k, j = flaash.SHAPES[0]
    for r in rows:
        expected = math.prod(lead) * j * k * r["density"] ** 2
        assert r["effectual_macs"] == pytest.approx(expected, rel=0.05, abs=2)
        assert r["speedup_vs_dense"] > 1
    assert rows[0]["speedup_vs_dense"] > rows[1]["speedup_vs_dense"]
    dense = flaash.evaluate_point(flaash.FLParams(), flaash.SHAPES[0], 0.05, "dense")
    assert dense.computes == dense.algorithmic_computes == math.prod(lead) * j * k
    c = flaash.conclusions(rows)
    assert set(c["claims"]) == set(flaash.CLAIMS)


def test_rmat_generator():
    c, n = tailors.rmat(8, 4, seed=1)
    assert n == 256 and c.shape[0] == 2 and 0 < c.shape[1] <= 4 * 256
    assert c.min() >= 0 and c.max() < n
    assert len({(int(x), int(y)) for x, y in c.T}) == c.shape[1]
    c2, _ = tailors.rmat(8, 4, seed=1)
    assert np.array_equal(c, c2)
    deg = np.bincount(c[0], minlength=n)
    assert deg.max() > 4 * deg.mean()                      # skewed degrees


def test_tailors_small_graph():
    c, n = tailors.chung_lu(600, 3000, 0.8, seed=2)
    p = tailors.TLParams(llb_words=2048, pes=16, swiftiles_samples=16)
    r = tailors.compare(c, n, "small", p)
    share = p.llb_words / 2
    edges = r["tile_edges"]
    assert edges["N"] ** 2 <= share
    assert edges["N"] <= edges["P"] <= edges["OB"]
    assert r["P"]["tiles_overflowing"] == 0.0 and r["N"]["tiles_overflowing"] == 0.0
    # Effectual MACs of A @ A counted on the data: sum_k nnz(column k) * nnz(row k).
    a = np.zeros((r["n_padded"],) * 2, dtype=int)
    a[c[0], c[1]] = 1
    effectual = float((a.sum(axis=0) * a.sum(axis=1)).sum())
    for k in ("N", "P", "OB"):
        assert r[k]["computes"] == pytest.approx(effectual, rel=0.05)
    assert r["speedup_vs_N"] > 1 and r["energy_vs_N"] > 1
    assert r["P"]["tax_words"] > r["OB"]["tax_words"] > 0 == r["N"]["tax_words"]


def test_highlight_metadata_bits_and_effectual_computes():
    assert highlight.highlight_md_bits(4, 4) == 0
    assert highlight.highlight_md_bits(4, 2) == 2
    assert highlight.highlight_md_bits(6, 2) == 4            # 2 + log2(6) / 2 = 3.29, rounded up
    layer = ("tiny", 64, 256, 64)
    ev = highlight.evaluate_point(highlight.HLParams(), "highlight", layer, 6, 2, 1.0)
    k_pad, n_pad = highlight.padded(256, 64, 6, 2)
    assert ev.computes == pytest.approx(64 * k_pad * n_pad * (4 / 6) * (2 / 4), rel=0.01)
    dense = highlight.evaluate_point(highlight.HLParams(), "dense", layer, 6, 2, 1.0)
    assert dense.computes == 64 * k_pad * n_pad
    assert ev.cycles < dense.cycles
    gated = highlight.evaluate_point(highlight.HLParams(), "highlight", layer, 6, 2, 0.5)
    assert gated.energy_pj < ev.energy_pj and gated.cycles == ev.cycles   # gating saves energy, not time
