"""count_nonzero_upto: exact below the bound, above it once passed, every layout and dtype."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flexsparse as fs
from flexsparse.kernels.cpu.nonzero import count_nonzero_upto


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.longdouble, np.int32, np.uint8,
                                   np.complex128, np.bool_])
@pytest.mark.parametrize("density", [0.0, 0.01, 1.0])
def test_exact_at_or_below_the_bound(dtype, density):
    rng = np.random.default_rng(0)
    a = ((rng.random((37, 300)) < density) * rng.integers(1, 5, (37, 300))).astype(dtype)
    exact = int(np.count_nonzero(a))
    assert count_nonzero_upto(a, a.size) == exact
    assert count_nonzero_upto(a, exact) == exact
    if exact:
        assert count_nonzero_upto(a, exact - 1) > exact - 1


@given(st.integers(0, 20_000), st.integers(0, 20_000), st.sampled_from(["C", "F", "strided"]))
@settings(max_examples=40, deadline=None)
def test_answers_the_threshold_question(n_nonzero, limit, layout):
    a = np.zeros(20_000)
    a[np.random.default_rng(n_nonzero).permutation(20_000)[:n_nonzero]] = -0.5
    a = a.reshape(100, 200)
    if layout == "F":
        a = np.asfortranarray(a)
    elif layout == "strided":
        a = np.zeros((100, 400))[:, ::2] + a
    got = count_nonzero_upto(a, limit)
    assert (got > limit) == (n_nonzero > limit)
    if n_nonzero <= limit:
        assert got == n_nonzero


def test_negative_zero_is_zero():
    assert count_nonzero_upto(np.full(10, -0.0), 100) == 0


@pytest.mark.parametrize("kept,want", [(4, fs.COO), (5, fs.COO), (6, np.ndarray), (20, np.ndarray)])
def test_auto_format_follows_the_real_density(kept, want):
    """The einsum auto rule on a BLAS result of two dense COO operands: columns of ``b`` that
    alternate +1/-1 cancel, so the result is ``kept / 20`` dense (stored dense above 25%)."""
    a = np.ones((20, 20))
    b = np.ones((20, 20))
    b[1::2, kept:] = -1.0
    got = fs.einsum("ij,jk->ik", fs.COO.from_numpy(a), fs.COO.from_numpy(b), format="auto")
    assert isinstance(got, want)
    np.testing.assert_array_equal(got.todense() if isinstance(got, fs.COO) else got, a @ b)
