"""The all-dense pair fast path of einsum (_dense.dense_pair_fast) against numpy.einsum:
layouts, batches, dtypes, inf/nan semantics, and the calls it must leave to the full path."""

from __future__ import annotations

import numpy as np
import pytest

import flexsparse as fs
from flexsparse.contract import _dense


def _rand(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


CASES = [
    ("abQ,ijQ->abij", (6, 5, 7), (3, 2, 7)),
    ("abQ,icQ->abic", (4, 4, 9), (2, 4, 9)),
    ("ij,jk->ki", (5, 6), (6, 4)),  # output permuted
    ("bij,bjk->bik", (3, 4, 5), (3, 5, 2)),  # batched
    ("ij,kj->ik", (4, 6), (5, 6)),
    ("i,j->ij", (4,), (3,)),  # outer product, nothing contracted
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
@pytest.mark.parametrize(("spec", "sx", "sy"), CASES)
def test_fast_path_matches_numpy(spec, sx, sy, dtype):
    x, y = _rand(sx, dtype, 0), _rand(sy, dtype, 1)
    assert _dense.dense_pair_fast(spec, x, y, "auto") is not None
    got = fs.einsum(spec, x, y)
    want = np.einsum(spec, x, y)
    assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == np.float32 else 1e-12)
    np.testing.assert_array_equal(fs.einsum(spec, x, y), got)  # the remembered plan gives the same


def test_fast_path_reads_strided_views():
    base = _rand((8, 10, 12), np.float64, 2)
    x = base[::2, :, 1:11].transpose(0, 2, 1)  # (4, 10, 10), non-contiguous
    y = _rand((3, 10), np.float64, 3)
    np.testing.assert_allclose(fs.einsum("aQc,iQ->aci", x, y), np.einsum("aQc,iQ->aci", x, y), rtol=1e-12)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_nonfinite_operands_keep_numpy_semantics(bad):
    x, y = _rand((4, 5), np.float64, 4), _rand((5, 3), np.float64, 5)
    x[1, 2] = bad
    y[2, :] = 0.0  # inf * 0 = nan in NumPy's sum
    with np.errstate(invalid="ignore"):
        want = np.einsum("ij,jk->ik", x, y)
    got = fs.einsum("ij,jk->ik", x, y)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    assert np.isnan(got[1]).all()


@pytest.mark.parametrize(("spec", "x", "y"), [
    ("ii,ij->j", np.ones((3, 3)), np.ones((3, 2))),  # diagonal: unary step
    ("ij,jk->", np.ones((2, 3)), np.ones((3, 2))),  # 0-d result
    ("ij,jk->ik", np.ones((2, 3), dtype=np.int64), np.ones((3, 2), dtype=np.int64)),  # no BLAS
    ("ij,jk->ik", np.ones((2, 3), dtype=np.float32), np.ones((3, 2))),  # mixed dtypes
    ("ij,jk->i", np.ones((2, 3)), np.ones((3, 2))),  # k summed privately
])
def test_full_path_for_the_rest(spec, x, y):
    assert _dense.dense_pair_fast(spec, x, y, "auto") is None
    got = fs.einsum(spec, x, y)
    np.testing.assert_allclose(got, np.einsum(spec, x, y))
    assert np.asarray(got).dtype == np.einsum(spec, x, y).dtype


def test_fast_path_errors_match_full_path():
    x, y = np.ones((2, 3)), np.ones((4, 2))
    with pytest.raises(ValueError):
        fs.einsum("ij,jk->ik", x, y)  # j: 3 against 4
    with pytest.raises(ValueError, match="format"):
        fs.einsum("ij,jk->ik", x, x.T, format="nope")
    with pytest.raises(ValueError):
        fs.einsum("ij,jk->ik", x, x.T, optimize="nope")


def test_matrix_subclass_and_sparse_output_take_the_full_path():
    x, y = np.ones((2, 3)), np.ones((3, 2))
    assert isinstance(fs.einsum("ij,jk->ik", x, y, format="coo"), fs.COO)
    np.testing.assert_array_equal(np.asarray(fs.einsum("ij,jk->ik", np.asmatrix(x), y)), x @ y)


def _coo(shape, dtype, seed, density):
    """A COO holding ``density`` of the cells of a random array (whole-row runs and single
    entries mixed), and its dense form."""
    a = _rand(shape, dtype, seed)
    rng = np.random.default_rng(seed + 100)
    a[rng.random(shape) >= density] = 0
    return fs.as_coo(a), a


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128, np.int64])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.6, 1.0])
@pytest.mark.parametrize(("spec", "sx", "sy"), CASES)
def test_coo_fast_path_matches_numpy(spec, sx, sy, dtype, density):
    """Two COO operands: dense-enough float ones take coo_pair_fast, the rest (sparse,
    integer) the full path; every format gives NumPy's values."""
    (x, xd), (y, yd) = _coo(sx, dtype, 0, density), _coo(sy, dtype, 1, density)
    want = np.einsum(spec, xd, yd)
    fast = _dense.coo_pair_fast(spec, x, y, "auto")
    takes = np.dtype(dtype).kind in "fc" and _dense.dense_enough(x) and _dense.dense_enough(y)
    assert (fast is not None) == takes
    if fast is not None:
        assert fast.shape == want.shape and fast.dtype == want.dtype
    tol = 1e-4 if dtype == np.float32 else 1e-12
    for fmt in ("auto", "dense", "coo", "csf") + (("csr",) if want.ndim == 2 else ()):
        got = fs.einsum(spec, x, y, format=fmt)
        got = got if isinstance(got, np.ndarray) else got.todense()
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("full", [False, True])
def test_coo_fast_path_nonfinite_like_numpy(value, full):
    """An inf or nan in a COO operand: NumPy's values wherever it meets a zero, whether the
    densify flagged it (partly filled COO) or copied the values unchecked (a full COO)."""
    spec = "abQ,icQ->abic"
    rng = np.random.default_rng(7)
    xd, yd = rng.standard_normal((3, 4, 6)), rng.standard_normal((2, 4, 6))
    if not full:
        xd[0, 1] = 0
        yd[1, :, 3:] = 0
    xd[0, 2, 4] = value
    yd[0, 0] = 0  # the non-finite value meets zeros
    x, y = fs.as_coo(xd), fs.as_coo(yd)
    with np.errstate(invalid="ignore", over="ignore"):
        want = np.einsum(spec, xd, yd)
        assert _dense.coo_pair_fast(spec, x, y, "auto") is None
        got = fs.einsum(spec, x, y, format="dense")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-12)


def test_coo_fast_path_same_operand_twice():
    x, xd = _coo((5, 4, 8), np.float64, 3, 0.7)
    assert _dense.coo_pair_fast("iaQ,jbQ->iajb", x, x, "auto") is not None
    np.testing.assert_allclose(fs.einsum("iaQ,jbQ->iajb", x, x), np.einsum("iaQ,jbQ->iajb", xd, xd), rtol=1e-12)
