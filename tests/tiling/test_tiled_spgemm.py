"""Tiled SpGEMM equals the unbounded product for every strategy, limit, dtype and shape."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexsparse.formats.csr import CSR
from flexsparse.tiling import STRATEGIES, tiled_spgemm
from flexsparse.tiling.workingset import ByteModel, minimum_limit

from ..conftest import rand_csr

DTYPES = [np.float32, np.float64, np.int64, np.complex128]


def scipy_csr(m, n, density, dtype, seed):
    """Random SciPy CSR whose values never cancel (the shared generator, positive values)."""
    return rand_csr(seed, (m, n), density, dtype, positive=True, scipy=True)


def oracle(a, b):
    """Structural coordinates (pattern product) and dense values of ``a @ b``."""
    pa, pb = a.copy(), b.copy()
    pa.data = np.ones(pa.nnz)
    pb.data = np.ones(pb.nnz)
    pat = (pa @ pb).tocsr()
    pat.sort_indices()
    return pat, (a.astype(np.complex128) @ b.astype(np.complex128)).toarray()


def assert_same(c, a, b):
    pat, dense = oracle(a, b)
    c = c.to_scipy() if isinstance(c, CSR) else c
    np.testing.assert_array_equal(np.asarray(c.indptr), pat.indptr)
    np.testing.assert_array_equal(np.asarray(c.indices), pat.indices)
    rtol = 1e-4 if c.dtype in (np.float32, np.complex64) else 1e-10
    np.testing.assert_allclose(c.toarray(), dense, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("tiling", sorted(STRATEGIES))
@pytest.mark.parametrize("limit", ["3KiB", "20KiB", "300KiB", 10**9])
def test_every_strategy_and_limit_matches_unbounded(tiling, limit):
    a = scipy_csr(70, 45, 0.08, np.float64, 1)
    b = scipy_csr(45, 60, 0.1, np.float64, 2)
    c, rep = tiled_spgemm(a, b, memory_limit=limit, tiling=tiling)
    assert_same(c, a, b)
    assert rep.strategy == tiling
    assert rep.peak_ws_bytes <= rep.limit
    assert 0 < rep.mean_utilisation <= 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("density", [0.0, 0.05, 1.0])
def test_dtypes_and_densities(dtype, density):
    a = scipy_csr(23, 17, density, dtype, 3)
    b = scipy_csr(17, 29, density, dtype, 4)
    c, rep = tiled_spgemm(a, b, memory_limit="6KiB", tiling="overbook")
    assert c.dtype == np.result_type(a.dtype, b.dtype)
    assert_same(c, a, b)
    if density == 0.0:
        assert c.nnz == 0


def test_mixed_dtypes_promote_like_numpy():
    a = scipy_csr(20, 15, 0.2, np.float32, 5)
    b = scipy_csr(15, 12, 0.2, np.int64, 6)
    c, _ = tiled_spgemm(a, b, memory_limit="4KiB")
    assert c.dtype == np.result_type(np.float32, np.int64)
    assert_same(c, a, b)


def test_bool_product_is_structural_or():
    a = scipy_csr(20, 15, 0.2, np.float64, 7).astype(bool)
    b = scipy_csr(15, 12, 0.2, np.float64, 8).astype(bool)
    c, _ = tiled_spgemm(a, b, memory_limit="3KiB")
    ref = (a @ b).tocsr()
    assert c.dtype == np.bool_
    np.testing.assert_array_equal(c.toarray(), ref.toarray())
    assert c.data.all()


@pytest.mark.parametrize("shape", [(0, 5, 7), (6, 0, 7), (6, 5, 0), (1, 1, 1), (1, 40, 3), (40, 1, 1)])
def test_empty_and_ragged_shapes(shape):
    m, k, n = shape
    a = scipy_csr(m, k, 0.5, np.float64, 9)
    b = scipy_csr(k, n, 0.5, np.float64, 10)
    for tiling in STRATEGIES:
        c, rep = tiled_spgemm(a, b, memory_limit="2KiB", tiling=tiling)
        assert c.shape == (m, n)
        assert_same(c, a, b)


def test_flexsparse_csr_in_csr_out_and_scipy_array_family():
    a = scipy_csr(30, 20, 0.1, np.float64, 11)
    b = scipy_csr(20, 25, 0.1, np.float64, 12)
    c, _ = tiled_spgemm(CSR.from_scipy(a), CSR.from_scipy(b), memory_limit="4KiB")
    assert isinstance(c, CSR)
    c.validate()
    assert_same(c, a, b)
    c2, _ = tiled_spgemm(sp.csr_array(a), sp.csr_array(b), memory_limit="4KiB")
    assert isinstance(c2, sp.csr_array)
    c3, _ = tiled_spgemm(a.tocoo(), b.tocsc(), memory_limit="4KiB")  # any scipy format
    assert isinstance(c3, sp.csr_matrix)
    assert_same(c3, a, b)


@pytest.mark.jitless
def test_tiny_through_kernels_jitless():
    a = scipy_csr(6, 5, 0.4, np.float64, 13)
    b = scipy_csr(5, 4, 0.4, np.float64, 14)
    for tiling in ("overbook", "prescient"):
        c, _ = tiled_spgemm(a, b, memory_limit=400, tiling=tiling)
        assert_same(c, a, b)


@pytest.mark.jitless
def test_tiny_partial_sums_jitless():
    # a 200-byte limit forces id windows (partial sums added on assembly)
    a = scipy_csr(4, 6, 0.6, np.int64, 15)
    b = scipy_csr(6, 3, 0.6, np.int64, 16)
    c, rep = tiled_spgemm(a, b, memory_limit=200, tiling="conservative")
    assert rep.k_size < 6
    assert_same(c, a, b)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), frac=st.floats(0.0, 1.0),
       tiling=st.sampled_from(sorted(STRATEGIES)), overbook=st.floats(0.0, 0.9))
def test_random_limits_never_change_the_result(seed, frac, tiling, overbook):
    rng = np.random.default_rng(seed)
    m, k, n = (int(x) for x in rng.integers(1, 30, size=3))
    a = scipy_csr(m, k, float(rng.random()) * 0.5, np.float64, seed)
    b = scipy_csr(k, n, float(rng.random()) * 0.5, np.float64, seed + 1)
    lo = minimum_limit(ByteModel(8, 4))
    limit = int(lo + frac ** 3 * 40_000)
    c, rep = tiled_spgemm(a, b, memory_limit=limit, tiling=tiling, overbook=overbook, seed=seed)
    assert_same(c, a, b)
    assert rep.peak_ws_bytes <= limit


def test_progress_bar_runs():
    a = scipy_csr(40, 30, 0.1, np.float64, 17)
    c, rep = tiled_spgemm(a, a.T.tocsr(), memory_limit="3KiB", progress=True)
    assert_same(c, a, a.T.tocsr())
