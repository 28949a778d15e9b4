"""Sparse x dense, dense x sparse and dense x dense products vs NumPy/SciPy."""

from __future__ import annotations

import numpy as np
import pytest

from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu.spmm import dense_dense, spmm_csr_dense, spmm_dense_csr

from ..conftest import rand_csr

DTYPES = [np.float32, np.float64, np.int64, np.complex128]


def rand_dense(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return rng.integers(-4, 5, shape).astype(dtype)
    v = rng.standard_normal(shape)
    if dtype.kind == "c":
        v = v + 1j * rng.standard_normal(shape)
    return v.astype(dtype)


def tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("density", [0.0, 0.01, 0.3, 1.0])
def test_csr_dense_matches_numpy(dtype, density):
    rng = np.random.default_rng(0)
    a = rand_csr(rng, (37, 29), density, dtype)
    b = rand_dense(rng, (29, 11), dtype)
    out = spmm_csr_dense(a, b)
    ref = a.toarray() @ b
    assert out.dtype == ref.dtype and out.flags.c_contiguous
    np.testing.assert_allclose(out, ref, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("density", [0.0, 0.01, 0.3, 1.0])
def test_dense_csr_matches_numpy(dtype, density):
    rng = np.random.default_rng(1)
    a = rand_dense(rng, (13, 31), dtype)
    b = rand_csr(rng, (31, 19), density, dtype)
    out = spmm_dense_csr(a, b)
    ref = a @ b.toarray()
    assert out.dtype == ref.dtype and out.flags.c_contiguous and out.shape == (13, 19)
    np.testing.assert_allclose(out, ref, **tol(dtype))


@pytest.mark.parametrize("shape_a,shape_b", [((0, 5), (5, 4)), ((4, 0), (0, 6)), ((4, 5), (5, 0)),
                                             ((1, 1), (1, 1)), ((300, 2), (2, 3)), ((2, 300), (300, 1))])
def test_ragged_and_empty_shapes(shape_a, shape_b):
    rng = np.random.default_rng(2)
    a = rand_csr(rng, shape_a, 0.5)
    b = rand_dense(rng, shape_b, np.float64)
    np.testing.assert_allclose(spmm_csr_dense(a, b), a.toarray() @ b, atol=1e-12)
    ad = rand_dense(rng, shape_a, np.float64)
    bs = rand_csr(rng, shape_b, 0.5)
    np.testing.assert_allclose(spmm_dense_csr(ad, bs), ad @ bs.toarray(), atol=1e-12)


def test_powerlaw_threads_agree_and_mixed_dtypes():
    rng = np.random.default_rng(3)
    a = rand_csr(rng, (500, 400), 0.01, powerlaw=True)
    b = rand_dense(rng, (400, 16), np.float64)
    np.testing.assert_allclose(spmm_csr_dense(a, b, threads=1), spmm_csr_dense(a, b), rtol=1e-12)
    np.testing.assert_allclose(spmm_csr_dense(a, b), a.toarray() @ b, rtol=1e-10, atol=1e-10)
    a32 = rand_csr(rng, (20, 10), 0.3, np.float32)
    bi = rand_dense(rng, (10, 4), np.int64)
    out = spmm_csr_dense(a32, bi)
    assert out.dtype == np.result_type(np.float32, np.int64)
    np.testing.assert_allclose(out, a32.toarray() @ bi, rtol=1e-6)
    ab = CSR.from_coo_arrays([0, 1], [1, 0], np.array([True, True]), (2, 2))
    res = spmm_csr_dense(ab, np.array([[True, False], [False, False]]))
    assert res.dtype == np.bool_
    np.testing.assert_array_equal(res, [[False, False], [True, False]])


def test_nan_only_through_stored_entries():
    a = CSR(np.array([0, 1, 1]), np.array([0]), np.array([0.0]), (2, 2))
    b = np.array([[np.inf, 1.0], [np.nan, 2.0]])
    out = spmm_csr_dense(a, b)
    assert np.isnan(out[0, 0])  # stored zero times inf
    np.testing.assert_array_equal(out[0, 1:], [0.0])
    np.testing.assert_array_equal(out[1], [0.0, 0.0])  # empty row: nan in b[1] never multiplied


@pytest.mark.jitless
def test_tiny_both_directions():
    rng = np.random.default_rng(4)
    a = rand_csr(rng, (3, 4), 0.5)
    b = rand_dense(rng, (4, 2), np.float64)
    np.testing.assert_allclose(spmm_csr_dense(a, b, threads=1), a.toarray() @ b, atol=1e-12)
    np.testing.assert_allclose(spmm_dense_csr(b.T, a.transpose()), b.T @ a.toarray().T, atol=1e-12)


def test_dense_dense():
    rng = np.random.default_rng(5)
    a, b = rand_dense(rng, (4, 6), np.float32), rand_dense(rng, (6, 3), np.complex128)
    np.testing.assert_allclose(dense_dense(a, b), a @ b, rtol=1e-6)
    assert dense_dense(a, b).dtype == np.complex128


def test_errors():
    rng = np.random.default_rng(6)
    a = rand_csr(rng, (4, 3), 0.5)
    with pytest.raises(ValueError, match=r"a has 3 columns \(shape \(4, 3\)\) but b has 5 rows"):
        spmm_csr_dense(a, np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"a has 2 columns \(shape \(1, 2\)\) but b has 4 rows"):
        spmm_dense_csr(np.ones((1, 2)), a)
    with pytest.raises(ValueError, match="b must be 2-D, got shape"):
        spmm_csr_dense(a, np.ones(3))
    with pytest.raises(TypeError, match="non-numeric dtype"):
        spmm_csr_dense(a, np.array([["x"]] * 3))
    with pytest.raises(TypeError, match="b must be a dense ndarray, got a CSR"):
        spmm_csr_dense(a, a)
    with pytest.raises(TypeError, match="b must be a flexsparse CSR"):
        spmm_dense_csr(np.ones((2, 4)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="dense_dense: inner dimensions differ"):
        dense_dense(np.ones((2, 3)), np.ones((2, 3)))
