"""flexsparse random tensors: exact nnz, distinct coordinates, skew, huge index spaces, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexsparse.formats.random import DISTRIBUTIONS, random

from .test_coo import DTYPES, shapes

FLICKR = (320_000, 28_000_000, 1_600_000, 731)


def check_distinct_canonical(t):
    t.validate()
    assert t.canonical
    if t.ndim and t.nnz > 1:
        assert len({tuple(c) for c in t.coords.T.tolist()}) == t.nnz


@settings(max_examples=50, deadline=None)
@given(shapes(), st.sampled_from([0.0, 0.05, 0.5, 1.0]), st.sampled_from(sorted(DISTRIBUTIONS)),
       st.sampled_from(DTYPES), st.integers(0, 2**31))
def test_exact_nnz_and_distinct(shape, density, dist, dtype, seed):
    t = random(shape, density, seed=seed, distribution=dist, dtype=dtype)
    assert t.shape == shape and t.dtype == dtype
    assert t.nnz == round(density * math.prod(shape))
    check_distinct_canonical(t)
    assert (t.data != 0).all()  # no explicit zeros
    if density == 1.0 and t.ndim:
        assert (t.todense() != 0).all()


def test_seed_reproducible_and_generator_accepted():
    a = random((20, 30), 0.1, seed=5)
    b = random((20, 30), 0.1, seed=5)
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_array_equal(a.data, b.data)
    c = random((20, 30), 0.1, seed=np.random.default_rng(5))
    assert c.nnz == 60
    assert not np.array_equal(random((20, 30), 0.1, seed=6).coords, a.coords)


@pytest.mark.parametrize("dist", ["uniform", "powerlaw"])
def test_flickr_sized_index_space(dist):
    t = random(FLICKR, nnz=20_000, seed=0, distribution=dist)
    assert t.nnz == 20_000 and t.coords.dtype == np.int32
    check_distinct_canonical(t)
    for m, extent in enumerate(FLICKR):
        assert 0 <= t.coords[m].min() and t.coords[m].max() < extent
    assert t.density == 20_000 / math.prod(FLICKR)


@pytest.mark.parametrize("dist", ["uniform", "powerlaw"])
def test_large_space_top_up_path_is_exact(monkeypatch, dist):
    import flexsparse.formats.random as frandom

    # the per-mode sampler with dedupe/top-up, dense enough to collide often
    monkeypatch.setattr(frandom, "_SMALL_SPACE", 0)
    t = random((300, 200), 0.4, seed=3, distribution=dist, alpha=0.5)
    assert t.nnz == round(0.4 * 300 * 200)
    check_distinct_canonical(t)


def test_uniform_is_not_skewed_and_powerlaw_is():
    u = random((200, 200, 200), nnz=100_000, seed=1)
    p = random((200, 200, 200), nnz=100_000, seed=1, distribution="powerlaw", alpha=1.2)
    for t in (u, p):
        check_distinct_canonical(t)
    slice_u = np.sort(np.bincount(u.coords[0], minlength=200))
    slice_p = np.sort(np.bincount(p.coords[0], minlength=200))
    # uniform: every slice near 500; power law: the heaviest slice is many times the median
    assert slice_u[-1] < 2 * np.median(slice_u)
    assert slice_p[-1] > 5 * np.median(slice_p)
    # the heaviest slice is not always coordinate 0 (ranks are permuted)
    heavy = {int(np.argmax(np.bincount(random((200, 200, 200), nnz=5000, seed=s, distribution="powerlaw",
                                                 alpha=1.5).coords[0], minlength=200))) for s in range(5)}
    assert len(heavy) > 1


def test_powerlaw_small_space_weights_follow_alpha():
    # exact small-space path: heavier alpha -> more concentrated slice counts
    conc = []
    for alpha in (0.0, 1.0, 2.0):
        t = random((300, 50), 0.1, seed=4, distribution="powerlaw", alpha=alpha)
        counts = np.sort(np.bincount(t.coords[0], minlength=300))[::-1]
        conc.append(counts[:10].sum() / t.nnz)
    assert conc[0] < conc[1] < conc[2]


def test_too_concentrated_warns_with_count(monkeypatch):
    import flexsparse.formats.random as frandom

    monkeypatch.setattr(frandom, "_SMALL_SPACE", 0)  # force the sampling path on a small space
    with pytest.warns(RuntimeWarning, match=r"only \d+ distinct coordinates of the requested 9000"):
        t = random((100, 100), nnz=9000, seed=0, distribution="powerlaw", alpha=3.0)
    assert 0 < t.nnz < 9000
    check_distinct_canonical(t)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(shape=(3, 3), density=0.5, distribution="normal"),
     "unknown distribution 'normal'; valid distributions: powerlaw, uniform"),
    (dict(shape=(3, 3), density=1.5), r"density must be a real number in \[0, 1\], got 1.5"),
    (dict(shape=(3, 3), density=None, nnz=10), r"nnz must be an int in \[0, prod\(shape\) = 9\], got 10"),
    (dict(shape=(3, 3), density=0.5, nnz=3), "pass exactly one of density= and nnz="),
    (dict(shape=(3, 3), density=0.5, distribution="powerlaw", alpha=-1), "alpha must be a finite real >= 0"),
    (dict(shape=(3, -3), density=0.5), "negative extent -3 in mode 1"),
])
def test_errors(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        random(**kwargs)


def test_dtype_error():
    with pytest.raises(TypeError, match="dtype has non-numeric dtype <U1"):
        random((2, 2), 0.5, dtype="U1")
