"""The model against Sparseloop's own reference outputs (MICRO'22 artifact).

Needs the artifact (Accelergy-Project/micro22-sparseloop-artifact) outside the repository;
point FLEXSPARSE_SPARSELOOP_ARTIFACT at it. Each test skips with a message when it is absent.
Targets: table7 cycles and energy within 5% on every layer; fig15 and fig12 within 10% on at
least 90% of the cases; per-level pJ/compute within 10% wherever the reference is >= 0.1 pJ.
"""

from __future__ import annotations

import pytest

from flexsparse.model.sparseloop import artifact as art

ROOT = art.find_artifact()
needs_artifact = pytest.mark.skipif(
    ROOT is None, reason=f"Sparseloop artifact not found: set {art.ARTIFACT_ENV} to a checkout of "
                         "Accelergy-Project/micro22-sparseloop-artifact")


def _check(setup: str, tol: float, min_fraction: float) -> None:
    rows = [art.compare(c) for c in art.cases(setup, ROOT)]
    assert rows, f"no {setup} cases found under {ROOT}"
    s = art.summarize(rows, tol)
    assert s["fraction"] >= min_fraction, s
    bad = [(r["case"], name, v) for r in rows for name, v in r["levels"].items()
           if v["reference"] >= 0.1 and abs(v["error"]) > tol]
    assert not bad, bad[:5]


@needs_artifact
def test_table7_eyeriss_within_5_percent():
    rows = [art.compare(c) for c in art.cases("table7", ROOT)]
    assert len(rows) == 10
    for r in rows:
        assert abs(r["cycles_error"]) <= 0.05 and abs(r["energy_error"]) <= 0.05, r
    _check("table7", 0.05, 1.0)


@needs_artifact
def test_fig15_stc_family_within_10_percent():
    assert len(art.cases("fig15", ROOT)) == 96
    _check("fig15", 0.10, 0.90)


@needs_artifact
def test_fig12_eyerissv2_pe_within_10_percent():
    assert len(art.cases("fig12", ROOT)) == 14
    _check("fig12", 0.10, 0.90)


@needs_artifact
def test_fig13_dstc_against_the_dstc_paper():
    # No Timeloop outputs here: normalised latency against the DSTC paper's digitised numbers,
    # scored as the artifact scores it. Measured 92.6% (MODEL.md); the bound guards regressions.
    res = art.dstc_fig13(ROOT)
    assert len(res["rows"]) == 10
    dense = [r for r in res["rows"] if r["A_density"] == 1.0 and r["B_density"] == 1.0][0]
    assert dense["model"] == dense["reference"] == 1.0
    assert res["average_accuracy"] >= 0.90
    cyc = {(r["A_density"], r["B_density"]): r["cycles"] for r in res["rows"]}
    for a in (0.9, 0.7, 0.5, 0.3):                       # sparser A never slower
        assert cyc[(a, 1.0)] < cyc[(1.0, 1.0)] and cyc[(a, 0.4)] < cyc[(a, 1.0)]
