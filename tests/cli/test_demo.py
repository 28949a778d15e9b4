"""``flexsparse demo``: quick run, peer columns, best-cell marks, the R-MAT row, peer loading."""

from __future__ import annotations

import importlib.util
import math
import sys
import time

import numpy as np
import pytest
import scipy.sparse as sp

import flexsparse as fs
from flexsparse import _peers, demo

HAS_GRAPHBLAS = importlib.util.find_spec("graphblas") is not None
HAS_MKL = importlib.util.find_spec("sparse_dot_mkl") is not None


@pytest.fixture(scope="module")
def quick_rows():
    """One quick demo run shared by the tests below (the demo's own CI cost)."""
    return demo.run_demo(quick=True, repeat=1)


def test_quick_demo_runs_checks_and_marks(quick_rows):
    assert len(quick_rows) >= 6
    assert all(r.get("correct", True) for r in quick_rows)
    assert all(r["flexsparse_s"] > 0 and r["first_call_s"] > 0 for r in quick_rows)
    for r in quick_rows:
        times = {demo.FLEXSPARSE: r["flexsparse_s"], **r["peers"]}
        assert r["best"] and all(times[b] == min(times.values()) for b in r["best"])
        if r["peers"]:
            assert r["ratio_to_best_peer"] == pytest.approx(r["flexsparse_s"] / min(r["peers"].values()))


def test_quick_demo_has_the_rmat_row_checked_against_scipy(quick_rows):
    rmat = [r for r in quick_rows if "R-MAT" in r["workload"]]
    assert len(rmat) == 1
    (r,) = rmat
    assert "2^12" in r["workload"] and "quick" in r["workload"]
    assert r["shape"][1] == (1 << 12, 1 << 12)
    assert r["checked"] == "SciPy" and r["correct"] is True


def test_quick_demo_columns_follow_the_installed_peers(quick_rows):
    spgemm = [r for r in quick_rows if r["spec"] == "ij,jk->ik"]
    assert spgemm
    for r in spgemm:
        assert "SciPy" in r["peers"]
        assert ("GraphBLAS" in r["peers"]) == HAS_GRAPHBLAS
        assert ("MKL" in r["peers"]) == HAS_MKL
    others = [r for r in quick_rows if r["spec"] != "ij,jk->ik"]
    assert others and not any({"SciPy", "GraphBLAS", "MKL"} & set(r["peers"]) for r in others)


def _small_workload():
    import flexsparse as fs

    a = sp.random_array((40, 40), density=0.1, rng=3, format="csr")
    coo = fs.from_scipy(a)
    return demo.Workload("small", "ij,jk->ik", [coo, coo], "test", matrix=a), a


def test_unavailable_peers_get_no_column():
    wl, _ = _small_workload()
    info = {"SciPy": _peers.PeerInfo("SciPy", True, "x"),
            "GraphBLAS": _peers.PeerInfo("GraphBLAS", False, "not loaded"),
            "MKL": _peers.PeerInfo("MKL", False, "not loaded")}
    demo._add_peers(wl, info)
    assert "SciPy" in wl.peers and "GraphBLAS" not in wl.peers and "MKL" not in wl.peers


@pytest.mark.parametrize("peer", ["GraphBLAS", "MKL"])
def test_available_peer_gets_a_column_that_computes_the_product(peer):
    if not {"GraphBLAS": HAS_GRAPHBLAS, "MKL": HAS_MKL}[peer]:
        pytest.skip(f"{peer} not installed (pip install flexsparse[bench])")
    info = _peers.setup_peers(2)
    if not info[peer].available:
        pytest.skip(f"{peer} installed but not loadable: {info[peer].detail}")
    wl, a = _small_workload()
    demo._add_peers(wl, info)
    got = wl.peers[peer]()
    got = sp.csr_array(_to_scipy(got))
    np.testing.assert_allclose(got.toarray(), (a @ a).toarray(), rtol=1e-12, atol=1e-12)


def _to_scipy(res):
    if sp.issparse(res):
        return res
    import graphblas as gb

    return gb.io.to_scipy_sparse(res, format="csr")


def test_setup_peers_reports_a_missing_peer(monkeypatch):
    monkeypatch.setitem(sys.modules, "graphblas", None)  # import graphblas -> ImportError
    info = _peers.setup_peers(1)
    assert info["SciPy"].available
    assert not info["GraphBLAS"].available and "graphblas" in info["GraphBLAS"].detail
    with pytest.raises(ValueError, match="threads"):
        _peers.setup_peers(0)


def test_mkl_runtime_points_mkl_rt_at_the_wheel_library(tmp_path, monkeypatch):
    monkeypatch.delenv("MKL_RT", raising=False)
    assert _peers.mkl_runtime(str(tmp_path)) is None
    (tmp_path / "lib").mkdir()
    lib = tmp_path / "lib" / "libmkl_rt.so.2"
    lib.write_bytes(b"")
    assert _peers.mkl_runtime(str(tmp_path)) == str(lib)
    import os

    assert os.environ["MKL_RT"] == str(lib)
    monkeypatch.setenv("MKL_RT", "/elsewhere/libmkl_rt.so")  # a set MKL_RT wins
    assert _peers.mkl_runtime(str(tmp_path)) == "/elsewhere/libmkl_rt.so"


def test_best_marks_on_a_synthetic_table():
    m = demo.best_marks({"flexsparse": 2.0, "SciPy": 1.0, "MKL": 4.0, "GraphBLAS": None})
    assert m["best"] == ["SciPy"] and m["best_peer"] == "SciPy" and m["ratio"] == pytest.approx(2.0)
    m = demo.best_marks({"flexsparse": 0.5, "SciPy": 1.0, "MKL": 0.8})
    assert m["best"] == ["flexsparse"] and m["best_peer"] == "MKL" and m["ratio"] == pytest.approx(0.625)
    m = demo.best_marks({"flexsparse": 1.0, "NumPy": 1.0})  # a tie marks both
    assert sorted(m["best"]) == ["NumPy", "flexsparse"] and m["ratio"] == pytest.approx(1.0)
    m = demo.best_marks({"flexsparse": 1.0})  # no peer ran
    assert m["best"] == ["flexsparse"] and m["best_peer"] is None and m["ratio"] is None
    assert demo.best_marks({"flexsparse": None, "SciPy": math.inf})["best"] == []


def test_render_table_marks_exactly_the_fastest_cell():
    from rich.console import Console

    rows = [{"workload": "w1", "nnz": [3, 3], "flexsparse_s": 2e-3, "peers": {"SciPy": 1e-3, "MKL": 3e-3},
             "checked": "SciPy", "correct": True},
            {"workload": "w2", "nnz": [5], "flexsparse_s": 1e-3, "peers": {"SciPy": 4e-3}, "checked": None}]
    table = demo.render_table(rows, threads=2, repeat=3)
    cols = {c.header: list(c.cells) for c in table.columns}
    assert [str(c) for c in cols["SciPy"]] == ["1.00 ms *", "4.00 ms"]
    assert [str(c) for c in cols["flexsparse"]] == ["2.00 ms", "1.00 ms *"]
    assert [str(c) for c in cols["MKL"]] == ["3.00 ms", "-"]
    assert cols["SciPy"][0].style == "bold green" and cols["SciPy"][1].style == ""
    assert [str(c) for c in cols["fs / best peer"]] == ["2.00x (SciPy)", "0.25x (SciPy)"]
    assert list(cols)[:5] == ["workload", "nnz", "flexsparse", "SciPy", "MKL"]  # PEER_ORDER
    console = Console(width=200, record=True)
    console.print(table)
    assert "on 2 threads" in " ".join(console.export_text().split())


def test_interleaved_timer_takes_the_minimum_per_function():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abcd"}
    times = demo.time_interleaved(fns, 8)
    rounds = [calls[i:i + 4] for i in range(0, len(calls), 4)]
    assert len(rounds) == 8 and all(sorted(r) == list("abcd") for r in rounds)  # each once per round
    assert len({tuple(r) for r in rounds}) > 1  # the order changes between rounds
    assert set(times) == set("abcd") and all(0 <= t < 1 for t in times.values())
    slow = demo.time_interleaved({"slow": lambda: time.sleep(0.02), "fast": lambda: None}, 2)
    assert slow["slow"] >= 0.02 > slow["fast"]
    calls.clear()
    demo.time_interleaved({"a": lambda: calls.append("a")}, 2, min_seconds=0.05, max_rounds=50)
    assert len(calls) == 50  # fast calls: more rounds than `repeat`, up to max_rounds
    calls.clear()
    demo.time_interleaved({"a": lambda: calls.append(time.sleep(0.03))}, 2, min_seconds=0.05)
    assert len(calls) == 2  # two rounds of 30 ms already took longer than min_seconds


def test_row_stride():
    g = fs.to_scipy(fs.rmat(10, 4, seed=1), "csr")
    flops_full = int(np.diff(g.indptr)[g.indices].sum())
    k, flops = demo._row_stride(g, g, flops_full)
    assert (k, flops) == (1, flops_full)
    k, flops = demo._row_stride(g, g, flops_full // 3)
    assert k >= 2 and flops <= flops_full // 3
    assert int(np.diff(g.indptr)[g[:: k // 2].indices].sum()) > flops_full // 3  # the smallest such k
    sub = g[::k]
    assert flops == int(np.diff(g.indptr)[sub.indices].sum())
