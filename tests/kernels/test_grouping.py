"""Grouping kernels (keys, ranks, counting-sort CSR, decode tables, COO assembly) and the
scatter kernel behind COO.todense, against NumPy formulations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexsparse.contract._keys import group_modes, split_modes
from flexsparse.formats.coo import COO
from flexsparse.kernels.cpu import grouping
from flexsparse.kernels.cpu.scatter import (
    has_nonfinite_values,
    nonfinite_kernel,
    scatter_add_kernel,
    scatter_coo_dense,
    scatter_unique_kernel,
)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_linear_key_matches_ravel(dtype):
    rng = np.random.default_rng(0)
    shape = (5, 7, 3, 11)
    coords = np.vstack([rng.integers(0, s, 200) for s in shape]).astype(dtype)
    for modes in ([0], [1, 3], [3, 0, 2], [0, 1, 2, 3]):
        sizes = tuple(shape[m] for m in modes)
        want = np.ravel_multi_index(tuple(coords[m] for m in modes), sizes)
        assert grouping.linear_key(coords, modes, sizes).tolist() == want.tolist()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2**45), min_size=0, max_size=300), st.integers(1, 3))
def test_radix_rank_is_unique_inverse(values, spread):
    keys = np.array(values, dtype=np.int64) // spread
    space = int(keys.max()) + 1 if keys.size else 1
    uniq, inv = np.unique(keys, return_inverse=True)
    for sp in (space, 2**46):  # small space: bitmap ranks; large: radix sort
        ids, got = grouping.radix_rank(keys, sp)
        assert got.tolist() == uniq.tolist()
        assert ids.tolist() == inv.reshape(-1).tolist()


def test_radix_passes_and_skipped_digits():
    rng = np.random.default_rng(1)
    # high digits all equal (skipped passes), low digits random, and a key at 2**61
    keys = np.concatenate([rng.integers(0, 5000, 3000), [2**61, 7, 2**61]]).astype(np.int64)
    ids = np.empty(keys.size, np.int64)
    uniq = np.empty(keys.size, np.int64)
    n = grouping.radix_rank_kernel(keys, 62, ids, uniq)
    want, inv = np.unique(keys, return_inverse=True)
    assert uniq[:n].tolist() == want.tolist() and ids.tolist() == inv.tolist()


@pytest.mark.jitless
@pytest.mark.parametrize("ascending", [True, False])
def test_csr_from_ids(ascending):
    rng = np.random.default_rng(2)
    n_rows, n = 13, 120
    rows = rng.integers(0, n_rows, n)
    if ascending:
        rows = np.sort(rows)
    cols = rng.integers(0, 50, n).astype(np.int32)
    vals = rng.standard_normal(n)
    indptr, indices, data = grouping.csr_from_ids(rows, cols, vals, n_rows, np.dtype(np.int32))
    order = np.argsort(rows, kind="stable")  # stable: input order kept within a row
    assert indptr.tolist() == np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_rows))]).tolist()
    assert indices.tolist() == cols[order].tolist()
    assert data.tolist() == vals[order].tolist()
    assert indices.dtype == np.int32


@pytest.mark.parametrize("regime_sizes", [(4, 6, 5), (10**7, 3), (2**40,)])
def test_coord_table_decodes_every_id(regime_sizes):
    rng = np.random.default_rng(3)
    coords = np.vstack([rng.integers(0, min(s, 50), 80) for s in regime_sizes]).astype(np.int64)
    ks, ids = group_modes(coords, list(range(len(regime_sizes))), regime_sizes)
    tab = ks.coord_table(np.dtype(np.int64))
    assert tab.shape == (len(regime_sizes), ks.n_ids)
    assert np.array_equal(tab[:, ids], coords)
    # ids ascend with the lexicographic order of the keys (canonical output order)
    order = np.lexsort(coords[::-1])
    assert np.all(np.diff(ids[order]) >= 0)


def test_lexsort_regime_beyond_int64():
    sizes = (320_000, 28_000_000, 1_600_000)  # 1.4e19 cells: no linear key fits int64
    coords = np.array([[5, 5, 319_999, 0], [27_999_999, 27_999_999, 1, 0], [3, 3, 1_599_999, 0]])
    ks, ids = group_modes(coords, [0, 1, 2], sizes)
    assert ks.regime == "lexsort" and ids.tolist() == [1, 1, 2, 0]
    assert np.array_equal(ks.coord_table(np.dtype(np.int32))[:, ids], coords)
    ks2, ia, ib = split_modes(coords, [0, 1, 2], coords[:, :2], [0, 1, 2], sizes)
    assert ks2.regime == "lexsort" and ia.tolist() == [1, 1, 2, 0] and ib.tolist() == [1, 1]


def test_split_groups_same_operand_grouped_once():
    coords = np.array([[0, 3, 3], [1, 2, 2]])
    ks, ia, ib = split_modes(coords, [0, 1], coords, [0, 1], (4, 3))
    assert ia is ib and ia.tolist() == [1, 11, 11]


@pytest.mark.jitless
def test_assemble_coo_with_batch_skip():
    indptr = np.array([0, 2, 2, 5], dtype=np.int64)
    indices = np.array([1, 0, 0, 1, 2], dtype=np.int32)
    row_table = np.array([[7, 8, 9], [1, 1, 2]], dtype=np.int32)   # 2 row modes
    col_table = np.array([[0, 0, 0], [4, 5, 6]], dtype=np.int32)   # batch mode, then one mode
    coords = grouping.assemble_coo(indptr, indices, row_table, col_table, 1, np.dtype(np.int32))
    assert coords.tolist() == [[7, 7, 9, 9, 9], [1, 1, 2, 2, 2], [5, 4, 4, 5, 6]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.complex128])
@pytest.mark.parametrize("shape", [(7,), (4, 6), (3, 4, 5), (2, 3, 2, 4), (2, 2, 2, 2, 3)])
def test_todense_matches_numpy(shape, dtype):
    rng = np.random.default_rng(4)
    n = max(1, int(np.prod(shape)) // 2)
    coords = np.vstack([rng.integers(0, s, n) for s in shape])
    vals = (rng.standard_normal(n) * 4).astype(dtype)
    want = np.zeros(shape, dtype=dtype)
    np.add.at(want, tuple(coords), vals)
    t = COO(coords, vals, shape, canonical=False)  # duplicates accumulate
    np.testing.assert_allclose(t.todense(), want, rtol=1e-6)
    c = t.sum_duplicates()
    assert c.canonical
    np.testing.assert_allclose(c.todense(), want, rtol=1e-6)


@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_todense_densities_and_bool(density):
    rng = np.random.default_rng(5)
    arr = np.where(rng.random((5, 4, 3)) < density, rng.standard_normal((5, 4, 3)), 0.0)
    assert np.array_equal(COO.from_numpy(arr).todense(), arr)
    b = arr != 0
    assert np.array_equal(COO.from_numpy(b).todense(), b)


@pytest.mark.jitless
def test_parallel_scatter_matches_serial():
    rng = np.random.default_rng(6)
    shape = (30, 20, 10, 4)
    lin = rng.choice(np.prod(shape), 2000, replace=False)
    coords = np.vstack(np.unravel_index(lin, shape))
    vals = rng.standard_normal(2000)
    strides = np.array([800, 40, 4, 1], dtype=np.int64)
    a = np.zeros(np.prod(shape))
    b = np.zeros(np.prod(shape))
    scatter_add_kernel(coords, vals, strides, a)
    scatter_unique_kernel(coords, vals, strides, np.int64(300), b)
    assert np.array_equal(a, b)
    out = np.zeros(shape)
    scatter_coo_dense(coords, vals, out, True)
    assert np.array_equal(out.reshape(-1), a)


@pytest.mark.jitless
def test_bitmap_rank_path():
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 1000, 500).astype(np.int64)  # 1000 cells <= 256 per key: bitmap
    ids = np.empty(500, np.int64)
    uniq = np.empty(500, np.int64)
    n = grouping.bitmap_rank_kernel(keys, np.zeros(16, np.uint64), np.empty(16, np.int32), ids, uniq)
    want, inv = np.unique(keys, return_inverse=True)
    assert uniq[:n].tolist() == want.tolist() and ids.tolist() == inv.tolist()
    ids2, uniq2 = grouping.radix_rank(keys, 1000)
    assert ids2.tolist() == inv.tolist() and uniq2.tolist() == want.tolist()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128, np.int64])
@pytest.mark.parametrize("bad", [None, np.inf, -np.inf, np.nan])
def test_scatter_reports_nonfinite(dtype, bad):
    rng = np.random.default_rng(7)
    shape = (6, 5, 4)
    coords = np.vstack(np.unravel_index(rng.choice(120, 50, replace=False), shape))
    vals = rng.standard_normal(50).astype(dtype) if np.dtype(dtype).kind != "i" else rng.integers(-9, 9, 50)
    if bad is not None and np.dtype(dtype).kind != "i":
        vals[17] = bad
    want = bad is not None and np.dtype(dtype).kind != "i"
    strides = np.array([20, 4, 1], dtype=np.int64)
    flat = coords.T @ strides
    coords4 = np.vstack([coords, np.zeros_like(coords[:1])])  # 4 modes: the general loop
    strides4 = np.append(strides, 0)
    for kernel in (lambda o: scatter_add_kernel(coords, vals, strides, o),
                   lambda o: scatter_add_kernel(coords4, vals, strides4, o),
                   lambda o: scatter_unique_kernel(coords, vals, strides, np.int64(16), o),
                   lambda o: scatter_unique_kernel(coords4, vals, strides4, np.int64(16), o)):
        out = np.zeros(120, dtype=vals.dtype)
        assert bool(kernel(out)) is want
        expected = np.zeros(120, dtype=vals.dtype)
        expected[flat] = vals
        np.testing.assert_array_equal(out, expected)
    assert bool(nonfinite_kernel(vals)) is want
    out = np.zeros(shape, dtype=vals.dtype)
    assert scatter_coo_dense(coords, vals, out, False) is want


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
@pytest.mark.parametrize("where", [None, 0, 500, 1000, 1998, 1999])
@pytest.mark.parametrize("threads", [1, 2, None])
def test_nonfinite_scan_on_threads(monkeypatch, dtype, where, threads):
    """The inf/nan scan finds a bad value in any block (first, middle, block edges, last)
    once it runs on several threads, and reports none in finite data."""
    from flexsparse import _limits

    monkeypatch.setattr(_limits, "NONFINITE_PARALLEL_MIN_VALUES", 16)
    vals = np.random.default_rng(5).standard_normal(2000).astype(dtype)
    for bad in (np.inf, -np.inf, np.nan):
        v = vals.copy()
        if where is not None:
            v[where] = bad
        assert has_nonfinite_values(v, threads) is (where is not None)
