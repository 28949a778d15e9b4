"""The shared-memory result buffers of a distributed product: layout, placing, and reuse of the
files of freed results (flexsparse.distributed._gather)."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from flexsparse import _limits
from flexsparse.distributed import _gather

pytestmark = pytest.mark.skipif(not os.path.isdir(_gather.SHM_DIR), reason="no shared-memory directory")


@pytest.fixture(autouse=True)
def empty_pool():
    _gather.drain()
    yield
    _gather.drain()


def _result(nnz: int, n_rows: int = 4) -> tuple[_gather.Target, dict[str, np.ndarray]]:
    """A CSR target of ``nnz`` entries mapped with ``keep=True``, as the runner maps a result."""
    probe = _gather.Target(None, "csr", n_rows, nnz, 2, "<i4", "<f8")
    path = _gather.create(probe.nbytes)
    assert path is not None
    target = _gather.Target(path, "csr", n_rows, nnz, 2, "<i4", "<f8")
    return target, _gather.arrays(_gather.map_target(target, keep=True), target)


def test_placed_piece_lands_in_the_final_layout():
    target, out = _result(5, n_rows=3)
    piece = ((1, 3, 0, 10, 0), np.array([0, 2, 5]), np.array([4, 1, 0, 7, 9], dtype=np.int32),
             np.arange(5.0))
    out["indptr"][:2] = 0
    fd = os.open(target.path, os.O_RDWR)
    try:
        _gather.place(_gather.FileSink(fd, target), target, piece, 0)
    finally:
        os.close(fd)
    assert out["indptr"].tolist() == [0, 0, 2, 5]
    assert out["indices"].tolist() == [4, 1, 0, 7, 9] and out["data"].tolist() == [0, 1, 2, 3, 4]


def test_freed_result_file_is_kept_and_reused_with_its_contents_replaced():
    target, out = _result(1000)
    out["data"][:] = 7.0
    assert _gather.pooled() == {}                 # kept only once the result is freed
    del out
    gc.collect()
    assert _gather.pooled() == {target.path: target.nbytes}
    # a smaller result reuses the file, resized to its own size
    probe = _gather.Target(None, "csr", 4, 10, 2, "<i4", "<f8")
    path = _gather.create(probe.nbytes)
    assert path == target.path and _gather.pooled() == {}
    assert os.path.getsize(path) == probe.nbytes
    _gather.release(path)
    assert not os.path.exists(path)


def test_of_kept_files_of_one_size_the_last_kept_is_reused_first():
    first, out1 = _result(1000)
    second, out2 = _result(1000)
    del out1
    gc.collect()
    del out2
    gc.collect()
    assert list(_gather.pooled()) == [first.path, second.path]
    path = _gather.create(first.nbytes)      # the workers most likely still map the last one
    assert path == second.path and list(_gather.pooled()) == [first.path]
    _gather.release(path)
    _gather.drain()


def test_kept_files_are_bounded_oldest_dropped_first(monkeypatch):
    first, out1 = _result(1000)
    second, out2 = _result(1000)
    monkeypatch.setattr(_limits, "GATHER_POOL_BYTES", first.nbytes + second.nbytes // 2)
    del out1
    gc.collect()
    del out2
    gc.collect()
    assert _gather.pooled() == {second.path: second.nbytes}
    assert not os.path.exists(first.path)


def test_released_file_is_not_kept_and_drain_removes_the_kept_ones():
    target, out = _result(100)
    _gather.release(target.path)                  # a failed product removes its file at once
    del out
    gc.collect()
    assert _gather.pooled() == {}
    kept, out = _result(100)
    del out
    gc.collect()
    assert kept.path in _gather.pooled()
    _gather.drain()
    assert _gather.pooled() == {} and not os.path.exists(kept.path)


def test_distributed_results_in_a_reused_file_equal_the_engine():
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    import flexsparse as fs
    from flexsparse import distributed as fd

    a = fs.rmat(12, 8, seed=3)            # isolated vertices: rows no tile covers
    b = fs.rmat(12, 8, seed=5)            # another structure: nothing of the first result may remain
    want = [fs.einsum("ij,jk->ik", x, x).sum_duplicates() for x in (a, b)]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        first, reports = fd.einsum("ij,jk->ik", a, a, client=c, progress=False, return_report=True)
        assert reports[0].gather == "shared memory"
        assert first.sum_duplicates().coords.tolist() == want[0].coords.tolist()
        del first
        gc.collect()
        (path,) = _gather.pooled()
        second, reports = fd.einsum("ij,jk->ik", b, b, client=c, progress=False, return_report=True)
        assert reports[0].gather == "shared memory"
        assert path not in _gather.pooled()           # the freed result's file was reused
        got = second.sum_duplicates()
        assert got.coords.tolist() == want[1].coords.tolist()
        np.testing.assert_allclose(got.data, want[1].data)
