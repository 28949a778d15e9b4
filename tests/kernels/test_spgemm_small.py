"""The small product in one compiled call (:func:`spgemm_small`): the flops count, the inf/nan
scan and the one-thread kernel, against SciPy and :func:`spgemm_trusted`, and every case in
which it declines."""

from __future__ import annotations

import numpy as np
import pytest

import flexsparse as fs
import flexsparse.contract._matmul2d as mm
from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu.spgemm import SMALL_FLOPS, count_flops, spgemm_small, spgemm_trusted

from ..conftest import rand_csr


def _csr(m) -> CSR:
    return fs.as_coo(m).to_csr()


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.complex128])
@pytest.mark.parametrize("density", [0.0, 0.05, 1.0])
@pytest.mark.parametrize("sort", [False, True])
def test_against_scipy_and_the_general_kernel(dtype, density, sort):
    rng = np.random.default_rng(3)
    a_sp = rand_csr(rng, (20, 15), density, dtype, scipy=True)
    b_sp = rand_csr(rng, (15, 25), density, dtype, scipy=True)
    a, b = _csr(a_sp), _csr(b_sp)
    c, counted, bad = spgemm_small(a, b, sort, True)
    assert not bad
    if density == 0.0:  # no entries: declined, the general path's empty result stands
        assert c is None and counted is None
        return
    flops, total = count_flops(a, b)
    np.testing.assert_array_equal(counted[0], flops)
    assert counted[1] == total < SMALL_FLOPS
    np.testing.assert_allclose(c.toarray(), (a_sp @ b_sp).toarray(), rtol=1e-5)
    assert c.data.dtype == np.dtype(dtype)
    ref = spgemm_trusted(a, b, sort=sort)
    assert c.nnz == ref.nnz
    if sort:
        assert c.sorted_indices
        for i in range(c.n_rows):
            row = c.indices[c.indptr[i]:c.indptr[i + 1]]
            assert np.all(np.diff(row) > 0)


@pytest.mark.parametrize("where", ["a", "b"])
def test_nonfinite_found_and_not_computed(where):
    rng = np.random.default_rng(4)
    a_sp, b_sp = rand_csr(rng, (20, 20), 0.2, scipy=True), rand_csr(rng, (20, 20), 0.2, scipy=True)
    (a_sp if where == "a" else b_sp).data[-1] = np.nan
    a, b = _csr(a_sp), _csr(b_sp)
    c, counted, bad = spgemm_small(a, b, False, True)
    assert bad and c is None
    c, _, bad = spgemm_small(a, b, False, False)  # unchecked: computed, nan included
    assert not bad and c is not None and np.isnan(c.data).any()


def test_large_product_returns_only_the_counts():
    # few entries, many multiply-adds: a dense column times a dense row
    n = 400
    a = CSR(np.arange(n + 1), np.zeros(n, dtype=np.int64), np.ones(n), (n, 1))
    b = CSR(np.array([0, n]), np.arange(n), np.ones(n), (1, n))
    assert n * n >= SMALL_FLOPS
    c, counted, bad = spgemm_small(a, b, False, True)
    assert c is None and not bad
    assert counted[1] == n * n and counted[0].tolist() == [n] * n


def test_declines_mixed_and_uncompiled_dtypes():
    rng = np.random.default_rng(5)
    a = _csr(rand_csr(rng, (10, 10), 0.3, np.float64, scipy=True))
    b32 = _csr(rand_csr(rng, (10, 10), 0.3, np.float32, scipy=True))
    assert spgemm_small(a, b32, False, True) == (None, None, False)
    half = CSR(a.indptr, a.indices, a.data.astype(np.float16), a.shape)
    assert spgemm_small(half, half, False, True) == (None, None, False)


def test_einsum_takes_the_small_path_once(monkeypatch):
    """A small product through einsum runs the fused call and no separate flops count."""
    calls = []
    real = mm.spgemm_small
    monkeypatch.setattr(mm, "spgemm_small", lambda *args: calls.append(1) or real(*args))
    monkeypatch.setattr(mm, "count_flops_checked", lambda *args: pytest.fail("counted twice"))
    rng = np.random.default_rng(6)
    a_sp = rand_csr(rng, (60, 60), 0.05, scipy=True)
    for fmt in ("auto", "coo", "csr", "csf", "dense"):
        got = fs.einsum("ij,jk->ik", fs.as_coo(a_sp), fs.as_coo(a_sp), format=fmt)
        dense = got if isinstance(got, np.ndarray) else got.todense()
        np.testing.assert_allclose(dense, (a_sp @ a_sp).toarray())
    assert len(calls) == 5
