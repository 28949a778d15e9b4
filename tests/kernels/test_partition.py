"""Cost-balanced partitions: cover every job once, balance within the stated bound."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexsparse.kernels.cpu.partition import (
    SCHEDULES,
    Partition,
    cost_partition,
    get_schedule,
    round_robin_partition,
    take_job,
    thread_scope,
)


def jobs_of(p: Partition) -> list[np.ndarray]:
    return [p.order[p.bounds[i]:p.bounds[i + 1]] for i in range(p.n_parts)]


@settings(max_examples=60, deadline=None)
@given(costs=st.lists(st.integers(0, 10_000), max_size=200), workers=st.integers(1, 9),
       ppw=st.integers(1, 8), name=st.sampled_from(sorted(SCHEDULES)))
def test_partition_covers_every_job_exactly_once(costs, workers, ppw, name):
    costs = np.array(costs, dtype=np.int64)
    p = get_schedule(name)(costs, workers, ppw)
    p.validate()
    assert p.n_workers == workers
    seen = np.concatenate(jobs_of(p)) if p.n_parts else np.zeros(0, dtype=np.int64)
    np.testing.assert_array_equal(np.sort(seen), np.arange(costs.size))
    np.testing.assert_allclose(p.part_costs, [costs[j].sum() for j in jobs_of(p)])
    np.testing.assert_allclose(p.worker_costs().sum(), costs.sum())


@settings(max_examples=60, deadline=None)
@given(costs=st.lists(st.integers(0, 10_000), min_size=1, max_size=300), workers=st.integers(1, 9),
       ppw=st.integers(1, 8))
def test_cost_partition_balance_bound(costs, workers, ppw):
    costs = np.array(costs, dtype=np.int64)
    p = cost_partition(costs, workers, ppw)
    assert p.contiguous
    total, biggest = costs.sum(), costs.max()
    assert p.n_parts == workers * ppw
    wc = p.worker_costs()
    assert wc.max() <= total / workers + biggest + 1e-9
    per_part_bound = np.repeat(wc / ppw, ppw) + biggest + 1e-9
    assert (p.part_costs <= per_part_bound).all()


def test_power_law_rows_balance_better_than_round_robin():
    rng = np.random.default_rng(0)
    costs = np.sort((rng.pareto(1.1, 20_000) * 10).astype(np.int64))[::-1]  # heavy rows first
    cost = cost_partition(costs, 2, 4)
    rr = round_robin_partition(costs, 2)
    assert cost.imbalance() <= 1 + costs.max() / (costs.sum() / 2)
    assert cost.imbalance() <= rr.imbalance()


def test_round_robin_deals_jobs_modulo_workers():
    p = round_robin_partition(np.arange(7), 3)
    assert [j.tolist() for j in jobs_of(p)] == [[0, 3, 6], [1, 4], [2, 5]]
    np.testing.assert_allclose(p.part_costs, [9, 5, 7])


def test_empty_and_zero_costs():
    p = cost_partition(np.zeros(0, dtype=np.int64), 4, 2)
    p.validate()
    assert p.n_items == 0 and p.n_parts == 8
    z = cost_partition(np.zeros(10, dtype=np.int64), 2, 1)
    assert np.diff(z.bounds).tolist() == [5, 5]


def test_errors():
    with pytest.raises(ValueError, match="unknown schedule 'lifo'; valid names: cost, round-robin"):
        get_schedule("lifo")
    with pytest.raises(ValueError, match="costs must be finite and non-negative"):
        cost_partition(np.array([1, -1]), 2)
    with pytest.raises(ValueError, match="n_workers must be a positive int, got 0"):
        cost_partition(np.array([1, 1]), 0)
    with pytest.raises(ValueError, match="costs must be a 1-D integer or float array"):
        cost_partition(np.ones((2, 2)), 2)
    bad = cost_partition(np.ones(4), 2)
    with pytest.raises(ValueError, match="bounds must rise from 0"):
        Partition(bad.order, bad.bounds[::-1].copy(), bad.worker_bounds, bad.part_costs, True)
    with pytest.raises(ValueError, match="order is not a permutation"):
        Partition(np.array([0, 0, 1, 2]), bad.bounds, bad.worker_bounds, bad.part_costs, False)


def test_thread_scope_restores():
    before = numba.get_num_threads()
    with thread_scope(1) as t:
        assert t == 1 and numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be None or an int"):
        with thread_scope(numba.config.NUMBA_NUM_THREADS + 1):
            pass


def _nearest_cuts_reference(ends, targets, lo, hi):
    """NumPy oracle: prefix index in [lo, hi] nearest to each target (ties to the lower)."""
    j = np.clip(np.searchsorted(ends, targets, side="left"), 1, ends.size - 1)
    below = targets - ends[j - 1] <= ends[j] - targets
    return np.clip(np.where(below, j - 1, j), lo, hi)


@settings(max_examples=60, deadline=None)
@given(costs=st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=120),
       workers=st.integers(1, 6), ppw=st.integers(1, 8))
def test_cost_partition_kernel_matches_numpy_nearest_cuts(costs, workers, ppw):
    """The compiled kernel cuts exactly where a vectorised nearest-prefix search does."""
    costs = np.array(costs)
    n = costs.size
    ends = np.concatenate(([0.0], np.cumsum(costs)))
    weights = ends if ends[-1] > 0 else np.arange(n + 1, dtype=np.float64)
    total = weights[-1]
    wb = _nearest_cuts_reference(weights, total * np.arange(workers + 1) / workers, 0, n)
    wb[0], wb[-1] = 0, n
    lo, hi = wb[:-1], wb[1:]
    frac = np.arange(ppw + 1) / ppw
    targets = weights[lo][:, None] + (weights[hi] - weights[lo])[:, None] * frac[None, :]
    cuts = _nearest_cuts_reference(weights, targets, lo[:, None], hi[:, None])
    cuts[:, 0], cuts[:, -1] = lo, hi
    expected = np.concatenate((cuts[:, :-1].ravel(), [n]))
    p = cost_partition(costs, workers, ppw)
    p.validate()
    np.testing.assert_array_equal(p.bounds, expected)
    np.testing.assert_allclose(p.part_costs, ends[expected[1:]] - ends[expected[:-1]])


@pytest.mark.jitless
def test_cost_partition_tiny_jitless():
    # worker shares 5 | 5; worker 0's half-way target 2.5 ties between prefix 0 and 5 and
    # goes to the lower cut, leaving its first part empty
    p = cost_partition(np.array([5, 1, 1, 1, 1, 1]), 2, 2)
    p.validate()
    assert p.bounds.tolist() == [0, 0, 1, 3, 6]
    np.testing.assert_allclose(p.part_costs, [0.0, 5.0, 2.0, 3.0])
    np.testing.assert_allclose(p.worker_costs(), [5.0, 5.0])


@settings(max_examples=80, deadline=None)
@given(sizes=st.lists(st.integers(0, 6), min_size=1, max_size=5),
       steps=st.lists(st.integers(0, 4), max_size=60))
def test_take_job_every_job_once_own_up_then_next_down(sizes, steps):
    """Workers stepping in any order (``steps`` picks who moves next, then round-robin):
    every job is taken exactly once, a worker takes a run of its own jobs upwards from its
    first, then a run of the next worker's downwards from that range's top."""
    P = len(sizes)
    bounds = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    done = np.zeros(int(bounds[-1]), dtype=np.uint8)
    last, live = [-1] * P, list(range(P))
    taken = [[] for _ in range(P)]
    order = [w % P for w in steps] + [w for _ in range(int(bounds[-1]) + 1) for w in range(P)]
    for w in order:
        if w not in live:
            continue
        j = int(take_job(done, bounds, w, last[w]))
        if j < 0:
            live.remove(w)
            continue
        taken[w].append(j)
        last[w] = j
    assert not live
    assert sorted(j for t in taken for j in t) == list(range(int(bounds[-1])))
    for w, t in enumerate(taken):
        lo, hi = int(bounds[w]), int(bounds[w + 1])
        q = (w + 1) % P
        own = [j for j in t if lo <= j < hi]
        other = t[len(own):]
        assert own == list(range(lo, lo + len(own)))
        if q != w:
            assert other == list(range(int(bounds[q + 1]) - 1, int(bounds[q + 1]) - 1 - len(other), -1))
        else:
            assert other == []


def test_take_job_late_worker_finds_its_range_taken():
    """Worker 0 runs alone to the end: it takes all of worker 1's jobs from the top down."""
    bounds = np.array([0, 3, 7], dtype=np.int64)
    done = np.zeros(7, dtype=np.uint8)
    seq, j = [], int(take_job(done, bounds, 0, -1))
    while j >= 0:
        seq.append(j)
        j = int(take_job(done, bounds, 0, j))
    assert seq == [0, 1, 2, 6, 5, 4, 3]
    assert take_job(done, bounds, 1, -1) == -1


def test_cost_split_cuts_parts_at_the_given_shares():
    """``cuts`` place each worker's part ends at those shares of its cost (rows of equal cost:
    at those shares of its rows); no cuts: equal parts, as :func:`cost_partition`."""
    from flexsparse.kernels.cpu.partition import cost_split

    costs = np.ones(1000, dtype=np.int64)
    cuts = np.array([[0.0, 0.1, 0.2, 0.6, 1.0], [0.0, 0.5, 0.7, 0.9, 1.0]])
    split = cost_split(costs, 2, 4, cuts)
    assert split.bounds.tolist() == [0, 50, 100, 300, 500, 750, 850, 950, 1000]
    assert split.part_costs.tolist() == [50, 50, 200, 200, 250, 100, 100, 50]
    equal = cost_split(costs, 2, 4)
    assert equal.bounds.tolist() == cost_partition(costs, 2, 4).bounds.tolist()
    assert cost_split(costs.astype(np.float64) / 3, 2, 4).bounds.tolist() == equal.bounds.tolist()


def test_spgemm_tail_cuts_follow_the_shares():
    """Two stealing workers get :data:`~flexsparse.kernels.cpu.spgemm.TAIL_SHARES` in the order
    each computes its parts (worker 0 walks down: its shares reversed in row order); a share
    list of the wrong length is a ValueError."""
    import flexsparse.kernels.cpu.spgemm as spk

    cuts = spk._tail_cuts(spk.TAIL_SHARES)
    shares = np.asarray(spk.TAIL_SHARES) / sum(spk.TAIL_SHARES)
    np.testing.assert_allclose(np.diff(cuts[1]), shares)
    np.testing.assert_allclose(np.diff(cuts[0]), shares[::-1])
    with pytest.raises(ValueError, match="TAIL_SHARES needs"):
        spk._tail_cuts(spk.TAIL_SHARES[:-1])
