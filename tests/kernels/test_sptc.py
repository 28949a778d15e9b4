"""The high-order contraction kernels (Gustavson emitting COO, outer product) against dense products."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from flexsparse.kernels.cpu.outer import outer_csr_csr
from flexsparse.kernels.cpu.partition import thread_scope
from flexsparse.kernels.cpu.sptc import sptc_csr_csr


def _csr(rng, shape, density, dtype=np.float64, single_rows=0):
    m = sp.random_array(shape, density=density, rng=rng, format="lil", dtype=np.float64)
    for r in rng.choice(shape[0], single_rows, replace=False):  # one-entry rows: scaled copies
        m[r, :] = 0
        m[r, rng.integers(shape[1])] = 0.5
    m = sp.csr_array(m)
    m.eliminate_zeros()
    m.sort_indices()
    m.data = 1.0 + 8.0 * m.data  # never 0 after a cast to int
    return m.astype(dtype)


def _tables(n, n_modes, col_skip=0):
    """Identity-like decode tables: mode j of id i is i * (j + 1) (distinct per mode)."""
    t = np.vstack([np.arange(n) * (j + 1) for j in range(n_modes)]).astype(np.int64)
    return t


def _expected(a, b):
    c = sp.csr_array(a @ b)
    c.sort_indices()
    # structural result: scipy drops exact zeros, our kernels keep cancellations; products of
    # random positive-free floats never cancel exactly here
    return c


def _check(coords, vals, c, n_row_modes, n_col_modes, col_skip):
    rows, cols = np.repeat(np.arange(c.shape[0]), np.diff(c.indptr)), c.indices
    want = [rows * (j + 1) for j in range(n_row_modes)] + \
           [cols * (j + 1) for j in range(col_skip, col_skip + n_col_modes)]
    assert coords.shape == (n_row_modes + n_col_modes, c.nnz)
    for m, w in enumerate(want):
        assert coords[m].tolist() == w.tolist(), m
    np.testing.assert_allclose(vals, c.data, rtol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", [
    ((40, 30), (30, 50), 0.2, 0.15),       # dense accumulator, short rows (summary bitmap)
    ((60, 80), (80, 200), 0.5, 0.5),       # dense accumulator, long rows (word walk)
    ((50, 40), (40, 300_000), 0.05, 0.0005),  # > DENSE_SMALL_COLS columns, sparse rows: hash
    ((200, 300), (300, 300_000), 0.01, 0.00003),  # hash rows of 2-40 entries: in-loop sort and quicksort
    ((300, 200), (200, 400), 0.3, 0.3),    # > 32K output entries: several scratch flushes
])
def test_sptc_matches_scipy(case, threads):
    rng = np.random.default_rng(0)
    sa, sb, da, db = case
    a = _csr(rng, sa, da, single_rows=min(5, sa[0] // 4))
    b = _csr(rng, sb, db)
    c = _expected(a, b)
    for n_row_modes, n_col_modes, skip in ((1, 1, 0), (2, 2, 1), (3, 1, 0)):
        rt = _tables(sa[0], n_row_modes)
        ct = _tables(sb[1], n_col_modes + skip)
        with thread_scope(threads):
            coords, vals = sptc_csr_csr(a.indptr.astype(np.int64), a.indices, a.data, b.indptr.astype(np.int64),
                                        b.indices, b.data, sb[1], rt, ct, skip, np.dtype(np.int64),
                                        np.dtype(np.float64))
        _check(coords, vals, c, n_row_modes, n_col_modes, skip)


@pytest.mark.jitless
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.complex128])
def test_sptc_dtypes_and_empty(dtype):
    rng = np.random.default_rng(1)
    a = _csr(rng, (20, 15), 0.3, dtype)
    b = _csr(rng, (15, 25), 0.3, dtype)
    c = _expected(a, b)
    coords, vals = sptc_csr_csr(a.indptr.astype(np.int64), a.indices, a.data, b.indptr.astype(np.int64),
                                b.indices, b.data, 25, _tables(20, 1), _tables(25, 1), 0, np.dtype(np.int32),
                                np.dtype(dtype))
    assert vals.dtype == dtype and coords.dtype == np.int32
    _check(coords, vals, c, 1, 1, 0)
    z = sp.csr_array((20, 15))
    coords, vals = sptc_csr_csr(z.indptr.astype(np.int64), z.indices, z.data, b.indptr.astype(np.int64),
                                b.indices, b.data, 25, _tables(20, 1), _tables(25, 1), 0, np.dtype(np.int32),
                                np.dtype(dtype))
    assert coords.shape == (2, 0) and vals.size == 0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("density", [0.0, 0.05, 1.0])
def test_outer_matches_scipy(threads, density):
    rng = np.random.default_rng(2)
    n_k, n_rows, n_cols = 500, 12, 9
    a = _csr(rng, (n_rows, n_k), density) if density else sp.csr_array((n_rows, n_k))
    b = _csr(rng, (n_k, n_cols), density) if density else sp.csr_array((n_k, n_cols))
    at = sp.csr_array(a.T)
    at.sort_indices()
    c = _expected(a, b)
    with thread_scope(threads):
        coords, vals = outer_csr_csr(at.indptr.astype(np.int64), at.indices, at.data, b.indptr.astype(np.int64),
                                     b.indices, b.data, n_rows, n_cols, _tables(n_rows, 2), _tables(n_cols, 2), 1,
                                     np.dtype(np.int64), np.dtype(np.float64))
    _check(coords, vals, c, 2, 1, 1)


@pytest.mark.jitless
def test_outer_keeps_structural_zeros():
    # +1 * 1 and -1 * 1 cancel: the cell was touched, so it is stored (as the Gustavson kernels do)
    at = sp.csr_array(np.array([[1.0], [-1.0]]))   # k x rows
    b = sp.csr_array(np.array([[1.0], [1.0]]))     # k x cols
    coords, vals = outer_csr_csr(at.indptr.astype(np.int64), at.indices, at.data, b.indptr.astype(np.int64),
                                 b.indices, b.data, 1, 1, _tables(1, 1), _tables(1, 1), 0, np.dtype(np.int64),
                                 np.dtype(np.float64))
    assert coords.tolist() == [[0], [0]] and vals.tolist() == [0.0]


@pytest.mark.parametrize("threads", [1, 2])
def test_outer_parallel_split(threads):
    # 2000 x 30 x 40 = 2.4M multiply-adds: two workers, each with its own dense result
    rng = np.random.default_rng(3)
    a = _csr(rng, (30, 2000), 0.9)
    b = _csr(rng, (2000, 40), 0.9)
    at = sp.csr_array(a.T)
    at.sort_indices()
    c = _expected(a, b)
    with thread_scope(threads):
        coords, vals = outer_csr_csr(at.indptr.astype(np.int64), at.indices, at.data, b.indptr.astype(np.int64),
                                     b.indices, b.data, 30, 40, _tables(30, 1), _tables(40, 1), 0,
                                     np.dtype(np.int64), np.dtype(np.float64))
    _check(coords, vals, c, 1, 1, 0)
