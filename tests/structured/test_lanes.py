"""Lane-select kernels (N:M / HSS, AVX-512) against dense NumPy: plans, packing, ragged shapes."""

from __future__ import annotations

import numpy as np
import pytest

from flexsparse import _limits
from flexsparse.kernels.cpu import lanes, lanes_sampled
from flexsparse.prune import prune

pytestmark = pytest.mark.skipif(not lanes.has_avx512(), reason="lane-select kernels need AVX-512")

TOL = {np.float32: dict(rtol=2e-4, atol=2e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}
PATTERNS = ["1:4", "2:4", "3:8", "1:1", "4:6->1:4", "3:4->2:4", "2:3->1:2->1:2", "1:16"]


def _setup(spec, M, K, dtype, seed, fill=None):
    rng = np.random.default_rng(seed)
    S = prune(rng.standard_normal((M, K)).astype(dtype), spec)
    if fill is not None:
        S = S.with_values(np.full_like(S.values, fill))
        S = S.with_values(np.where(S.columns().reshape(S.values.shape) < K, S.values, 0))
    plan = lanes.lane_plan(S.pattern.levels, np.dtype(dtype).itemsize)
    return S, plan


@pytest.mark.parametrize("spec, windows", [("1:4", ((0, 4), (0,))), ("2:4", ((0, 8), (0,))),
                                            ("4:6->1:4", ((0, 2, 4), (0, 8))), ("3:8", ((0, 6), (0,)))])
def test_plan_windows(spec, windows):
    plan = lanes.lane_plan(prune(np.ones((1, 48)), spec).pattern.levels, 4)
    assert (plan.wslot, plan.wbase) == windows
    assert plan.lanes == 16 and plan.sg_span % 16 in (0, 8)


def test_no_plan_when_a_slot_range_is_too_wide():
    assert lanes.lane_plan(((4, 6), (1, 4)), 8) is None  # 12-column range > 8 float64 lanes
    assert lanes.lane_plan(((1, 32),), 4) is None
    assert lanes.lane_plan(((1, 4),), 2) is None  # float16: no kernel


@pytest.mark.parametrize("spec", PATTERNS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pack_roundtrip_and_index_range(spec, dtype):
    S, plan = _setup(spec, 21, 50, dtype, 1)
    if plan is None:
        pytest.skip("pattern wider than a register at this dtype")
    vals = S.values.reshape(21, -1)
    pv = lanes.pack_values(vals, plan)
    pi = lanes.pack_index(S.columns(), plan, dtype)
    assert pv.shape == pi.shape and pv.shape[2] == plan.lanes
    assert pi.dtype == (np.int32 if dtype == np.float32 else np.int64)
    assert pi.min() >= 0 and pi.max() < plan.lanes
    np.testing.assert_array_equal(lanes.unpack_values(pv, 21, vals.shape[1]), vals)


def test_pack_index_rejects_a_foreign_layout():
    S, plan = _setup("1:4", 16, 32, np.float32, 0)
    cols = S.columns().copy()
    cols[0, 0] = 31  # slot 0 can only hold a column of the first group
    with pytest.raises(ValueError, match="outside its lane window"):
        lanes.pack_index(cols, plan, np.float32)


@pytest.mark.parametrize("spec", PATTERNS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M, K, B", [(37, 53, 1), (16, 64, 8), (33, 100, 9), (5, 3, 17), (64, 49, 24)])
def test_linear_sampled_match_dense(spec, dtype, M, K, B):
    S, plan = _setup(spec, M, K, dtype, M + K + B)
    if plan is None:
        pytest.skip("pattern wider than a register at this dtype")
    D = S.todense()
    rng = np.random.default_rng(B)
    X = rng.standard_normal((B, K)).astype(dtype)
    dY = rng.standard_normal((B, M)).astype(dtype)
    vals = S.values.reshape(M, -1)
    Sl = vals.shape[1]
    pv, pi = lanes.pack_values(vals, plan), lanes.pack_index(S.columns(), plan, dtype)
    tol = TOL[dtype]
    np.testing.assert_allclose(lanes.run_linear(pv, pi, plan, Sl, X, M), X @ D.T, **tol)
    # read X in place where possible (B % 8 == 0, every window inside K), else packed
    np.testing.assert_allclose(lanes.run_linear(pv, pi, plan, Sl, X, M, in_place=True), X @ D.T, **tol)
    np.testing.assert_allclose(lanes.run_linear(pv, pi, plan, Sl, X, M, trans_out=True), D @ X.T, **tol)
    XT = np.ascontiguousarray(X.T)
    np.testing.assert_allclose(lanes.run_linear(pv, pi, plan, Sl, XT, M, trans_in=True, trans_out=True),
                               D @ XT, **tol)
    G = lanes.unpack_values(lanes_sampled.run_sampled(pi, plan, Sl, dY, X), M, Sl)
    cols = S.columns()
    full = dY.T @ X
    want = np.where(cols < K, full[np.arange(M)[:, None], np.minimum(cols, K - 1)], 0)
    np.testing.assert_allclose(G, want, **tol)


@pytest.mark.parametrize("spec", ["1:4", "4:6->1:4"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K, B", [(100, 8), (96, 13), (53, 40), (30, 3)])
def test_pack_x_transposed_input(spec, dtype, K, B):
    """``pack_x`` of ``X [K, B]`` (``trans``; threaded: transposed first, serial: gathered in
    place) equals the row-wise pack of ``X.T``, windows past ``K`` and rows past ``B`` zero."""
    S, plan = _setup(spec, 16, K, dtype, K + B)
    if plan is None:
        pytest.skip("pattern wider than a register at this dtype")
    Sl = S.values.reshape(16, -1).shape[1]
    XT = np.random.default_rng(B).standard_normal((2 * K, B)).astype(dtype)[::2]  # strided rows
    want = lanes.pack_x(np.ascontiguousarray(XT.T), plan, Sl)
    for serial in (False, True):
        got = lanes.pack_x(XT, plan, Sl, trans=True, serial=serial)
        np.testing.assert_array_equal(got, want)
    J, L = want.shape[2], want.shape[3]
    wcol = lanes.windows(plan, Sl, K)[0]
    flat = want.transpose(0, 2, 1, 3).reshape(-1, wcol.size, L)  # [rows, windows, L]
    cols = wcol[:, None] + np.arange(L)[None, :]
    assert not flat[B:].any() and not flat[:, cols >= K].any()
    assert J == (8 if B >= 8 else 1)


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_none_kept_and_all_kept(fill):
    """All kept slots zero, and every kept slot 1 (the ragged padding slots stay 0)."""
    S, plan = _setup("2:4", 19, 30, np.float32, 3, fill=fill)
    S.backend = "sparse"
    X = np.random.default_rng(0).standard_normal((7, 30)).astype(np.float32)
    np.testing.assert_allclose(S.linear(X), X @ S.todense().T, rtol=2e-4, atol=2e-4)
    assert S._lanes(np.float32) is not None


def test_dense_pattern_and_empty_rows():
    W = np.random.default_rng(0).standard_normal((20, 40)).astype(np.float32)
    W[3] = 0  # an empty row
    for spec in ("1:1", "4:4"):
        S = prune(W, spec)
        S.backend = "sparse"
        X = np.random.default_rng(1).standard_normal((40, 5)).astype(np.float32)
        np.testing.assert_allclose(S @ X, W @ X, rtol=2e-4, atol=2e-4)


def test_values_repacked_after_invalidate():
    S, _ = _setup("1:4", 16, 32, np.float32, 0)
    S.backend = "sparse"
    X = np.eye(32, dtype=np.float32)
    np.testing.assert_allclose(S @ X, S.todense(), rtol=1e-6)
    S.values[...] *= 2  # in place: stale until invalidated
    S.invalidate_cache()
    np.testing.assert_allclose(S @ X, S.todense(), rtol=1e-6)
    T = S.with_values(S.values * 3)  # a new object shares the index, not the values
    np.testing.assert_allclose(T @ X, T.todense(), rtol=1e-6)
    np.testing.assert_allclose(S @ X, S.todense(), rtol=1e-6)


@pytest.mark.parametrize("shape", [(350, 200), (200, 350), (8, 9000), (9000, 8), (257, 301), (301, 257)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transpose_helper(shape, dtype):
    """Both row-group kernels (8 and 16 source rows) with ragged last groups."""
    A = np.arange(shape[0] * shape[1], dtype=dtype).reshape(shape)
    np.testing.assert_array_equal(lanes.transpose(A), A.T)
    np.testing.assert_array_equal(lanes.transpose(A[:10, :7]), A[:10, :7].T)


@pytest.mark.parametrize("spec", ["1:4", "4:6->1:4", "block:8x8", "block:5x3"])
def test_parallel_kernels(monkeypatch, spec):
    """Small products run serial twins; force the threaded kernels (several parts) too."""
    from flexsparse import _limits

    monkeypatch.setattr(_limits, "PARALLEL_MIN_MACS", 0)
    rng = np.random.default_rng(0)
    W = rng.standard_normal((70, 90)).astype(np.float32)
    S = prune(W, spec, density=0.5) if spec.startswith("block") else prune(W, spec)
    S.backend = "sparse"
    D = S.todense()
    X = rng.standard_normal((90, 33)).astype(np.float32)
    Xb = rng.standard_normal((20, 90)).astype(np.float32)
    np.testing.assert_allclose(S @ X, D @ X, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(S.linear(Xb), Xb @ D.T, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("spec", ["1:4", "4:6->1:4", "2:4"])
@pytest.mark.parametrize("M", [70, 83, 16])  # 5, 6 and 1 tiles: unpaired tiles at thread bounds
def test_threaded_tile_pairs_match_dense(spec, M, monkeypatch):
    """The threaded kernel (forced for a small product) with odd tile counts per thread,
    reading X packed and in place."""
    import numba

    monkeypatch.setattr(lanes._limits, "PARALLEL_MIN_MACS", 0)
    S, plan = _setup(spec, M, 96, np.float32, M)
    vals = S.values.reshape(M, -1)
    pv, pi = lanes.pack_values(vals, plan), lanes.pack_index(S.columns(), plan, np.float32)
    X = np.random.default_rng(1).standard_normal((24, 96)).astype(np.float32)
    bias = np.arange(M, dtype=np.float32)
    D = S.todense()
    old = numba.get_num_threads()
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            for in_place in (False, True):  # 24 rows, K = 96: every window inside K
                np.testing.assert_allclose(lanes.run_linear(pv, pi, plan, vals.shape[1], X, M, bias=bias,
                                                            in_place=in_place),
                                           X @ D.T + bias, rtol=2e-4, atol=2e-4)
            XT = np.ascontiguousarray(X.T)
            np.testing.assert_allclose(lanes.run_linear(pv, pi, plan, vals.shape[1], XT, M, trans_in=True,
                                                        trans_out=True), D @ XT, rtol=2e-4, atol=2e-4)
    finally:
        numba.set_num_threads(old)


def _linear_args(spec, M, K, B, dtype, bbk, ch, parts, seed=0, direct=False, by_batch=False):
    """Arguments of ``linear_hss_lanes`` for ``X @ W.T`` with ``parts`` thread ranges of
    ``ch``-tile chunks and ``bbk`` batch blocks per pass, plus the dense oracle
    (``direct``: the register tiles store straight into the output)."""
    S, plan = _setup(spec, M, K, dtype, seed)
    vals = S.values.reshape(M, -1)
    Sl = vals.shape[1]
    pv, pi = lanes.pack_values(vals, plan), lanes.pack_index(S.columns(), plan, dtype)
    X = np.random.default_rng(seed + 1).standard_normal((B, K)).astype(dtype)
    bias = np.arange(M, dtype=dtype)
    wcol, wq, _ = lanes.windows(plan, Sl, K)
    xp = lanes.pack_x(X, plan, Sl)
    n_chunks = -(-pv.shape[0] // ch)
    passes = -(-xp.shape[0] // bbk)
    n_jobs = passes * n_chunks if by_batch else n_chunks
    bounds = np.linspace(0, n_jobs, parts + 1).round().astype(np.int64)
    done = np.zeros(passes * n_chunks, dtype=np.uint8)
    out = np.full((B, M), np.nan, dtype=dtype)
    args = [pv, pi, wq, wcol, xp, bias, out, False, bbk, wcol.shape[0], ch, bounds, done, direct, by_batch]
    return args, X @ S.todense().T + bias


@pytest.mark.parametrize("spec", ["1:4", "4:6->1:4", "2:4"])
@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("ch, bbk", [(2, 1), (4, 2), (2, 16)])
@pytest.mark.parametrize("by_batch", [False, True])
def test_linear_late_thread_taken_over(spec, parts, ch, bbk, by_batch):
    """The serial twin runs the thread ranges one after the other, as if every thread but
    the first started after it had finished: in every batch pass the first takes the next
    range's chunks from the top, the later ones find theirs done, and every output is still
    written once, correct."""
    args, want = _linear_args(spec, 150, 96, 24, np.float32, bbk, ch, parts, by_batch=by_batch)
    lanes._linear_serial(*args)
    np.testing.assert_allclose(args[6], want, **TOL[np.float32])
    assert args[-3].all()


@pytest.mark.parametrize("spec", ["1:4", "4:6->1:4", "2:4"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parts", [1, 2, 3])
@pytest.mark.parametrize("ch, bbk", [(2, 1), (4, 2), (2, 16)])
@pytest.mark.parametrize("by_batch", [False, True])
def test_linear_direct_store(spec, dtype, parts, ch, bbk, by_batch):
    """Register tiles stored straight into the output (bias added in registers): equal to
    the dense product, with late threads' chunks taken over (serial twin) and threaded;
    tile counts odd and even (a lone last tile runs the one-tile register block)."""
    import numba

    from flexsparse.formats.hss import HSSPattern

    if lanes.lane_plan(HSSPattern.parse(spec).levels, np.dtype(dtype).itemsize) is None:
        pytest.skip(f"{spec} has no lane plan at {np.dtype(dtype).name}")
    L = 64 // np.dtype(dtype).itemsize
    for M in (10 * L, 11 * L):
        args, want = _linear_args(spec, M, 96, 24, dtype, bbk, ch, parts, direct=True, by_batch=by_batch)
        lanes._linear_serial(*args)
        np.testing.assert_allclose(args[6], want, **TOL[dtype])
        assert args[-3].all()
        old = numba.get_num_threads()
        try:
            numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
            args, want = _linear_args(spec, M, 96, 24, dtype, bbk, ch, parts, direct=True, by_batch=by_batch)
            lanes.linear_hss_lanes(*args)
            np.testing.assert_allclose(args[6], want, **TOL[dtype])
        finally:
            numba.set_num_threads(old)


@pytest.mark.parametrize("spec", ["1:4", "4:6->1:4"])
@pytest.mark.parametrize("where", ["first", "middle"])
def test_linear_take_over_stops_where_threads_meet(spec, where):
    """A chunk of thread 1's range already marked done, its outputs written (as by a thread 1
    that ran only that far): thread 0 takes thread 1's chunks from the top down to it and
    stops; thread 1 then runs only the chunks below it. With the first chunk marked, the
    outputs above it are written by thread 0's take-over alone."""
    args, want = _linear_args(spec, 300, 96, 24, np.float32, 16, 2, 2)
    out, bounds, done = args[6], args[-4], args[-3]
    k = int(bounds[1]) if where == "first" else int(bounds[1] + bounds[2]) // 2
    assert bounds[1] <= k < bounds[2] - 1
    rows = slice(k * 2 * 16, (k + 1) * 2 * 16)  # 2 tiles of 16 float32 rows
    out[:, rows] = want[:, rows]
    done[k] = 1
    lanes._linear_serial(*args)
    np.testing.assert_allclose(out, want, **TOL[np.float32])
    assert done.all()


def test_linear_threaded_many_chunks(monkeypatch):
    """The threaded kernel with one-pair chunks and several batch passes, on up to 2 threads."""
    import numba

    old = numba.get_num_threads()
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            args, want = _linear_args("1:4", 300, 96, 40, np.float32, 1, 2, threads)
            lanes.linear_hss_lanes(*args)
            np.testing.assert_allclose(args[6], want, rtol=2e-4, atol=2e-4)
            assert args[-3].all()
    finally:
        numba.set_num_threads(old)


@pytest.mark.parametrize("spec", ["1:4", "4:6->1:4", "2:4"])
@pytest.mark.parametrize("in_place", [False, True])
def test_run_linear_large_batch_direct_and_batch_split(spec, in_place):
    """``run_linear`` where the tiles cover the output and X outweighs the packed weights
    (batch passes split over the threads, tiles stored straight into ``out``), and where
    they do not (``M`` not a multiple of the register width): equal to the dense product
    with the bias, on one and two threads; ``out`` starts on a 64-byte boundary."""
    import numba

    old = numba.get_num_threads()
    try:
        for M in (64, 72):
            S, plan = _setup(spec, M, 384, np.float32, 3)
            if plan is None:
                pytest.skip(f"{spec} has no lane plan")
            vals = S.values.reshape(M, -1)
            pv, pi = lanes.pack_values(vals, plan), lanes.pack_index(S.columns(), plan, np.float32)
            # above PARALLEL_MIN_MACS, so two threads run the threaded kernel
            X = np.random.default_rng(4).standard_normal((2400, 384)).astype(np.float32)
            assert M * vals.shape[1] * X.shape[0] >= _limits.PARALLEL_MIN_MACS
            bias = np.random.default_rng(5).standard_normal(M).astype(np.float32)
            want = X.astype(np.float64) @ S.todense().T.astype(np.float64) + bias
            for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
                numba.set_num_threads(threads)
                got = lanes.run_linear(pv, pi, plan, vals.shape[1], X, M, bias=bias, in_place=in_place)
                np.testing.assert_allclose(got, want, **TOL[np.float32])
                assert got.ctypes.data % 64 == 0
    finally:
        numba.set_num_threads(old)
