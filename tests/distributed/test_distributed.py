"""flexsparse.distributed against the in-process engine, on clusters started by the tests.

Most tests share one LocalCluster of two single-threaded *thread* workers; the fault tests
and the embedded-cluster test start worker *processes*. Every result is compared with
in-process :func:`flexsparse.einsum` (dense values), with tile budgets small enough to force
many tiles, column panels and contracted-id windows (partial sums).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp

import flexsparse as fs

pytest.importorskip("distributed")
pytest.importorskip("dask.array")

import dask.array as da  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from flexsparse import distributed as fd  # noqa: E402
from flexsparse.distributed.chunks import register_dask  # noqa: E402
from flexsparse.distributed.tiles import assign_lpt, balanced_bounds  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        yield c


def einsum(*args, **kwargs):
    """:func:`flexsparse.distributed.einsum` sending even these small products to the cluster."""
    kwargs.setdefault("local_flops", 0)
    return fd.einsum(*args, **kwargs)


def dense(x):
    if hasattr(x, "load"):
        x = x.load()
    if hasattr(x, "todense"):
        x = x.todense()
    return np.asarray(x)


def reference(spec, *ops):
    return np.asarray(fs.einsum(spec, *ops, format="dense"))


def sprand(shape, density, seed, dtype=np.float64):
    return fs.random(shape, density, seed=seed, dtype=dtype)


# ---------------------------------------------------------------------- results equal the engine's
SPECS = [
    ("ij,jk->ik", [(0, 1), (1, 2)]),
    ("ij,kj->ik", [(0, 1), (2, 1)]),
    ("ijk,jkl->il", [(0, 1, 2), (1, 2, 3)]),
    ("ijk,ikl->ijl", [(0, 1, 2), (0, 2, 3)]),          # batch index i
    ("ij,jk,kl->il", [(0, 1), (1, 2), (2, 3)]),
    ("ijk,mjk->im", [(0, 1, 2), (3, 1, 2)]),
    ("ij,ij->", [(0, 1), (0, 1)]),
    ("ij,jk->ki", [(0, 1), (1, 2)]),
]


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=st.sampled_from(SPECS), dims=st.lists(st.integers(1, 30), min_size=4, max_size=4),
       density=st.sampled_from([0.0, 0.05, 0.3, 1.0]), seed=st.integers(0, 10_000),
       budget=st.sampled_from([None, 3_000, 40_000]), strategy=st.sampled_from(["overbook", "prescient"]))
def test_matches_in_process_einsum(client, case, dims, density, seed, budget, strategy):
    spec, modes = case
    ops = [sprand(tuple(dims[m] for m in mode), density, seed + k) for k, mode in enumerate(modes)]
    got = einsum(spec, *ops, client=client, tile_memory=budget, tiling=strategy, progress=False)
    np.testing.assert_allclose(dense(got), reference(spec, *ops), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.complex128, np.bool_])
def test_dtypes_and_dense_operands(client, dtype):
    a = sprand((40, 30), 0.1, 1, dtype)
    b = sprand((30, 20), 0.1, 2, dtype)
    got = einsum("ij,jk->ik", a, b, client=client, tile_memory=4_000, progress=False)
    ref = fs.einsum("ij,jk->ik", a, b)
    assert dense(got).dtype == np.asarray(dense(ref)).dtype
    np.testing.assert_allclose(dense(got), dense(ref), rtol=1e-5)
    # a dense operand: that step runs in the calling process with the same semantics
    d = np.random.default_rng(0).random((20, 5)).astype(np.float64)
    np.testing.assert_allclose(dense(einsum("ij,jk,kl->il", a, b, d, client=client, progress=False)),
                               reference("ij,jk,kl->il", a, b, d), rtol=1e-5)


def test_power_law_tiles_are_balanced_and_partial_sums_reduced(client):
    a = fs.random((600, 500), nnz=6_000, seed=3, distribution="powerlaw")
    b = fs.random((500, 400), nnz=6_000, seed=4, distribution="powerlaw")
    got, reports = einsum("ij,jk->ik", a, b, client=client, tile_memory=6_000, format="coo",
                             progress=False, return_report=True)
    (rep,) = reports
    assert rep.tiles > rep.groups > 1            # id windows: partial sums added by a tree
    assert rep.tasks > rep.tiles
    assert rep.balance < 1.5
    np.testing.assert_allclose(dense(got), reference("ij,jk->ik", a, b), rtol=1e-12)


def test_scipy_and_pydata_operands(client):
    sparse = pytest.importorskip("sparse")
    a = sp.random_array((50, 40), density=0.1, format="csr", rng=0)
    b = sparse.COO.from_numpy(sp.random_array((40, 30), density=0.1, rng=1).toarray())
    got = einsum("ij,jk->ik", a, b, client=client, tile_memory=5_000, progress=False)
    np.testing.assert_allclose(dense(got), a.toarray() @ b.todense(), rtol=1e-12)


# ---------------------------------------------------------------------- out=
@pytest.mark.parametrize("name", ["res", "res.npz"])
def test_out_streams_tiles_in_the_tiled_format(client, tmp_path, name):
    a = sprand((80, 60), 0.08, 5)
    b = sprand((60, 70), 0.08, 6)
    target = tmp_path / name
    got = einsum("ij,jk->ik", a, b, client=client, tile_memory=5_000, out=target, progress=False)
    np.testing.assert_allclose(dense(got), reference("ij,jk->ik", a, b), rtol=1e-12)
    again = fs.load(target)                      # what a fresh process reads
    np.testing.assert_allclose(again.todense(), reference("ij,jk->ik", a, b), rtol=1e-12)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    if target.is_dir():
        manifest = json.loads((target / "manifest.json").read_text())
        assert manifest["complete"] and manifest["stored"] == sum(t["nnz"] for t in manifest["tiles"])
        assert len(manifest["tiles"]) > 1


@pytest.mark.parametrize("name", ["res", "res.npz"])
@pytest.mark.parametrize("dtype", [np.bool_, np.float16])
def test_out_is_stored_in_the_einsum_result_dtype(client, tmp_path, name, dtype):
    # bool products run as int64 counts and float16 ones in float32; the store holds the result dtype
    a = (dense(sprand((40, 30), 0.1, 7)) != 0).astype(dtype)
    b = (dense(sprand((30, 50), 0.1, 8)) != 0).astype(dtype)
    target = tmp_path / name
    fd.einsum("ij,jk->ik", fs.COO.from_numpy(a), fs.COO.from_numpy(b), client=client, tile_memory=3_000,
              out=target, progress=False)
    got = fs.load(target)
    want = np.einsum("ij,jk->ik", a, b)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.todense(), want)


def test_rerun_tile_replaces_its_file(tmp_path):
    from flexsparse.distributed import _store
    from flexsparse.formats.store import MatrixLayout

    piece = ((0, 2, 0, 3, 0), np.array([0, 1, 2]), np.array([0, 2], np.int32), np.array([1.0, 2.0]))
    _store.write_tile(tmp_path, 7, piece)
    entry = _store.write_tile(tmp_path, 7, piece)          # a retried tile
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tile-000007.npz"]
    _store.commit(tmp_path, tmp_path, [entry], (2, 3), np.float64, MatrixLayout.identity((2, 3)))
    np.testing.assert_array_equal(fs.load(tmp_path).todense(), [[1, 0, 0], [0, 0, 2]])


# ---------------------------------------------------------------------- faults
def _corrupt_shards(tmp_path):
    x = sprand((40, 30), 0.2, 7)
    sh = fd.write_shards(x, tmp_path / "x", n_shards=3)
    bad = tmp_path / "x" / sh.shards[1].source.split("/")[-1]
    bad.write_bytes(b"not a tensor")
    return sh, x


def test_bad_data_names_the_tile_and_leaves_no_output(client, tmp_path):
    sh, x = _corrupt_shards(tmp_path)
    out = tmp_path / "out.npz"
    with pytest.raises(fd.TileError, match=r"tile 1: shard \[.*shard-00001"):
        einsum("ij,jk->ik", fd.Shards(tmp_path / "x"), x.T, client=client, out=out, progress=False)
    assert not out.exists()


def test_ctrl_c_cancels_the_futures(client, monkeypatch):
    import distributed

    real = distributed.as_completed

    class Interrupting(real):
        def __next__(self):
            raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "as_completed", Interrupting)
    a = sprand((200, 150), 0.05, 8)
    with pytest.raises(KeyboardInterrupt):
        einsum("ij,kj->ik", a, a, client=client, tile_memory=3_000, progress=False)
    monkeypatch.setattr(distributed, "as_completed", real)
    deadline = time.time() + 10
    while time.time() < deadline and any(k.startswith("fs-") for k in client.processing()
                                         for k in client.processing()[k]):
        time.sleep(0.1)
    assert not [k for tasks in client.processing().values() for k in tasks if str(k).startswith("fs-")]


@pytest.mark.slow
def test_killed_worker_process_gives_the_same_result(tmp_path):
    a = fs.from_scipy(sp.random_array((1500, 1200), density=0.02, format="csr", rng=0))
    ref = reference("ij,kj->ik", a, a)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=50) as cluster, Client(cluster) as c:
        c.run(lambda: fs.einsum("ij,jk->ik", a[:5], a.T[:, :5], memory_limit="1MB"))  # compile first
        victim = max(c.run(os.getpid).values())
        started = threading.Event()

        def kill_when_running():
            deadline = time.time() + 30
            while time.time() < deadline and not any(c.processing().values()):
                time.sleep(0.01)
            time.sleep(0.2)
            os.kill(victim, signal.SIGKILL)
            started.set()

        threading.Thread(target=kill_when_running, daemon=True).start()
        got, reports = einsum("ij,kj->ik", a, a, client=c, tile_memory=300_000, out=tmp_path / "o",
                                 format="coo", progress=False, return_report=True)
        assert started.wait(30)
        assert victim not in c.run(os.getpid).values()
    np.testing.assert_allclose(dense(got), ref, rtol=1e-12)
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert len({t["name"] for t in manifest["tiles"]}) == len(manifest["tiles"])   # no tile twice
    assert sorted(p.name for p in (tmp_path / "o").glob("tile-*.npz")) == \
        sorted(f"{t['name']}.npz" for t in manifest["tiles"])
    assert reports[0].resubmitted >= 0


@pytest.mark.slow
def test_embedded_local_cluster_of_processes_and_cli(tmp_path):
    a = sprand((60, 50), 0.1, 9)
    b = sprand((50, 40), 0.1, 10)
    got = einsum("ij,jk->ik", a, b, workers=2, worker_memory="1GB", progress=False)
    np.testing.assert_allclose(dense(got), reference("ij,jk->ik", a, b), rtol=1e-12)
    from typer.testing import CliRunner

    from flexsparse.cli import app

    fs.save(tmp_path / "a.npz", a)
    fs.save(tmp_path / "b.npz", b)
    res = CliRunner().invoke(app, ["einsum", "ij,jk->ik", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"),
                                   "-o", str(tmp_path / "c.npz"), "--workers", "2"])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(fs.load(tmp_path / "c.npz").todense(), reference("ij,jk->ik", a, b), rtol=1e-12)


def test_embedded_cluster_settings_and_worker_table():
    """The embedded cluster starts without work stealing or worker profiler (they compete with the
    tiles for the cores), and its workers' limits are read from the cluster object, without a
    scheduler round trip, as the scheduler itself reports them."""
    from distributed import Client

    from flexsparse.distributed.cluster import local_cluster, worker_resources

    with local_cluster(2, "1GB", processes=False) as cl, Client(cl) as c:
        assert "stealing" not in cl.scheduler.extensions
        assert all("profile" not in w.periodic_callbacks for w in cl.workers.values())
        fresh = worker_resources(c, fresh=True)
        assert fresh.n_workers == 2 and fresh.memory == (10**9, 10**9)

        def no_round_trip(*args, **kwargs):
            raise AssertionError("asked the scheduler")

        c.scheduler_info = no_round_trip
        assert worker_resources(c) == fresh
    import dask

    # the settings do not leak into clusters the user starts
    assert dask.config.get("distributed.scheduler.work-stealing") is True
    assert dask.config.get("distributed.worker.profile.enabled") is True


def test_cluster_arguments_are_checked(client):
    a = sprand((4, 4), 0.5, 1)
    with pytest.raises(ValueError, match="either client= or address="):
        einsum("ij,jk->ik", a, a, client=client, address="tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="workers must be a positive int"):
        einsum("ij,jk->ik", a, a, workers=0)
    with pytest.raises(ValueError, match="cannot change the cluster"):
        einsum("ij,jk->ik", a, a, client=client, workers=2)
    with pytest.raises(ValueError, match="unknown tiling strategy"):
        einsum("ij,jk->ik", a, a, client=client, tiling="greedy")
    with pytest.raises(ValueError, match="as_dask"):
        einsum("ij,jk->ik", a, a, client=client, as_dask=True, out="x")


# ---------------------------------------------------------------------- shards
def test_shards_round_trip_and_einsum(client, tmp_path):
    x = sprand((50, 30, 20), 0.05, 11)
    sh = fd.write_shards(x, tmp_path / "x", n_shards=4, axis=1)
    assert len(sh.shards) == 4 and sum(s.nnz for s in sh.shards) == x.nnz
    again = fd.Shards(tmp_path / "x")
    np.testing.assert_array_equal(again.load().todense(), x.todense())
    assert all(again.read(i).shape == x.shape for i in range(4))
    y = sprand((30, 20, 10), 0.1, 12)
    for spec in ("ijk,jkl->il", "ijk,jkl->ijl"):            # sharded along a contracted / kept index
        got = einsum(spec, again, y, client=client, progress=False)
        np.testing.assert_allclose(dense(got), reference(spec, x, y), rtol=1e-12)


def test_incomplete_shard_directory_is_refused(tmp_path):
    fd.write_shards(sprand((10, 10), 0.3, 1), tmp_path / "x", n_shards=2)
    (tmp_path / "x" / "shards.json").unlink()
    with pytest.raises(ValueError, match="not a complete shard directory"):
        fd.Shards(tmp_path / "x")


# ---------------------------------------------------------------------- dask.array interoperability
def test_coo_as_a_dask_chunk_type():
    register_dask()
    x = sprand((60, 40), 0.1, 13)
    X = x.todense()
    dx = da.from_array(x, chunks=(16, 15), asarray=False)
    assert isinstance(dx._meta, fs.COO)
    assert np.isclose(float(np.asarray(dense(dx.sum().compute()))), X.sum())
    np.testing.assert_allclose(dense(dx.sum(axis=0).compute()), X.sum(axis=0))
    doubled = dx.map_blocks(lambda b: b * 2).compute()
    assert isinstance(doubled, fs.COO)
    np.testing.assert_allclose(doubled.todense(), 2 * X)
    np.testing.assert_allclose(dx[3:20, ::3].compute().todense(), X[3:20, ::3])
    y = sprand((40, 30), 0.1, 14)
    dy = da.from_array(y, chunks=(15, 10), asarray=False)
    np.testing.assert_allclose(dense(da.tensordot(dx, dy, axes=1).compute()), X @ y.todense(), rtol=1e-12)
    z, w = sprand((6, 5, 4), 0.3, 15), sprand((5, 4, 7), 0.3, 16)
    dz = da.from_array(z, chunks=(3, 2, 2), asarray=False)
    dw = da.from_array(w, chunks=(2, 2, 3), asarray=False)
    np.testing.assert_allclose(dense(da.tensordot(dz, dw, axes=2).compute()),
                               np.tensordot(z.todense(), w.todense(), 2), rtol=1e-12)
    np.testing.assert_allclose(dense(da.concatenate([dx, dx], axis=1).compute()), np.hstack([X, X]))
    np.testing.assert_allclose(dense(da.stack([dx, dx]).compute()), np.stack([X, X]))


def test_coo_slicing_matches_numpy():
    x = sprand((7, 6, 5), 0.4, 17)
    X = x.todense()
    for key in [(1,), (slice(1, 5), 2), (Ellipsis, slice(None, None, -2)), (None, 3, slice(1, None, 2)),
                (slice(2, 2),), (-1, Ellipsis, 0)]:
        np.testing.assert_array_equal(x[key].todense(), X[key])
    with pytest.raises(IndexError):
        x[7]
    with pytest.raises(TypeError, match="basic indexing"):
        x[np.array([0, 1])]


def test_einsum_takes_dask_arrays_of_sparse_chunks(client):
    sparse = pytest.importorskip("sparse")
    x = sprand((60, 40), 0.1, 18)
    y = sprand((40, 30), 0.1, 19)
    ref = reference("ij,jk->ik", x, y)
    chunks = {
        "flexsparse": da.from_array(x, chunks=(16, 15), asarray=False),
        "pydata": da.from_array(sparse.COO.from_numpy(x.todense()), chunks=(20, 20), asarray=False),
        "scipy": da.from_array(sp.csr_matrix(x.todense()), chunks=(20, 40), asarray=False),
    }
    for name, dx in chunks.items():
        got = einsum("ij,jk->ik", dx, y, client=client, progress=False)
        np.testing.assert_allclose(dense(got), ref, rtol=1e-12, err_msg=name)
    dy = da.from_array(y, chunks=(10, 30), asarray=False)
    np.testing.assert_allclose(dense(einsum("ij,jk->ik", chunks["flexsparse"], dy, client=client,
                                               progress=False)), ref, rtol=1e-12)
    res = einsum("ij,jk->ik", x, y, client=client, as_dask=True, format="coo", progress=False)
    assert isinstance(res, da.Array)
    np.testing.assert_allclose(res.compute().todense(), ref, rtol=1e-12)


# ---------------------------------------------------------------------- planning from statistics
def test_plan_delicious_scale_from_statistics_only():
    import tracemalloc

    from flexsparse.distributed.stats_plan import powerlaw_stats

    s = powerlaw_stats("ijkl", (532_924, 17_262_471, 2_480_308, 1_443), 140_126_181)
    tracemalloc.start()
    try:
        p = fd.plan("ijkl,mnkl->ijmn", s, s, workers=64, worker_memory="16GB", show=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200e6                       # 140M entries would take > 2 GB
    (step,) = p.steps
    assert p.n_tiles > 64 and p.n_tasks >= p.n_tiles
    assert step.tiles.n_k > 1                 # contracted ids split: partial sums
    assert p.bytes_to_workers().shape == (64,) and p.bytes_to_workers().min() > 0
    assert 1.0 <= p.balance < 2.0
    assert "tiles" in str(p) and "bytes to each worker" in str(p)


def test_plan_from_arrays_matches_the_run(client):
    a = fs.random((400, 300), nnz=4_000, seed=20, distribution="powerlaw")
    p = fd.plan("ij,kj->ik", a, a, workers=2, worker_memory="1GB", show=False)
    assert len(p.steps) == 1 and p.steps[0].matrix_shape[1] <= 300
    with pytest.raises(ValueError, match="workers must be a positive int"):
        fd.plan("ij,jk->ik", a, a.T, workers=0)


def test_balanced_bounds_and_lpt():
    work = np.array([1.0] * 50 + [100.0] + [1.0] * 50)
    b = balanced_bounds(work, 4)
    assert b[0] == 0 and b[-1] == 101 and np.all(np.diff(b) > 0)
    assert any(b[i] == 50 and b[i + 1] == 51 for i in range(len(b) - 1))   # the hub alone
    loads = np.bincount(assign_lpt(np.array([7, 5, 4, 3, 3, 2.0]), 2), weights=[7, 5, 4, 3, 3, 2.0])
    assert loads.max() - loads.min() <= 2


def test_operand_blocks_match_dense_slices():
    from flexsparse.distributed._tasks import block as _block
    from flexsparse.formats.csr import CSR

    rng = np.random.default_rng(0)
    for t in range(200):   # includes empty rows at the end of a block (a past reduceat bug)
        m, k = (int(v) for v in rng.integers(1, 12, 2))
        x = sp.random_array((m, k), density=float(rng.choice([0.0, 0.2, 0.6])), format="csr", rng=t)
        r0 = int(rng.integers(0, m))
        r1 = int(rng.integers(r0, m + 1))
        k0 = int(rng.integers(0, k))
        k1 = int(rng.integers(k0, k + 1))
        blk = _block(CSR.from_scipy(x), r0, r1, k0, k1)
        blk.validate()
        np.testing.assert_array_equal(blk.todense(), x.toarray()[r0:r1, k0:k1])


def test_hub_block_is_cut_into_column_sub_panels(client):
    from flexsparse.distributed.runner import ProductRunner
    from flexsparse.distributed.tiles import build_plan

    # planning alone: one row carries most of the work
    flops = np.ones((100, 1))
    flops[40] = 400.0
    p = build_plan(shape=(100, 50, 64), strategy="overbook", limit=1 << 30, strategy_tiles=1, row_size=10,
                   k_bounds=np.array([0, 50]), col_bounds=np.array([0, 64]), flops_rows=flops,
                   nnz_a_rows=np.ones(100), nnz_b_panels=np.array([[500.0]]), ratio=1.0, elem=16,
                   value_bytes=8, n_workers=2, threads=2)
    hub = [t for t in p.tiles if t.r0 <= 40 < t.r1]
    assert len(hub) > 1 and hub[0].c0 == 0 and hub[-1].c1 == 64
    assert all(u.c1 == v.c0 for u, v in zip(hub, hub[1:]))          # sub-panels cover the columns
    assert all(t.c0 == 0 and t.c1 == 64 for t in p.tiles if not t.r0 <= 40 < t.r1)
    # and run: a hub row over a small tile budget, against the in-process product
    rng = np.random.default_rng(3)
    a = sp.random_array((300, 200), density=0.01, format="csr", rng=4).tolil()
    a[77, :] = rng.random(200)
    a = a.tocsr()
    b = sp.random_array((200, 150), density=0.05, format="csr", rng=5)
    runner = ProductRunner(client, tile_memory=20_000, local_flops=0)
    from flexsparse.formats.csr import CSR

    c, report = runner(CSR.from_scipy(a), CSR.from_scipy(b))
    (plan,) = runner.plans
    assert any(t.c0 > 0 for t in plan.tiles if t.r0 <= 77 < t.r1)
    np.testing.assert_allclose(c.todense(), (a @ b).toarray(), rtol=1e-12)
    # A is B: the self-product path with sub-panels
    x = CSR.from_scipy(sp.random_array((150, 150), density=0.05, format="csr", rng=6).tolil().tocsr())
    runner = ProductRunner(client, tile_memory=20_000, local_flops=0)
    c, _ = runner(x, x)
    assert runner.plans[0].n_groups > 1       # rows cut from the one broadcast copy at their own index
    np.testing.assert_allclose(c.todense(), (x.to_scipy() @ x.to_scipy()).toarray(), rtol=1e-12)
    xs = fs.from_scipy(x.to_scipy())
    res = einsum("ij,jk->ik", xs, xs, client=client, tile_memory=20_000, progress=False)
    np.testing.assert_allclose(dense(res), reference("ij,jk->ik", xs, xs), rtol=1e-12)


def test_self_contraction_estimate_counts_every_entry_meeting_itself():
    from flexsparse.distributed.stats_plan import powerlaw_stats

    s = powerlaw_stats("ijkl", (532_924, 17_262_471, 2_480_308, 1_443), 140_126_181)
    p = fd.plan("ijkl,mjkl->im", s, s, workers=64, worker_memory="16GB", show=False)
    (step,) = p.steps
    assert step.est_flops >= 140_126_181          # each entry at least meets itself
    other = powerlaw_stats("mjkl", (532_924, 17_262_471, 2_480_308, 1_443), 140_126_181)
    q = fd.plan("ijkl,mjkl->im", s, other, workers=64, worker_memory="16GB", show=False)
    assert q.steps[0].est_flops < step.est_flops      # independent operands keep the independence estimate


@pytest.mark.parametrize("spec", ["ij,jk->ik", "ij,kj->ik", "ijk,mjk->im", "ijk,ikl->ijl", "ij,kl->ijkl", "ij,ij->"])
@pytest.mark.parametrize("density", [0.0, 0.05, 1.0])
def test_pair_flops_counts_every_multiply_add(spec, density):
    from flexsparse.distributed.stats_plan import pair_flops, sparse_flops

    ins = spec.split("->")[0].split(",")
    size = {c: 3 + i for i, c in enumerate(sorted(set("".join(ins))))}
    a = sprand(tuple(size[c] for c in ins[0]), density, 1)
    b = sprand(tuple(size[c] for c in ins[1]), density, 2)
    want = np.einsum(f"{ins[0]},{ins[1]}->", dense(a) != 0, dense(b) != 0, dtype=np.int64)
    assert pair_flops(spec, a, b) == want
    for stop in (1, int(want) // 3 + 1, int(want) + 1):   # an early end still decides "< stop" right
        part = pair_flops(spec, a, b, stop=stop)
        assert part <= want and (part >= stop) == (want >= stop)
    if ins[0] == ins[1].replace(ins[1][0], ins[0][0]) or spec == "ij,ij->":
        assert pair_flops(spec, a, a) == np.einsum(f"{ins[0]},{ins[1]}->", dense(a) != 0, dense(a) != 0,
                                                   dtype=np.int64)
    assert pair_flops(spec, dense(a), b) is None                     # not COO: no count
    assert sparse_flops(spec, a, b) >= 0
    if len(ins[1]) == 2:   # b backed by a CSR (with a duplicate entry): counted from its row lengths
        from flexsparse.formats.csr import CSR

        sb = fs.to_scipy(b, "csr")
        indptr = np.asarray(sb.indptr, dtype=np.int64)
        indices, data = np.asarray(sb.indices), np.asarray(sb.data)
        if data.size:
            indptr = indptr.copy()
            indptr[1:] += 1                                      # row 0 gets its first entry twice
            indices, data = np.insert(indices, 0, indices[0]), np.insert(data, 0, data[0])
        backed = fs.COO.from_csr(CSR(indptr, indices, data, b.shape, sorted_indices=False))
        ref = fs.COO(backed.coords.copy(), backed.data.copy(), b.shape)   # the same entries, no CSR
        assert pair_flops(spec, a, backed) == pair_flops(spec, a, ref)
        for stop in (1, int(want) + 1):
            assert (pair_flops(spec, a, backed, stop=stop) >= stop) == (pair_flops(spec, a, ref) >= stop)


def test_small_call_runs_in_process_and_large_one_goes_out(client):
    x = fs.random((30, 20, 10), 0.05, seed=3, distribution="powerlaw")
    res, reports = fd.einsum("ijk,mjk->im", x, x, client=client, progress=False, return_report=True)
    assert not any(hasattr(r, "gather") for r in reports)            # no product was sent out
    np.testing.assert_allclose(dense(res), reference("ijk,mjk->im", x, x), rtol=1e-12)
    res, reports = fd.einsum("ijk,mjk->im", x, x, client=client, progress=False, return_report=True,
                             local_flops=0)
    assert [r.gather for r in reports] in (["network"], ["shared memory"])
    np.testing.assert_allclose(dense(res), reference("ijk,mjk->im", x, x), rtol=1e-12)
