"""Per-row CSR sort (insertion sort and LSD radix passes) and the row bucketing kernel."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flexsparse.kernels.cpu.rowsort as rs
from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu.rowsort import SMALL_ROW, bucket_rows_kernel, sort_csr_rows


def _jumbled(rng, n_rows, n_cols, max_len, idx_dtype=np.int32, dtype=np.float64):
    lengths = rng.integers(0, max_len + 1, n_rows)
    lengths = np.minimum(lengths, n_cols)
    indptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    indices = np.concatenate([rng.choice(n_cols, k, replace=False) for k in lengths]).astype(idx_dtype) \
        if lengths.sum() else np.zeros(0, idx_dtype)
    data = rng.standard_normal(indices.size).astype(dtype)
    return indptr, indices, data


def _check_sorted(indptr, before_idx, before_val, idx, val):
    for i in range(indptr.size - 1):
        lo, hi = indptr[i], indptr[i + 1]
        order = np.argsort(before_idx[lo:hi], kind="stable")
        np.testing.assert_array_equal(idx[lo:hi], before_idx[lo:hi][order])
        np.testing.assert_array_equal(val[lo:hi], before_val[lo:hi][order])


@pytest.mark.parametrize("n_cols,max_len", [(20, 8), (1000, 200), (70_000, 300), (3_000_000, 120)])
@pytest.mark.parametrize("idx_dtype", [np.int32, np.int64])
def test_sort_rows_short_and_radix_paths(n_cols, max_len, idx_dtype):
    """Short rows take insertion sort; long ones 1, 2 or 3 radix passes by column span."""
    rng = np.random.default_rng(0)
    indptr, idx, val = _jumbled(rng, 60, n_cols, max_len, idx_dtype)
    assert np.diff(indptr).max() > SMALL_ROW or max_len <= SMALL_ROW
    i0, v0 = idx.copy(), val.copy()
    sort_csr_rows(indptr, idx, val)
    _check_sorted(indptr, i0, v0, idx, val)


def test_sort_rows_parallel_path_matches(monkeypatch):
    monkeypatch.setattr(rs, "_SERIAL_NNZ", 0)
    rng = np.random.default_rng(1)
    indptr, idx, val = _jumbled(rng, 500, 5000, 120, np.int32, np.complex128)
    i0, v0 = idx.copy(), val.copy()
    sort_csr_rows(indptr, idx, val, threads=min(2, numba.config.NUMBA_NUM_THREADS))
    _check_sorted(indptr, i0, v0, idx, val)


@pytest.mark.jitless
def test_sort_rows_tiny_jitless():
    indptr = np.array([0, 3, 3, 40], dtype=np.int64)
    rng = np.random.default_rng(2)
    idx = np.concatenate([[5, 1, 3], rng.permutation(37)]).astype(np.int32)
    val = np.arange(40, dtype=np.float64)
    i0, v0 = idx.copy(), val.copy()
    sort_csr_rows(indptr, idx, val, threads=1)
    _check_sorted(indptr, i0, v0, idx, val)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), n_rows=st.integers(0, 30), n_cols=st.integers(1, 100_000),
       max_len=st.integers(0, 90))
def test_sort_rows_property(seed, n_rows, n_cols, max_len):
    rng = np.random.default_rng(seed)
    indptr, idx, val = _jumbled(rng, n_rows, n_cols, max_len)
    i0, v0 = idx.copy(), val.copy()
    sort_csr_rows(indptr, idx, val)
    _check_sorted(indptr, i0, v0, idx, val)


def test_csr_sorted_merges_duplicates_and_keeps_sorted_input():
    rng = np.random.default_rng(3)
    rows, cols = rng.integers(0, 30, 400), rng.integers(0, 25, 400)
    vals = rng.standard_normal(400)
    u = CSR.from_coo_arrays(rows, cols, vals, (30, 25), sum_duplicates=False)
    s = u.sorted()
    s.validate()
    assert s.sorted_indices
    ref = CSR.from_coo_arrays(rows, cols, vals, (30, 25))
    np.testing.assert_array_equal(s.indptr, ref.indptr)
    np.testing.assert_array_equal(s.indices, ref.indices)
    np.testing.assert_allclose(s.data, ref.data)
    assert ref.sorted() is ref
    np.testing.assert_array_equal(u.indices, CSR.from_coo_arrays(rows, cols, vals, (30, 25),
                                                                 sum_duplicates=False).indices)  # u unchanged


def test_bucket_rows_kernel_is_a_stable_counting_sort():
    rng = np.random.default_rng(4)
    rows, cols = rng.integers(0, 12, 90), rng.integers(0, 7, 90)
    vals = rng.standard_normal(90)
    indptr = np.empty(13, np.int64)
    idx, dat = np.empty(90, np.int64), np.empty(90)
    bucket_rows_kernel(rows, cols, vals, 12, indptr, idx, dat)
    order = np.argsort(rows, kind="stable")
    np.testing.assert_array_equal(indptr, np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=12)))))
    np.testing.assert_array_equal(idx, cols[order])
    np.testing.assert_array_equal(dat, vals[order])
