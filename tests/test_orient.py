"""GEMM orientation by trial (flexsparse._orient): results equal ``a @ b`` either way round,
the trial alternates and keeps the side with the lower minimum, small and square products
follow the rule untimed, and the cache stays bounded."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from flexsparse import _limits, _orient


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.setattr(_orient, "_CHOICES", {})


def _fake_clock(monkeypatch, kept_s, swapped_s, seen):
    """A clock under which a kept call takes ``kept_s`` and a swapped one ``swapped_s``."""
    now = [0.0]
    real = np.matmul

    def matmul(x, y, out=None):
        seen.append(x.flags.f_contiguous and not x.flags.c_contiguous)  # a swapped call reads b^T first
        now[0] += swapped_s if seen[-1] else kept_s
        return real(x, y, out=out)

    monkeypatch.setattr(_orient.np, "matmul", matmul)
    monkeypatch.setattr(_orient, "_clock", lambda: now[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
@pytest.mark.parametrize("shape", [(300, 40, 200), (40, 300, 200), (5, 3, 2), (120, 120, 90), (0, 30, 10)])
def test_result_equals_matmul_every_call(dtype, shape):
    m, n, k = shape
    rng = np.random.default_rng(m * 7 + n)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((n, k)).astype(dtype).T
    ref = a @ b
    swaps = set()
    for _ in range(2 * _limits.ORIENT_TRIAL_CALLS + 2):
        res, swapped = _orient.matmul_oriented(a, b)
        swaps.add(swapped)
        assert res.shape == (m, n)
        np.testing.assert_allclose(res, ref, rtol=1e-4, atol=1e-4)
        buf = np.full(m * n, np.nan, dtype=dtype)
        res, swapped = _orient.matmul_oriented(a, b, out=buf)
        swaps.add(swapped)
        np.testing.assert_allclose(res, ref, rtol=1e-4, atol=1e-4)
        # the flat buffer holds the product, transposed when swapped
        np.testing.assert_allclose(buf.reshape((n, m) if swapped else (m, n)), ref.T if swapped else ref,
                                   rtol=1e-4, atol=1e-4)
    if m * n * k >= _limits.ORIENT_MIN_MACS and m != n:
        assert swaps == {False, True}  # both sides were tried
    else:
        assert len(swaps) == 1


def test_stacked_products_are_oriented_too():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((3, 200, 60)), rng.standard_normal((3, 60, 30))
    for _ in range(2 * _limits.ORIENT_TRIAL_CALLS + 1):
        res, _ = _orient.matmul_oriented(a, b)
        np.testing.assert_allclose(res, a @ b, rtol=1e-12)


@pytest.mark.parametrize("kept_s, swapped_s, expect", [(1.0, 2.0, False), (2.0, 1.0, True)])
def test_trial_keeps_the_faster_side(monkeypatch, kept_s, swapped_s, expect):
    seen: list = []
    _fake_clock(monkeypatch, kept_s, swapped_s, seen)
    a, b = np.ones((400, 300)), np.ones((300, 50))
    trial = 2 * _limits.ORIENT_TRIAL_CALLS
    got = [_orient.matmul_oriented(a, b)[1] for _ in range(trial + 5)]
    assert got[:trial].count(True) == got[:trial].count(False) == _limits.ORIENT_TRIAL_CALLS
    assert got[0] == _orient.rule_swaps(400, 50, 300)  # the rule's side first
    assert got[trial:] == [expect] * 5
    assert seen == got  # the side reported is the side BLAS ran


def test_a_disturbed_call_does_not_decide(monkeypatch):
    """The minimum of each side decides: one slow swapped call among fast ones does not
    make the kept side win."""
    now = [0.0]
    times = itertools.chain([1.0, 5.0] + [1.0, 0.5] * (_limits.ORIENT_TRIAL_CALLS - 1), itertools.repeat(1.0))
    real = np.matmul

    def matmul(x, y, out=None):
        now[0] += next(times)
        return real(x, y, out=out)

    monkeypatch.setattr(_orient.np, "matmul", matmul)
    monkeypatch.setattr(_orient, "_clock", lambda: now[0])
    a, b = np.ones((40, 300)), np.ones((300, 400))  # fewer rows: the rule keeps the order first
    for _ in range(2 * _limits.ORIENT_TRIAL_CALLS):
        _orient.matmul_oriented(a, b)
    assert _orient.matmul_oriented(a, b)[1]


def test_small_and_square_products_are_not_timed(monkeypatch):
    monkeypatch.setattr(_orient, "_clock", lambda: pytest.fail("timed"))
    a = np.ones((500, 100))
    for _ in range(3):
        assert not _orient.matmul_oriented(a, a.T)[1]  # square output: a SYRK either way
        assert _orient.matmul_oriented(np.ones((30, 10)), np.ones((10, 3)))[1] == _orient.rule_swaps(30, 3, 10)
    assert not _orient._CHOICES


def test_rule_before_measurement():
    assert _orient.rule_swaps(576, 96, 375) and not _orient.rule_swaps(96, 576, 375)
    assert not _orient.rule_swaps(576, 16, 375)  # a very narrow output over a long contracted side
    assert _orient.rule_swaps(2000, 16, 375) and _orient.rule_swaps(576, 16, 64)


def test_choices_are_bounded_and_keyed_by_threads(monkeypatch):
    monkeypatch.setattr(_limits, "ORIENT_CACHE_ENTRIES", 4)
    b = np.ones((60, 40))
    for m in range(100, 110):
        _orient.matmul_oriented(np.ones((m, 60)), b)
    assert len(_orient._CHOICES) == 4
    a = np.ones((100, 60))
    _orient.matmul_oriented(a, b, threads=1)
    _orient.matmul_oriented(a, b, threads=2)
    assert {key[-1] for key in _orient._CHOICES} >= {1, 2}
