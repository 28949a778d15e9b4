"""SpGEMM with a dense result (kernels/cpu/spgemm_dense.py) vs dense NumPy, and the
sampled nnz estimate that lets einsum choose it."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import flexsparse.kernels.cpu.spgemm_dense as dense_mod
from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu.spgemm import spgemm
from flexsparse.kernels.cpu.spgemm_dense import estimate_nnz, spgemm_dense

from ..conftest import rand_csr


@pytest.mark.parametrize("dtype", [np.bool_, np.int32, np.int64, np.float32, np.float64, np.complex128])
@pytest.mark.parametrize("density", [0.0, 0.05, 1.0])
@pytest.mark.parametrize("threads", [1, 2])
def test_spgemm_dense_matches_numpy(monkeypatch, dtype, density, threads):
    monkeypatch.setattr(dense_mod, "_PARALLEL_MIN_FLOPS", 0)  # the parallel split on small products
    rng = np.random.default_rng(0)
    a = rand_csr(rng, (50, 40), density, dtype)
    b = rand_csr(rng, (40, 30), density, dtype)
    c = spgemm_dense(a, b, threads=threads)
    ref = a.toarray() @ b.toarray()
    assert c.dtype == ref.dtype and c.shape == (50, 30)
    if np.dtype(dtype).kind in "biu":
        np.testing.assert_array_equal(c, ref)
    else:
        np.testing.assert_allclose(c, ref, rtol=1e-4, atol=1e-5)


def test_spgemm_dense_sums_duplicates_and_unsorted_rows():
    rng = np.random.default_rng(1)
    rows, cols = rng.integers(0, 20, 300), rng.integers(0, 15, 300)
    a = CSR.from_coo_arrays(rows, cols, rng.standard_normal(300), (20, 15), sum_duplicates=False)
    b = rand_csr(rng, (15, 25), 0.3)
    np.testing.assert_allclose(spgemm_dense(a, b), a.toarray() @ b.toarray(), atol=1e-12)


def test_spgemm_dense_nan_inf_and_empty_shapes():
    """Non-finite values propagate through stored entries only, as in the sparse kernel."""
    a = CSR.from_scipy(sp.csr_array(np.array([[np.nan, 0.0], [1.0, np.inf]])))
    b = CSR.from_scipy(sp.csr_array(np.array([[1.0, 0.0], [0.0, 2.0]])))
    np.testing.assert_array_equal(spgemm_dense(a, b), spgemm(a, b).toarray())
    np.testing.assert_array_equal(spgemm_dense(a, b), [[np.nan, 0.0], [1.0, np.inf]])
    for sa, sb in (((0, 3), (3, 4)), ((3, 0), (0, 4)), ((3, 4), (4, 0))):
        c = spgemm_dense(CSR.from_scipy(sp.csr_array(sa)), CSR.from_scipy(sp.csr_array(sb)))
        assert c.shape == (sa[0], sb[1]) and not c.any()


def test_spgemm_dense_errors():
    a = rand_csr(np.random.default_rng(2), (4, 5), 0.5)
    with pytest.raises(ValueError, match="inner dimensions differ"):
        spgemm_dense(a, a)
    with pytest.raises(TypeError, match="must be a flexsparse CSR"):
        spgemm_dense(a, np.ones((5, 2)))
    with pytest.raises(ValueError, match="threads"):
        spgemm_dense(a, a.transpose(), threads=0)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 40), k=st.integers(1, 30), n=st.integers(1, 40), d=st.floats(0, 1), seed=st.integers(0, 99))
def test_estimate_nnz_is_exact_when_every_row_is_sampled(m, k, n, d, seed):
    rng = np.random.default_rng(seed)
    a, b = rand_csr(rng, (m, k), d), rand_csr(rng, (k, n), d)
    exact = (sp.csr_array((np.ones(a.nnz), a.indices, a.indptr), shape=a.shape)
             @ sp.csr_array((np.ones(b.nnz), b.indices, b.indptr), shape=b.shape)).nnz
    assert estimate_nnz(a, b, samples=m) == pytest.approx(exact)
    assert 0 <= estimate_nnz(a, b, samples=3) <= m * n
