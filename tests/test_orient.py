"""GEMM orientation by trial (flexsparse._orient): results equal ``a @ b`` either way round,
the trial runs each side in turn and keeps the one with the lower minimum, trials repeated
at doubling call counts correct a disturbed one, small and square products follow the rule
untimed, and the cache stays bounded."""

from __future__ import annotations

import numpy as np
import pytest

from flexsparse import _limits, _orient


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.setattr(_orient, "_CHOICES", {})


def _scripted_clock(monkeypatch, seconds):
    """A clock under which the n-th BLAS call takes ``seconds(n, swapped)``; returns the sides run."""
    now = [0.0]
    real = np.matmul
    seen: list = []

    def matmul(x, y, out=None):
        seen.append(x.flags.f_contiguous and not x.flags.c_contiguous)  # a swapped call reads b^T first
        now[0] += seconds(len(seen) - 1, seen[-1])
        return real(x, y, out=out)

    monkeypatch.setattr(_orient.np, "matmul", matmul)
    monkeypatch.setattr(_orient, "_clock", lambda: now[0])
    return seen


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
    seen = _scripted_clock(monkeypatch, lambda n, swapped: swapped_s if swapped else kept_s)
    a, b = np.ones((400, 300)), np.ones((300, 50))
    run = _limits.ORIENT_TRIAL_CALLS
    got = [_orient.matmul_oriented(a, b)[1] for _ in range(2 * run + 5)]
    rule = _orient.rule_swaps(400, 50, 300)
    assert got[:2 * run] == [rule] * run + [not rule] * run  # a run of the rule's side, then the other
    assert got[2 * run:] == [expect] * 5
    assert seen == got  # the side reported is the side BLAS ran


def test_a_disturbed_call_does_not_decide(monkeypatch):
    """The minimum of each side decides: one slow swapped call among fast ones does not
    make the kept side win."""
    run = _limits.ORIENT_TRIAL_CALLS
    _scripted_clock(monkeypatch, lambda n, swapped: (5.0 if n == run else 0.5) if swapped else 1.0)
    a, b = np.ones((40, 300)), np.ones((300, 400))  # fewer rows: the rule keeps the order first
    for _ in range(2 * run):
        _orient.matmul_oriented(a, b)
    assert _orient.matmul_oriented(a, b)[1]


def test_repeated_trials_correct_a_disturbed_one(monkeypatch):
    """The kept calls of the first trial run slow (a cold start), the kept side is faster
    later: the repeated trial at ORIENT_RECHECK_FIRST calls switches to it, and each later
    trial (at each doubling) runs the swapped side for one run only."""
    run, first = _limits.ORIENT_TRIAL_CALLS, _limits.ORIENT_RECHECK_FIRST
    seen = _scripted_clock(monkeypatch, lambda n, swapped: 1.2 if swapped else (3.0 if n < 2 * run else 1.0))
    a, b = np.ones((400, 300)), np.ones((300, 50))  # the rule swaps first
    got = [_orient.matmul_oriented(a, b)[1] for _ in range(8 * first)]
    assert got[:first + 2 * run] == [True] * run + [False] * run + [True] * (first - run) + [False] * run
    swapped_later = [i for i, s in enumerate(got) if s and i >= first + 2 * run]
    assert swapped_later == [t + run + j for t in (2 * first, 4 * first) for j in range(run)]
    assert seen == got


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
