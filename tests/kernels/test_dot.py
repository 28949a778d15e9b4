"""Dot-product engine (fiber intersection) vs NumPy/SciPy: dense and masked outputs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu.dot import GALLOP_RATIO, dot_csr_csr

from ..conftest import rand_csr

DTYPES = [np.float32, np.float64, np.int64, np.complex128]


def pattern(x: CSR):
    return sp.csr_array((np.ones(x.nnz), x.indices, x.indptr), shape=x.shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("density", [0.0, 0.01, 0.3, 1.0])
@pytest.mark.parametrize("schedule", ["cost", "round-robin"])
def test_dense_output_matches_numpy(dtype, density, schedule):
    rng = np.random.default_rng(0)
    a = rand_csr(rng, (23, 40), density, dtype)
    b = rand_csr(rng, (40, 17), density, dtype)
    out = dot_csr_csr(a, b.transpose(), schedule=schedule)
    ref = a.toarray() @ b.toarray()
    assert out.dtype == ref.dtype and out.shape == (23, 17)
    np.testing.assert_allclose(out, ref, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-5)


@pytest.mark.parametrize("shape_a,shape_b", [((0, 5), (5, 4)), ((4, 0), (0, 6)), ((4, 5), (5, 0)),
                                             ((1, 1), (1, 1)), ((60, 3), (3, 50)), ((3, 90), (90, 2))])
def test_dense_output_ragged_shapes(shape_a, shape_b):
    rng = np.random.default_rng(1)
    a = rand_csr(rng, shape_a, 0.5)
    b = rand_csr(rng, shape_b, 0.5)
    np.testing.assert_allclose(dot_csr_csr(a, b.transpose()), a.toarray() @ b.toarray(), atol=1e-12)


def test_galloping_unequal_fibers():
    """Fibers of very different lengths (ratio > GALLOP_RATIO) take the galloping path."""
    rng = np.random.default_rng(2)
    k = 5000
    a = rand_csr(rng, (6, k), 0.9)            # long fibers
    b = rand_csr(rng, (k, 5), 0.002)          # short fibers (~10 entries)
    assert a.nnz / a.n_rows > GALLOP_RATIO * (b.nnz / b.n_cols)
    bt = b.transpose()
    np.testing.assert_allclose(dot_csr_csr(a, bt), a.toarray() @ b.toarray(), rtol=1e-10, atol=1e-12)
    # and the mirrored case (short a, long bt)
    np.testing.assert_allclose(dot_csr_csr(bt, a), bt.toarray() @ a.toarray().T, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_density", [0.0, 0.05, 0.4, 1.0])
def test_masked_matches_structural_product(dtype, mask_density):
    rng = np.random.default_rng(3)
    a = rand_csr(rng, (30, 25), 0.15, dtype)
    b = rand_csr(rng, (25, 28), 0.15, dtype)
    mask = rand_csr(rng, (30, 28), mask_density)
    c = dot_csr_csr(a, b.transpose(), mask=mask)
    c.validate()
    # structure: mask entries where the fibers intersect = pattern(A@B) restricted to mask
    ref = (pattern(a) @ pattern(b)).multiply(pattern(mask)).tocsr()
    ref.eliminate_zeros()
    ref.sort_indices()
    np.testing.assert_array_equal(c.indptr, ref.indptr)
    np.testing.assert_array_equal(c.indices, ref.indices)
    dense = (a.toarray() @ b.toarray()) * (mask.toarray() != 0)
    assert c.dtype == dense.dtype
    np.testing.assert_allclose(c.toarray(), dense, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-5)
    full = dot_csr_csr(a, b.transpose(), mask=mask, keep_empty=True, schedule="round-robin")
    np.testing.assert_array_equal(full.indptr, mask.indptr)
    np.testing.assert_array_equal(full.indices, mask.indices)
    np.testing.assert_allclose(full.toarray(), dense, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-5)


def test_threads_and_schedules_agree():
    rng = np.random.default_rng(4)
    a = rand_csr(rng, (50, 60), 0.2)
    b = rand_csr(rng, (60, 40), 0.2)
    bt = b.transpose()
    base = dot_csr_csr(a, bt, threads=1)
    for schedule in ("cost", "round-robin"):
        np.testing.assert_allclose(dot_csr_csr(a, bt, schedule=schedule), base, rtol=1e-12)
    mask = rand_csr(rng, (50, 40), 0.3)
    m1 = dot_csr_csr(a, bt, mask=mask, threads=1)
    m2 = dot_csr_csr(a, bt, mask=mask, schedule="round-robin")
    np.testing.assert_array_equal(m1.indices, m2.indices)
    np.testing.assert_allclose(m1.data, m2.data, rtol=1e-12)


def test_nan_inf_and_bool():
    a = CSR(np.array([0, 2]), np.array([0, 1]), np.array([0.0, np.inf]), (1, 2))
    bt = CSR(np.array([0, 1, 2]), np.array([0, 1]), np.array([np.nan, 0.0]), (2, 2))
    out = dot_csr_csr(a, bt)
    assert np.isnan(out).all()  # 0 * nan and inf * 0
    rng = np.random.default_rng(5)
    ab = rand_csr(rng, (6, 7), 0.4, np.bool_)
    bb = rand_csr(rng, (7, 5), 0.4, np.bool_)
    res = dot_csr_csr(ab, bb.transpose())
    assert res.dtype == np.bool_
    np.testing.assert_array_equal(res, ab.toarray() @ bb.toarray())


@pytest.mark.jitless
def test_tiny_dense_and_masked():
    rng = np.random.default_rng(6)
    a = rand_csr(rng, (3, 40), 0.6)
    b = rand_csr(rng, (40, 2), 0.05)  # unequal lengths: galloping path too
    np.testing.assert_allclose(dot_csr_csr(a, b.transpose(), threads=1), a.toarray() @ b.toarray(), atol=1e-12)
    mask = CSR.from_coo_arrays([0, 2], [1, 0], [1.0, 1.0], (3, 2))
    c = dot_csr_csr(a, b.transpose(), mask=mask, keep_empty=True, schedule="round-robin")
    d = a.toarray() @ b.toarray()
    np.testing.assert_allclose(c.data, [d[0, 1], d[2, 0]], atol=1e-12)


def test_errors():
    rng = np.random.default_rng(7)
    a = rand_csr(rng, (4, 3), 0.5)
    b = rand_csr(rng, (5, 4), 0.5)
    with pytest.raises(ValueError, match="a has 3 columns .* but bt has 4 columns"):
        dot_csr_csr(a, b)
    u = CSR(np.array([0, 2]), np.array([1, 0]), np.ones(2), (1, 3), sorted_indices=False)
    with pytest.raises(ValueError, match="bt must have sorted indices"):
        dot_csr_csr(a, u)
    with pytest.raises(ValueError, match="unknown schedule 'fifo'; valid names: cost, round-robin"):
        dot_csr_csr(a, a, schedule="fifo")
    with pytest.raises(ValueError, match=r"mask has shape \(2, 2\) but the output is \(4, 4\)"):
        dot_csr_csr(a, a, mask=rand_csr(rng, (2, 2), 0.5))
    with pytest.raises(TypeError, match="mask must be a flexsparse CSR"):
        dot_csr_csr(a, a, mask=np.ones((4, 4)))
    with pytest.raises(TypeError, match="a must be a flexsparse CSR"):
        dot_csr_csr(np.ones((4, 3)), a)
