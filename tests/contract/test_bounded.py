"""einsum(memory_limit=...) runs tile by tile and returns exactly the unbounded result."""

from __future__ import annotations

import numpy as np
import pytest

import flexsparse as fs
from flexsparse.formats.coo import COO


def _skewed(shape, density, seed):
    return fs.random(shape, density, seed=seed, distribution="powerlaw")


@pytest.mark.parametrize("tiling", ["overbook", "conservative", "prescient"])
@pytest.mark.parametrize("spec", ["ij,jk->ik", "ijk,ljk->il", "bij,bjk->bik"])
def test_bounded_equals_unbounded(spec, tiling):
    shapes = {"ij,jk->ik": [(300, 200), (200, 250)], "ijk,ljk->il": [(80, 30, 20), (70, 30, 20)],
              "bij,bjk->bik": [(4, 60, 50), (4, 50, 40)]}[spec]
    ops = [_skewed(s, 0.02, k) for k, s in enumerate(shapes)]
    ref = fs.einsum(spec, *ops, format="coo")
    got, reports = fs.einsum(spec, *ops, format="coo", memory_limit="200kB", tiling=tiling,
                             return_report=True)
    assert len(reports) == 1 and reports[0].strategy == tiling
    assert reports[0].tiles >= 1
    np.testing.assert_array_equal(got.coords, ref.coords)
    np.testing.assert_allclose(got.data, ref.data)


def test_bounded_streams_to_disk(tmp_path):
    a = _skewed((400, 400), 0.01, 3)
    ref = fs.einsum("ij,jk->ik", a, a, format="coo")
    lazy = fs.einsum("ij,jk->ik", a, a, memory_limit="300kB", out=tmp_path / "c.npz")
    assert lazy.shape == ref.shape and lazy.nnz == ref.nnz
    got = lazy.load()
    np.testing.assert_array_equal(got.coords, ref.coords)
    np.testing.assert_allclose(got.data, ref.data)


def test_bounded_bad_options(tmp_path):
    a = COO.from_numpy(np.eye(5))
    with pytest.raises(ValueError, match="malformed size"):
        fs.einsum("ij,jk->ik", a, a, memory_limit="lots")
    with pytest.raises(ValueError, match="valid names"):
        fs.einsum("ij,jk->ik", a, a, memory_limit="1MB", tiling="guess")
    with pytest.raises(ValueError, match="memory_limit"):
        fs.einsum("ij,jk->ik", a, a, out=tmp_path / "x.npz")
    with pytest.raises(MemoryError, match="minimum"):
        fs.einsum("ij,jk->ik", a, a, memory_limit=16)


@pytest.mark.parametrize("dtype", [np.bool_, np.float16, np.int8, np.complex64])
@pytest.mark.parametrize("name", ["c.npz", "c"])
def test_streamed_result_is_stored_in_the_result_dtype(tmp_path, dtype, name):
    # bool runs as int64 counts and float16 in float32; the store must hold the result dtype
    a = (fs.random((60, 60), 0.1, seed=1).todense() != 0).astype(dtype)
    want = np.einsum("ij,jk->ik", a, a)
    lazy = fs.einsum("ij,jk->ik", COO.from_numpy(a), COO.from_numpy(a), memory_limit="64kB",
                     out=tmp_path / name)
    assert lazy.dtype == want.dtype
    got = fs.load(tmp_path / name)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.todense(), want)
    for _, values in lazy.tiles():
        assert values.dtype == want.dtype
