"""Take-over in the two-ended SpGEMM layout: the last worker takes worker 0's rows from the
bottom when it finishes first, and worker 0 takes the last worker's rows from the top. Real
threads interleave by chance, so the worker bodies run here one after the other in the
orders that matter: one worker before the other (it takes all of the other's rows), and a
worker stopping at a row the other then takes from."""

from __future__ import annotations

import numpy as np
import pytest

import flexsparse.kernels.cpu.spgemm as S
from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu.partition import _cost_partition_trusted

from ..conftest import rand_csr


def _setup(a: CSR, b: CSR, rule):
    flops, _ = S.count_flops(a, b)
    part = _cost_partition_trusted(flops + 1, 2, S.PARTS_PER_WORKER)
    bounds, wb = part.bounds, part.worker_bounds
    use_dense = S._dense_flags(rule, bounds, part.part_costs - np.diff(bounds), b.shape[1])
    first = int(bounds[wb[1]])
    room0 = int(flops[:first].sum())
    c_indptr = np.empty(a.shape[0] + 1, dtype=np.int64)
    c_indptr[first] = room0
    cap = room0 + int(flops[first:].sum())
    ci = np.full(cap, -1, dtype=np.int32)
    cd = np.full(cap, np.nan)
    nd = b.shape[1]
    work = dict(tag=np.zeros((2, nd), np.uint64), marker=np.zeros((2, nd), np.uint32), acc=np.zeros((2, nd)),
                trace=np.full((2, S.TRACE_FIELDS), np.nan))
    claim = np.empty(4, dtype=np.int64)
    room = S._init_claim(claim, True, bounds, wb, flops)
    assert room == int(flops.sum()) and claim[0] == (first << 32)
    assert claim[2] == (a.shape[0] << 32) | first and claim[3] == room
    s_i, s_d = np.empty(room, np.int32), np.empty(room)
    return flops, bounds, wb, use_dense, first, c_indptr, ci, cd, work, claim, s_i, s_d


def _worker(w, steal, a, b, variant, sort, st):
    flops, bounds, wb, use_dense, first, c_indptr, ci, cd, work, claim, s_i, s_d = st
    S._numeric_worker(w, w == 0, steal, a.indptr, a.indices, a.data, b.indptr, b.indices, b.data,
                      b.sorted_indices, flops, bounds, wb, use_dense, variant, sort, c_indptr, ci, cd,
                      work["tag"][w], work["marker"][w], work["acc"][w], work["trace"][w], claim, s_i, s_d)


def _result(a, b, st) -> CSR:
    flops, bounds, wb, use_dense, first, c_indptr, ci, cd, work, claim, s_i, s_d = st
    S._join_taken(claim, work["trace"][0], work["trace"][1], c_indptr, ci, cd, s_i, s_d)
    start, end = int(work["trace"][0, 3]), int(work["trace"][1, 3])
    indptr = c_indptr.copy()
    indptr[-1] = end
    indptr -= start
    return CSR._trusted(indptr, ci[start:end].copy(), cd[start:end].copy(), (a.shape[0], b.shape[1]), False)


def _check(c: CSR, a: CSR, b: CSR, sort: bool):
    ref = (a.to_scipy() @ b.to_scipy()).toarray()
    np.testing.assert_allclose(c.toarray(), ref, rtol=1e-12, atol=1e-12)
    assert np.all(np.diff(c.indptr) >= 0) and c.indptr[-1] == c.indices.shape[0]
    for i in range(c.shape[0]):  # no duplicate column in a row; sorted when asked
        row = c.indices[c.indptr[i]:c.indptr[i + 1]]
        assert np.unique(row).size == row.size
        if sort:
            assert np.all(np.diff(row) > 0)


CASES = [(1, "auto"), (2, "auto"), (0, "auto"), (0, "hash")]


@pytest.mark.parametrize("variant,rule", CASES)
@pytest.mark.parametrize("sort", [False, True])
def test_thief_first_takes_all_of_worker0(variant, rule, sort):
    rng = np.random.default_rng(3)
    a = rand_csr(rng, (300, 200), 0.05, powerlaw=True)
    b = rand_csr(rng, (200, 250), 0.05, powerlaw=True)
    st = _setup(a, b, S.get_accumulator(rule))
    _worker(1, True, a, b, variant, sort, st)  # the thief runs first: it takes every row of worker 0
    claim, first = st[9], st[4]
    assert claim[0] == (first << 32) | first and claim[1] > 0
    _worker(0, False, a, b, variant, sort, st)  # finds nothing left, and the last worker done
    assert claim[3] == st[10].shape[0]
    assert int(st[8]["trace"][0, 3]) == int(st[5][first])
    _check(_result(a, b, st), a, b, sort)


@pytest.mark.parametrize("variant,rule", CASES)
@pytest.mark.parametrize("sort", [False, True])
@pytest.mark.parametrize("frac", [0.0, 0.3, 0.9])
def test_worker0_stops_where_the_thief_took_over(variant, rule, sort, frac):
    rng = np.random.default_rng(4)
    a = rand_csr(rng, (400, 150), 0.04, powerlaw=True)
    b = rand_csr(rng, (150, 300), 0.06, powerlaw=True)
    st = _setup(a, b, S.get_accumulator(rule))
    claim, first = st[9], st[4]
    mid = int(first * frac)
    claim[0] = (first << 32) | mid  # rows below mid are the thief's
    _worker(0, False, a, b, variant, sort, st)
    assert claim[0] == (mid << 32) | mid
    claim[0] = mid << 32  # now let the thief take them
    _worker(1, True, a, b, variant, sort, st)
    assert claim[0] == (mid << 32) | mid and (claim[1] > 0) == (mid > 0 and a.indptr[mid] > 0)
    _check(_result(a, b, st), a, b, sort)


@pytest.mark.parametrize("variant,rule", CASES)
@pytest.mark.parametrize("sort", [False, True])
def test_worker0_first_takes_all_of_the_last_worker(variant, rule, sort):
    rng = np.random.default_rng(5)
    a = rand_csr(rng, (300, 200), 0.05, powerlaw=True)
    b = rand_csr(rng, (200, 250), 0.05, powerlaw=True)
    st = _setup(a, b, S.get_accumulator(rule))
    claim, first = st[9], st[4]
    _worker(0, False, a, b, variant, sort, st)  # worker 0 first: its rows, then all of the last worker's
    assert claim[2] == (first << 32) | first and claim[3] < st[10].shape[0]
    _worker(1, True, a, b, variant, sort, st)  # finds nothing of its own, worker 0's rows all done
    assert claim[1] == 0
    _check(_result(a, b, st), a, b, sort)


@pytest.mark.parametrize("variant,rule", CASES)
@pytest.mark.parametrize("sort", [False, True])
@pytest.mark.parametrize("frac", [0.0, 0.5, 1.0])
def test_last_worker_stops_where_worker0_took_over(variant, rule, sort, frac):
    rng = np.random.default_rng(6)
    a = rand_csr(rng, (400, 150), 0.04, powerlaw=True)
    b = rand_csr(rng, (150, 300), 0.06, powerlaw=True)
    st = _setup(a, b, S.get_accumulator(rule))
    claim, first, n = st[9], st[4], a.shape[0]
    mid = first + int((n - first) * frac)
    claim[2] = (mid << 32) | first  # rows from mid up are worker 0's to take
    _worker(1, True, a, b, variant, sort, st)
    assert claim[2] == (mid << 32) | mid
    claim[2] = (n << 32) | mid  # now let worker 0 take them
    _worker(0, False, a, b, variant, sort, st)
    assert claim[2] == (mid << 32) | mid
    _check(_result(a, b, st), a, b, sort)


def test_no_take_over_for_one_worker_or_forward_layouts():
    claim = np.empty(4, dtype=np.int64)
    flops = np.ones(10, dtype=np.int64)
    bounds = np.array([0, 5, 10], dtype=np.int64)
    assert S._init_claim(claim, True, bounds, np.array([0, 2]), flops) == 0 and claim[0] == -1
    assert S._init_claim(claim, False, bounds, np.array([0, 1, 2]), flops) == 0 and claim[0] == -1
    assert S._init_claim(claim, True, bounds, np.array([0, 1, 2]), flops) == 10 and claim[0] == 5 << 32
