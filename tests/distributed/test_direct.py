"""Tiles computed straight into the shared-memory result (flexsparse.distributed._direct): the
kernel into given buffers (rows written up or down), two blocks meeting without a gap, kept
mappings, and distributed results through that path equal to the in-process engine's."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flexsparse as fs
from flexsparse import _limits
from flexsparse.distributed import _cache, _direct, _gather
from flexsparse.distributed._tasks import block
from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu.spgemm import count_flops, spgemm

pytestmark = pytest.mark.skipif(not os.path.isdir(_gather.SHM_DIR), reason="no shared-memory directory")


def _as_csr(x) -> CSR:
    from flexsparse.tiling.engine import as_operand

    return as_operand(x, "a").csr


def _rows(indptr, indices, data, start=0):
    """Every row as a {column: value} dict (order-free)."""
    return [dict(zip(indices[indptr[i] - start:indptr[i + 1] - start].tolist(),
                     data[indptr[i] - start:indptr[i + 1] - start].tolist())) for i in range(len(indptr) - 1)]


def _two_blocks(a: CSR, b: CSR, cut: int, sort: bool):
    """``a @ b`` as two blocks meeting at the first one's multiply-adds: (indptr, indices, data, start, end)."""
    m = a.shape[0]
    top, bot = block(a, 0, cut, 0, a.shape[1]), block(a, cut, m, 0, a.shape[1])
    f0, f1 = count_flops(top, b)[1] if cut else 0, count_flops(bot, b)[1] if cut < m else 0
    dtype = np.result_type(a.dtype, b.dtype)
    idx = np.dtype(np.int32)
    indices = np.full(f0 + f1 + 2, -1, dtype=idx)
    data = np.zeros(f0 + f1 + 2, dtype=dtype)
    indptr = np.full(m + 1, -1, dtype=np.int64)
    s0, e0 = _direct.spgemm_into(top, b, indptr[:cut + 1], indices, data, f0, True, f0, sort)
    s1, e1 = _direct.spgemm_into(bot, b, indptr[cut:], indices, data, f0, False, f1, sort)
    assert e0 == f0 == s1        # the blocks meet
    return indptr, indices, data, s0, e1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 40), k=st.integers(1, 30), n=st.integers(1, 50),
       density=st.sampled_from([0.0, 0.05, 0.3, 1.0]), cut=st.floats(0, 1), sort=st.booleans(),
       dtype=st.sampled_from([np.float64, np.float32, np.int64]), seed=st.integers(0, 1000))
def test_two_blocks_meet_and_equal_the_engine(m, k, n, density, cut, sort, dtype, seed):
    a = _as_csr(fs.random((m, k), density, seed=seed, dtype=dtype))
    b = _as_csr(fs.random((k, n), density, seed=seed + 1, dtype=dtype))
    cut = int(round(cut * m))
    indptr, indices, data, start, end = _two_blocks(a, b, cut, sort)
    want = spgemm(a, b, threads=1, sort=True)
    assert indptr[0] == start and indptr[-1] == end and np.all(np.diff(indptr) >= 0)
    got = CSR._trusted(indptr - start, indices[start:end], data[start:end], (m, n), sort)
    assert got.nnz == want.nnz
    assert _rows(got.indptr, got.indices, got.data) == _rows(want.indptr, want.indices, want.data)
    if sort:
        assert all(np.all(np.diff(got.indices[got.indptr[i]:got.indptr[i + 1]]) > 0) for i in range(m))


def test_a_block_larger_than_its_room_or_buffers_of_another_dtype_are_refused():
    a = _as_csr(fs.random((20, 20), 0.3, seed=1))
    total = count_flops(a, a)[1]
    ip = np.empty(21, dtype=np.int64)
    with pytest.raises(ValueError, match="room"):
        _direct.spgemm_into(a, a, ip, np.empty(total, np.int32), np.empty(total), 0, False, total - 1, False)
    with pytest.raises(TypeError, match="do not hold"):
        _direct.spgemm_into(a, a, ip, np.empty(total, np.int64), np.empty(total), 0, False, total, False)
    with pytest.raises(ValueError, match="slots"):
        _direct.spgemm_into(a, a, ip[:5], np.empty(total, np.int32), np.empty(total), 0, False, total, False)


def _file(nnz: int, n_rows: int = 8) -> _gather.Target:
    probe = _gather.Target(None, "csr", n_rows, nnz, 2, "<i4", "<f8")
    path = _gather.create(probe.nbytes)
    assert path is not None
    return _gather.Target(path, "csr", n_rows, nnz, 2, "<i4", "<f8")


def test_a_mapping_is_kept_for_its_file_and_dropped_when_the_file_goes():
    _direct.release_mappings()
    t = _file(10_000)
    try:
        first = _direct.mapping(t)
        assert _direct.mapping(t) is first                  # kept: its pages stay mapped
        _gather.release(t.path)                             # the file goes (a freed result)
        u = _file(10_000)
        try:
            assert _direct.mapping(u) is not first
            assert first.closed                             # the removed file's mapping was dropped
            v = _file(20_000)
            w = _file(30_000)
            try:
                for x in (v, w):
                    _direct.mapping(x)
                assert len(_direct._maps) == _limits.DIRECT_KEPT_MAPPINGS
                assert u.path not in _direct._maps          # the oldest went first
            finally:
                _gather.release(v.path)
                _gather.release(w.path)
        finally:
            _gather.release(u.path)
    finally:
        _direct.release_mappings()
    assert not _direct._maps


def test_a_mapping_of_a_resized_file_is_made_again():
    _direct.release_mappings()
    t = _file(10_000)
    try:
        first = _direct.mapping(t)
        grown = _gather.Target(t.path, "csr", t.n_rows, 20_000, 2, "<i4", "<f8")
        with pytest.raises(ValueError, match="not this product"):
            _direct.mapping(grown)                          # the file is still the old size
        os.truncate(t.path, grown.nbytes)                   # reused for a larger result
        again = _direct.mapping(grown)
        assert again is not first and first.closed and len(again) == grown.nbytes
    finally:
        _direct.release_mappings()
        _gather.release(t.path)


# ---------------------------------------------------------------------- through the cluster
pytest.importorskip("distributed")
from distributed import Client, LocalCluster  # noqa: E402

from flexsparse import distributed as fd  # noqa: E402


def _equal(got, want) -> None:
    got, want = got.sum_duplicates(), want.sum_duplicates()
    assert got.shape == want.shape
    assert got.coords.tolist() == want.coords.tolist()
    np.testing.assert_allclose(got.data, want.data, rtol=1e-12)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_results_through_direct_tiles_equal_the_engine(monkeypatch, threads):
    """One thread: one tile, written up; two: two tiles meeting; three: more tiles, gathered in
    two phases. R-MAT has isolated vertices (rows no tile covers)."""
    monkeypatch.setattr(_limits, "GATHER_SHM_MIN_BYTES", 0)
    monkeypatch.setattr(_limits, "MIN_TILE_FLOPS", 1)          # a tile per thread even for these
    a = fs.rmat(11, 8, seed=7)
    b = fs.rmat(11, 8, seed=8)
    with LocalCluster(n_workers=1, threads_per_worker=threads, processes=False, dashboard_address=":0") as cl, \
            Client(cl) as c:
        for x, y in ((a, a), (a, b)):
            got, reports = fd.einsum("ij,jk->ik", x, y, client=c, progress=False, return_report=True,
                                     local_flops=0)
            _equal(got, fs.einsum("ij,jk->ik", x, y))
            (rep,) = reports
            assert rep.gather == "shared memory"
            if threads <= _limits.DIRECT_GATHER_MAX_GROUPS:
                assert rep.groups == threads and rep.tasks == threads    # one task per block, no copy
            else:
                assert rep.tasks > rep.groups                            # counted, then placed
            del got
            gc.collect()


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(dims=st.lists(st.integers(1, 40), min_size=3, max_size=3), density=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
       dtype=st.sampled_from([np.float64, np.float32, np.int32, np.bool_]), seed=st.integers(0, 100))
def test_small_products_through_direct_tiles_equal_the_engine(monkeypatch, two_threads, dims, density, dtype,
                                                             seed):
    monkeypatch.setattr(_limits, "GATHER_SHM_MIN_BYTES", 0)    # even these go through shared memory,
    monkeypatch.setattr(_limits, "MIN_TILE_FLOPS", 1)          # in two blocks where they have two rows
    m, k, n = dims
    x = fs.random((m, k), density, seed=seed, dtype=dtype)
    y = fs.random((k, n), density, seed=seed + 1, dtype=dtype)
    got = fd.einsum("ij,jk->ik", x, y, client=two_threads, progress=False, local_flops=0)
    want = fs.einsum("ij,jk->ik", x, y)
    assert type(got) is type(want)
    dense = [np.asarray(r.todense()) if hasattr(r, "todense") else np.asarray(r) for r in (got, want)]
    # float32 sums may be added in another order than the engine's dense path adds them
    np.testing.assert_allclose(*dense, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.fixture(scope="module")
def two_threads():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cl, \
            Client(cl) as c:
        yield c


def test_small_panels_stay_for_the_next_product_with_the_same_contents(monkeypatch, two_threads):
    scattered = []
    real = two_threads.scatter

    def counting(data, *args, **kwargs):
        scattered.append(type(data).__name__)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(two_threads, "scatter", counting)
    a, b = fs.rmat(9, 8, seed=1), fs.rmat(9, 8, seed=2)
    want = [fs.einsum("ij,jk->ik", x, x) for x in (a, b)]
    _equal(fd.einsum("ij,jk->ik", a, a, client=two_threads, progress=False, local_flops=0), want[0])
    first = len(scattered)
    assert first >= 1 and len(_cache.kept_panels(two_threads)) == 1
    _equal(fd.einsum("ij,jk->ik", a, a, client=two_threads, progress=False, local_flops=0), want[0])
    assert len(scattered) == first                      # the kept panel was reused
    _equal(fd.einsum("ij,jk->ik", b, b, client=two_threads, progress=False, local_flops=0), want[1])
    assert len(scattered) == first + 1                  # other contents: sent again
    (kept,) = _cache.kept_panels(two_threads).values()  # and only the last product's are kept
    two_threads.cancel([kept])                           # a panel gone from the cluster is sent again
    _equal(fd.einsum("ij,jk->ik", b, b, client=two_threads, progress=False, local_flops=0), want[1])
    assert len(scattered) == first + 2
    monkeypatch.setattr(_limits, "DISTRIBUTED_KEEP_PANEL_BYTES", 0)
    _equal(fd.einsum("ij,jk->ik", b, b, client=two_threads, progress=False, local_flops=0), want[1])
    assert len(scattered) == first + 3 and not _cache.kept_panels(two_threads)


def test_a_product_run_again_reuses_its_plan_and_other_contents_are_planned_afresh(monkeypatch, two_threads):
    from flexsparse.distributed import runner

    planned = []
    real = runner.ProductRunner.plan

    def counting(self, *args, **kwargs):
        planned.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(runner.ProductRunner, "plan", counting)
    monkeypatch.setattr(_limits, "DIRECT_BACK_MIN_SECONDS", 1e9)    # the first block's weight stays put
    a = fs.rmat(9, 8, seed=3)
    b = fs.COO(a.coords, a.data * 2.0, a.shape)                      # same structure, other values
    c = fs.COO(a.coords[::-1].copy(), a.data, a.shape)               # the transpose: other structure
    for x in (a, a, b, c, a):
        _equal(fd.einsum("ij,jk->ik", x, x, client=two_threads, progress=False, local_flops=0),
               fs.einsum("ij,jk->ik", x, x))
    # planned for a, b (other values: the key hashes B's contents) and c; both later runs of a
    # reused a's plan
    assert len(planned) == 3
    monkeypatch.setattr(_limits, "DISTRIBUTED_KEEP_PANEL_BYTES", 0)    # too large to hash: planned every time
    _equal(fd.einsum("ij,jk->ik", a, a, client=two_threads, progress=False, local_flops=0),
           fs.einsum("ij,jk->ik", a, a))
    assert len(planned) == 4


def test_the_two_direct_blocks_run_on_their_own_workers_and_their_seconds_reach_the_caller(monkeypatch,
                                                                                          two_threads):
    from distributed import get_task_stream

    from flexsparse.distributed import runner

    monkeypatch.setattr(_limits, "GATHER_SHM_MIN_BYTES", 0)
    monkeypatch.setattr(_limits, "MIN_TILE_FLOPS", 1)           # two blocks even for this product
    # the tasks' ends reach dask's task stream (which names each block's worker) only when the
    # caller waits for them the dask way, not by the blocks' marks in the file
    monkeypatch.setattr(runner._Run, "_await_marks", lambda self, finals, marked: False)
    monkeypatch.setattr(_limits, "DIRECT_BACK_MIN_SECONDS", 0.0)
    a = fs.rmat(10, 8, seed=5)
    want = fs.einsum("ij,jk->ik", a, a)
    key = _direct._product_key(_as_csr(a), _as_csr(a))
    seen, places = [], []
    for _ in range(3):
        with get_task_stream(two_threads) as ts:
            got, reports = fd.einsum("ij,jk->ik", a, a, client=two_threads, progress=False, local_flops=0,
                                     return_report=True)
        _equal(got, want)
        assert reports[0].groups == 2 and reports[0].tasks == 2
        direct = {d["key"].split("-")[-2]: d["worker"] for d in ts.data if d["key"].startswith("fs-direct-")}
        assert len(direct) == 2 and len(set(direct.values())) == 2       # one block per worker
        places.append(direct)
        seen.append(list(getattr(two_threads, "_flexsparse_back_factor", {}).get(key, [])))
        del got
        gc.collect()
    # blocks through a kept mapping note their CPU seconds in the file, and the factor they
    # show joins the measured ones (a block that mapped the file afresh is not measured)
    assert len(seen[-1]) > len(seen[0])
    lo, hi = _limits.DIRECT_BACK_FACTOR_RANGE
    assert all(lo <= f <= hi for f in seen[-1])
    # the next cut's factor: the prior until enough are measured, then their median (or the
    # last cut's while that is within a step of it)
    used = _direct.back_factor(two_threads, _as_csr(a), _as_csr(a))
    if len(seen[-1]) < _limits.DIRECT_BACK_FACTOR_MIN_SEEN:
        assert used == _limits.DIRECT_BACK_WORK_FACTOR
    else:
        assert abs(used - float(np.median(seen[-1]))) <= _limits.DIRECT_BACK_FACTOR_STEP
    assert places[0] == places[1] == places[2]     # each block on the same worker every time


def test_the_meeting_slot_is_kept_and_moves_only_as_far_as_a_block_needs():
    from types import SimpleNamespace

    client = SimpleNamespace()
    a = _as_csr(fs.rmat(6, 4, seed=1))
    cap = _direct.capacity(1000)
    spare = cap - 1000 - 2 * _direct.MARGIN
    assert spare == int(1000 * _limits.DIRECT_MEET_SLACK) > 0
    rooms = lambda f0: [f0 + _direct.MARGIN, 1000 - f0 + _direct.MARGIN]   # noqa: E731
    meet = _direct.meeting_slot(client, a, a, rooms(400), cap)
    assert meet == rooms(400)[0] + spare // 2
    assert _direct.meeting_slot(client, a, a, rooms(420), cap) == meet           # both still fit: kept
    assert _direct.meeting_slot(client, a, a, rooms(400 + spare), cap) == rooms(400 + spare)[0]  # first grew
    assert _direct.meeting_slot(client, a, a, rooms(300), cap) == rooms(300)[0] + spare   # second grew
    for f0 in (0, 1000, 1, 731):                                                 # every split fits
        m = _direct.meeting_slot(client, a, a, rooms(f0), cap)
        assert rooms(f0)[0] <= m <= cap - rooms(f0)[1]
    b = _as_csr(fs.rmat(6, 4, seed=2))
    assert _direct.meeting_slot(client, a, b, [10, 10], 30) == 15                 # another product
    with pytest.raises(ValueError, match="do not fit"):
        _direct.meeting_slot(client, a, b, [20, 20], 30)


def test_back_factor_is_the_median_of_the_kept_measurements(monkeypatch):
    from types import SimpleNamespace

    client = SimpleNamespace()
    a = _as_csr(fs.rmat(6, 4, seed=1))
    assert _direct.back_factor(client, a, a) == _limits.DIRECT_BACK_WORK_FACTOR
    tiles = [SimpleNamespace(flops=60.0, nnz_a=40.0), SimpleNamespace(flops=100.0, nnz_a=0.0)]
    plan = SimpleNamespace(group_tiles=lambda g: (tiles[g],))
    # per unit of work 1.0, 1.5, 1.2, 25 (clamped), 1.1, 1.3
    for i, secs0 in enumerate((0.2, 0.3, 0.24, 5.0, 0.22, 0.26)):
        _direct.record_back_factor(client, a, a, plan, [0, 1], {0: (0, 0, secs0), 1: (0, 0, 0.2)})
        if i + 1 < _limits.DIRECT_BACK_FACTOR_MIN_SEEN:     # too few measurements to move the cut
            assert _direct.back_factor(client, a, a) == _limits.DIRECT_BACK_WORK_FACTOR
    kept = client._flexsparse_back_factor[_direct._product_key(a, a)]
    assert len(kept) == _limits.DIRECT_BACK_FACTOR_KEPT and max(kept) == _limits.DIRECT_BACK_FACTOR_RANGE[1]
    assert _direct.back_factor(client, a, a) == float(np.median(kept))
    _direct.record_back_factor(client, a, a, plan, [0, 1], {0: (0, 0, -1.0), 1: (0, 0, 0.2)})   # not measured
    assert client._flexsparse_back_factor[_direct._product_key(a, a)] == kept
    used = _direct.back_factor(client, a, a)
    _direct.record_back_factor(client, a, a, plan, [0, 1], {0: (0, 0, 0.25), 1: (0, 0, 0.2)})    # 1.25
    moved = float(np.median(client._flexsparse_back_factor[_direct._product_key(a, a)]))
    assert moved != used and abs(moved - used) <= _limits.DIRECT_BACK_FACTOR_STEP
    assert _direct.back_factor(client, a, a) == used          # a small change keeps the cut in place
    for _ in range(2):
        _direct.record_back_factor(client, a, a, plan, [0, 1], {0: (0, 0, 0.2), 1: (0, 0, 0.2)})  # 1.0
    moved = float(np.median(client._flexsparse_back_factor[_direct._product_key(a, a)]))
    assert abs(moved - used) > _limits.DIRECT_BACK_FACTOR_STEP
    assert _direct.back_factor(client, a, a) == moved         # a larger one moves it


class _Future:
    """What :meth:`runner._Run._await_marks` reads of a dask future: its status, and release."""

    def __init__(self, status="pending"):
        self.status, self.released = status, False

    def release(self):
        self.released = True


def test_direct_blocks_are_awaited_by_their_marks_not_the_scheduler(monkeypatch):
    import platform
    import threading
    from types import SimpleNamespace

    from flexsparse.distributed import runner

    a = _as_csr(fs.rmat(6, 4, seed=1))
    run = SimpleNamespace(client=SimpleNamespace(), A=a, B=a, futures={0: ["a"], 1: ["b"]}, progress=True)
    f0, f1 = _Future(), _Future()
    marks = {0: True, 1: False}
    later = threading.Timer(0.02, marks.__setitem__, (1, True))
    later.start()
    # both tasks still pending for dask: the marks alone end the wait (a bar over them shown),
    # and the futures go
    assert runner._Run._await_marks(run, {f0: 0, f1: 1}, marks.__getitem__)
    later.join()
    assert f0.released and f1.released and run.futures == {}
    # a task that ended without its mark (an error, a lost worker, a file it could not open):
    # the caller collects it the dask way, nothing released
    run.progress = False
    for status in ("finished", "error", "lost"):
        run.futures = {0: ["a"]}
        f = _Future(status)
        assert not runner._Run._await_marks(run, {f: 0}, lambda g: False)
        assert not f.released and run.futures == {0: ["a"]}
    # where stores may be seen out of order, a mark proves nothing: dask's report decides
    monkeypatch.setattr(_direct, "marks_follow_rows", lambda: False)
    f = _Future()
    assert not _direct.await_marks({f: 0}, lambda g: True, None, lambda: None)
    monkeypatch.undo()
    assert _direct.marks_follow_rows() == (platform.machine().lower() in {"x86_64", "amd64", "i386", "i686", "x86"})
    # the expected wait is the longest block's CPU seconds the product showed last
    assert _direct.expected_wait(run.client, a, a) is None
    _direct.record_wait(run.client, a, a, 0.01)
    assert _direct.expected_wait(run.client, a, a) == 0.01


def test_a_worker_that_cannot_open_the_file_sends_the_product_the_two_phase_way(monkeypatch, two_threads):
    monkeypatch.setattr(_limits, "GATHER_SHM_MIN_BYTES", 0)

    def elsewhere(target):
        raise FileNotFoundError(target.path)          # as on a worker of another host

    monkeypatch.setattr(_direct, "mapping", elsewhere)
    a = fs.rmat(9, 8, seed=4)
    got, reports = fd.einsum("ij,jk->ik", a, a, client=two_threads, progress=False, local_flops=0,
                             return_report=True)
    _equal(got, fs.einsum("ij,jk->ik", a, a))
    assert reports[0].tasks > reports[0].groups       # counted, then placed


def test_completions_are_awaited_on_the_products_own_client_loop(monkeypatch, two_threads):
    """as_completed waits on the loop of the process's default client (the last one made) unless
    told otherwise; a product on another client's cluster then heard of its tasks' ends late."""
    import distributed

    from flexsparse.distributed import runner

    loops = []
    real = distributed.as_completed

    def recording(futures, *args, **kwargs):
        loops.append(kwargs.get("loop"))
        return real(futures, *args, **kwargs)

    monkeypatch.setattr(distributed, "as_completed", recording)
    monkeypatch.setattr(_limits, "GATHER_SHM_MIN_BYTES", 0)
    # what the caller does when a block ends without its mark in the file (or with a bar)
    monkeypatch.setattr(runner._Run, "_await_marks", lambda self, finals, marked: False)
    a = fs.rmat(9, 8, seed=6)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cl, \
            Client(cl) as newer:                       # the default client is now this one
        assert distributed.default_client() is newer
        _equal(fd.einsum("ij,jk->ik", a, a, client=two_threads, progress=False, local_flops=0),
               fs.einsum("ij,jk->ik", a, a))
    assert loops and all(loop is two_threads.loop for loop in loops)
