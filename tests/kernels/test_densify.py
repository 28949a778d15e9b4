"""COO -> dense by runs (kernels.cpu.densify.sorted_coo_to_dense, long_runs) and the paths of
COO.todense that take it, against dense NumPy across dtypes, densities and run lengths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexsparse import _limits
from flexsparse.formats.coo import COO, _row_major_strides
from flexsparse.kernels.cpu.densify import long_runs, sorted_coo_to_dense

DTYPES = [np.float64, np.float32, np.int32, np.int64, np.uint8, np.complex128]


def _runs_array(shape, density, run, dtype, seed=0):
    """A dense array whose non-zeros come in blocks of ``run`` consecutive cells (C order)."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    blocks = rng.random(-(-size // run)) < density
    mask = np.repeat(blocks, run)[:size].reshape(shape)
    vals = rng.integers(1, 100, size=shape)
    if np.dtype(dtype).kind == "c":
        vals = vals + 1j * rng.integers(1, 100, size=shape)
    return np.where(mask, vals, 0).astype(dtype)


def _kernel(coo, fill):
    out = np.empty(coo.shape, coo.dtype) if fill else np.zeros(coo.shape, coo.dtype)
    flag = sorted_coo_to_dense(coo.coords, coo.data, _row_major_strides(coo.shape), out.reshape(-1), fill)
    return out, bool(flag)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("density", [0.0, 0.02, 0.5, 1.0])
@pytest.mark.parametrize("run", [1, 3, 64, 1000])
@pytest.mark.parametrize("fill", [True, False])
def test_sorted_runs_match_numpy(dtype, density, run, fill):
    want = _runs_array((6, 7, 50), density, run, dtype)
    coo = COO.from_numpy(want)
    assert coo.canonical
    got, flag = _kernel(coo, fill)
    np.testing.assert_array_equal(got, want)
    assert flag is False
    assert got.dtype == want.dtype


@pytest.mark.parametrize("shape", [(37,), (5, 9), (3, 4, 5, 6)])
def test_sorted_runs_every_order_and_explicit_zeros(shape):
    rng = np.random.default_rng(1)
    want = _runs_array(shape, 0.6, 4, np.float64, seed=2)
    coo = COO.from_numpy(want)
    # stored zeros are kept as entries (the chemistry tensors store many)
    keep = rng.random(coo.nnz) < 0.3
    data = coo.data.copy()
    data[keep] = 0.0
    z = COO(coo.coords, data, shape, canonical=True)
    got, _ = _kernel(z, True)
    np.testing.assert_array_equal(got, z.todense())
    np.testing.assert_array_equal(got.reshape(-1)[np.ravel_multi_index(tuple(coo.coords), shape)], data)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("where", [0, 17, -1])
def test_sorted_runs_report_nonfinite(bad, where):
    want = _runs_array((4, 5, 30), 0.7, 16, np.float64)
    coo = COO.from_numpy(want)
    data = coo.data.copy()
    data[where] = bad
    got, flag = _kernel(COO(coo.coords, data, coo.shape, canonical=True), True)
    assert flag is True
    cell = np.unravel_index(np.ravel_multi_index(tuple(coo.coords[:, where]), coo.shape), coo.shape)
    assert np.isnan(got[cell]) if np.isnan(bad) else got[cell] == bad


def test_long_runs_tells_long_from_short():
    long = COO.from_numpy(_runs_array((24, 24, 375), 0.75, 375, np.float64))
    short = COO.from_numpy(_runs_array((24, 24, 375), 0.75, 2, np.float64))
    probes, min_run = _limits.DENSIFY_RUN_PROBES, _limits.DENSIFY_MIN_MEAN_RUN
    assert long_runs(long.coords, _row_major_strides(long.shape), probes, min_run)
    assert not long_runs(short.coords, _row_major_strides(short.shape), probes, min_run)
    one = COO.from_numpy(np.eye(1))
    assert not long_runs(one.coords, _row_major_strides(one.shape), probes, min_run)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("density", [0.0, 0.01, 0.3, 1.0])
@pytest.mark.parametrize("run", [1, 500])
def test_coo_todense_paths_match_numpy(dtype, density, run):
    """Through COO.todense and its inf/nan flag: runs kernel (long runs, with and without the
    zero fill), scatter (short runs, non-canonical), the full grid (a copy of the values)."""
    want = _runs_array((8, 9, 500), density, run, dtype)
    coo = COO.from_numpy(want)
    got, flag = coo._todense_checked()
    np.testing.assert_array_equal(got, want)
    assert flag in (False, None)
    perm = np.random.default_rng(3).permutation(coo.nnz)
    shuffled = COO(coo.coords[:, perm], coo.data[perm], coo.shape)
    assert not shuffled.canonical or coo.nnz < 2
    np.testing.assert_array_equal(shuffled.todense(), want)


def test_coo_todense_sparse_long_runs_keep_lazy_zeros():
    """Below the fill density the runs are copied into np.zeros (the cells between are zero)."""
    want = _runs_array((16, 16, 400), 0.05, 400, np.float64)
    coo = COO.from_numpy(want)
    assert coo.nnz < _limits.DENSIFY_FILL_MIN_DENSITY * coo.size
    assert long_runs(coo.coords, _row_major_strides(coo.shape), _limits.DENSIFY_RUN_PROBES,
                     _limits.DENSIFY_MIN_MEAN_RUN)
    np.testing.assert_array_equal(coo.todense(), want)


def test_coo_todense_inf_flag_through_runs():
    want = _runs_array((8, 8, 300), 0.9, 300, np.float64)
    want[3, 4, 5] = np.inf
    got, flag = COO.from_numpy(want)._todense_checked()
    assert flag is True and got[3, 4, 5] == np.inf
    np.testing.assert_array_equal(got, want)


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4), data=st.data())
def test_sorted_runs_any_sorted_unique_coords(shape, data):
    size = int(np.prod(shape))
    cells = data.draw(st.sets(st.integers(0, size - 1), max_size=size))
    lin = np.array(sorted(cells), dtype=np.int64)
    coords = np.vstack(np.unravel_index(lin, shape)) if lin.size else np.zeros((len(shape), 0), np.int64)
    vals = np.arange(1, lin.size + 1, dtype=np.float64)
    want = np.zeros(size)
    want[lin] = vals
    out = np.full(size, np.nan)
    if lin.size:
        assert sorted_coo_to_dense(coords, vals, _row_major_strides(tuple(shape)), out, True) is False
    else:
        out[:] = 0.0
    np.testing.assert_array_equal(out, want)
