"""Structured kernels against the dense NumPy product (every op, ragged shapes, both dtypes)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexsparse.formats.block import BlockSparse
from flexsparse.formats.hss import HSS
from flexsparse.formats.nm import NM
from flexsparse.prune import prune

TOL = {np.float32: dict(rtol=2e-4, atol=2e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}


def _rand(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _make(kind, M, K, dtype, seed, density):
    """A structured matrix of ``kind`` and its dense oracle; density in {0, small, 1}."""
    W = _rand((M, K), dtype, seed)
    if kind.startswith("block"):
        block = tuple(int(b) for b in kind.split(":")[1].split("x"))
        S = prune(W, f"block:{block[0]}x{block[1]}", density=density)
    else:
        S = prune(W, kind)
        if density == 0.0:  # kept slots that hold zeros everywhere
            S = S.with_values(np.zeros_like(S.values))
        elif density < 1.0:  # empty some whole top-level groups (exercises group skipping)
            v = S.values.copy()
            v[:, ::2] = 0
            S = S.with_values(v)
    return S, S.todense()


def _check_all_ops(S, D, dtype, N, seed):
    M, K = D.shape
    tol = TOL[dtype]
    X = _rand((K, N), dtype, seed + 1)
    Y = _rand((M, N), dtype, seed + 2)
    Xb = _rand((N, K), dtype, seed + 3)
    dY = _rand((N, M), dtype, seed + 4)
    out = S.matmul(X)
    assert out.shape == (M, N) and out.dtype == dtype
    np.testing.assert_allclose(out, D @ X, **tol)
    np.testing.assert_allclose(S.tmatmul(Y), D.T @ Y, **tol)
    np.testing.assert_allclose(S.linear(Xb), Xb @ D.T, **tol)
    np.testing.assert_allclose(S.linear_grad_input(dY), dY @ D, **tol)
    g = S.sampled_grad(dY, Xb)
    assert g.shape == S.values.shape and g.dtype == S.values.dtype
    rows, cols, _ = S.with_values(g)._coo_parts()
    full = dY.T @ Xb
    np.testing.assert_allclose(S.with_values(g).todense()[rows, cols], full[rows, cols], **tol)
    # padding / unstored slots get nothing
    G = S.with_values(g).todense()
    unstored = np.ones(D.shape, bool)
    unstored[rows, cols] = False
    assert not np.any(G[unstored])


KINDS = ["block:8x8", "block:3x5", "block:16x4", "block:1x1", "2:4", "1:4", "3:8", "3:4->2:4",
         "4:6->1:4", "2:3->1:2->1:2"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("density", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("backend", ["sparse", "auto", "dense"])
def test_ops_match_dense(dtype, kind, density, backend):
    S, D = _make(kind, 37, 53, dtype, seed=len(kind), density=density)
    S.backend = backend
    _check_all_ops(S, D, dtype, N=11, seed=3)


@given(M=st.integers(1, 40), K=st.integers(1, 70), N=st.integers(1, 20),
       kind=st.sampled_from(KINDS), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 1000))
@settings(max_examples=40, deadline=None)
def test_ops_random_shapes(M, K, N, kind, dtype, seed):
    S, D = _make(kind, M, K, dtype, seed, density=0.1)
    S.backend = "sparse"
    _check_all_ops(S, D, dtype, N, seed)


@pytest.mark.parametrize("kind", ["block:4x4", "2:4", "3:4->2:4"])
def test_empty_operands(kind):
    S, D = _make(kind, 6, 10, np.float64, 0, 0.1)
    S.backend = "sparse"
    assert S.matmul(np.zeros((10, 0))).shape == (6, 0)
    assert S.linear(np.zeros((0, 10))).shape == (0, 6)
    assert S.linear_grad_input(np.zeros((0, 6))).shape == (0, 10)
    g = S.sampled_grad(np.zeros((0, 6)), np.zeros((0, 10)))
    assert g.shape == S.values.shape and not g.any()


def test_zero_size_matrices():
    for S in (BlockSparse.from_dense(np.zeros((0, 5)), 2), HSS.from_dense(np.zeros((3, 0)), "2:4")):
        S.backend = "sparse"
        M, K = S.shape
        np.testing.assert_array_equal(S.matmul(np.ones((K, 4))), np.zeros((M, 4)))
        np.testing.assert_array_equal(S.linear_grad_input(np.ones((2, M))), np.zeros((2, K)))


@pytest.mark.parametrize("kind", ["block:4x4", "2:4", "3:4->2:4"])
def test_operators_and_mixed_dtypes(kind):
    S, D = _make(kind, 9, 12, np.float32, 1, 1.0)
    X = _rand((12, 3), np.float64, 2)
    out = S @ X  # float32 weight x float64 activations -> float64
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, D.astype(np.float64) @ X, rtol=1e-6, atol=1e-6)
    v = np.arange(12)  # integer vector: promoted (NumPy rules) to a float dtype
    np.testing.assert_allclose(S @ v, D @ v, rtol=1e-5, atol=1e-4)
    u = np.arange(9.0, dtype=np.float32)
    np.testing.assert_allclose(u @ S, u @ D, rtol=1e-5, atol=1e-4)
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(X.astype(np.float32))
    res = S @ t
    assert isinstance(res, torch.Tensor) and res.shape == (9, 3)
    np.testing.assert_allclose(res.numpy(), D @ X.astype(np.float32), rtol=1e-4, atol=1e-4)
    left = torch.ones(2, 9) @ S  # __rmatmul__ with a torch tensor
    np.testing.assert_allclose(left.numpy(), np.ones((2, 9), np.float32) @ D, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["block:4x4", "2:4", "3:4->2:4"])
def test_shape_and_dtype_errors(kind):
    S, _ = _make(kind, 6, 8, np.float64, 0, 1.0)
    with pytest.raises(ValueError, match=r"matmul: shape mismatch between W \(6, 8\) and X \(7, 2\)"):
        S.matmul(np.zeros((7, 2)))
    with pytest.raises(ValueError, match=r"linear: shape mismatch between W \(6, 8\) and X \(3, 6\)"):
        S.linear(np.zeros((3, 6)))
    with pytest.raises(ValueError, match=r"linear_grad_input: .* dY \(3, 8\)"):
        S.linear_grad_input(np.zeros((3, 8)))
    with pytest.raises(ValueError, match=r"sampled_grad: batch sizes differ"):
        S.sampled_grad(np.zeros((3, 6)), np.zeros((4, 8)))
    with pytest.raises(ValueError, match=r"tmatmul: .* Y \(5, 1\)"):
        S.tmatmul(np.zeros((5, 1)))
    with pytest.raises(ValueError, match="X must be 2-D"):
        S.matmul(np.zeros((8, 2, 2)))
    with pytest.raises(TypeError, match="complex128"):
        S.matmul(np.zeros((8, 2), np.complex128))
    with pytest.raises(TypeError, match="values has dtype float16"):
        S.with_values(S.values.astype(np.float16))


def test_dense_cache_and_invalidate():
    S, D = _make("block:4x4", 8, 8, np.float64, 0, 1.0)
    S.backend = "dense"
    X = np.eye(8)
    np.testing.assert_allclose(S @ X, D)
    S.values[...] *= 2  # in-place write: the cache is stale until invalidated
    S.invalidate_cache()
    np.testing.assert_allclose(S @ X, 2 * D)


@pytest.mark.parametrize("kind", ["block:8x8", "block:5x3", "block:32x32", "2:4", "4:6->1:4"])
@pytest.mark.parametrize("N", [1, 15, 17, 64, 70, 129])
def test_register_tile_edges(kind, N):
    """Every column slice width (wide / one register / masked) and ragged rows and columns."""
    S, D = _make(kind, 45, 67, np.float32, 2, 0.5)
    S.backend = "sparse"
    _check_all_ops(S, D, np.float32, N=N, seed=N)


@pytest.mark.parametrize("kind", ["1:4", "2:4", "3:8", "4:6->1:4", "2:3->1:2->1:2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_fallback_matches_dense(monkeypatch, kind, dtype):
    """Without AVX-512 (or for patterns wider than a register) the gather kernels run."""
    from flexsparse.kernels.cpu import lanes

    monkeypatch.setattr(lanes, "has_avx512", lambda: False)
    S, D = _make(kind, 23, 41, dtype, 5, 0.5)
    S.backend = "sparse"
    assert S._lanes(dtype) is None
    _check_all_ops(S, D, dtype, N=9, seed=4)


# Tiny inputs that go through every numba kernel; CI re-runs them with NUMBA_DISABLE_JIT=1.
@pytest.mark.jitless
@pytest.mark.parametrize("kind", ["block:2x3", "block:4x4", "2:4", "3:4->2:4"])
def test_jitless_kernels(kind):
    S, D = _make(kind, 6, 9, np.float64, 7, 0.5)
    S.backend = "sparse"
    _check_all_ops(S, D, np.float64, N=3, seed=1)


@pytest.mark.jitless
def test_jitless_nm_group_skipping():
    W = np.zeros((2, 8))
    W[0, 1], W[1, 6] = 1.0, 2.0
    A = NM.from_dense(W, 2, 4)
    A.backend = "sparse"
    X = np.arange(16.0).reshape(8, 2)
    np.testing.assert_array_equal(A @ X, W @ X)
    np.testing.assert_array_equal(A.linear_grad_input(np.ones((1, 2))), np.ones((1, 2)) @ W)


@pytest.mark.jitless
@pytest.mark.parametrize("kind", ["1:4", "3:4->2:4", "2:3->1:2->1:2"])
def test_hss_matmul_many_k_blocks(monkeypatch, kind):
    """Tiny K-blocks and row tasks: every (row block, K-block) boundary is crossed."""
    from flexsparse.kernels.cpu import hss as hss_kernels
    from flexsparse.kernels.cpu import lanes

    monkeypatch.setattr(lanes, "has_avx512", lambda: False)  # the gather kernels
    monkeypatch.setattr(hss_kernels, "X_BLOCK_BYTES", 1)  # one top-level group per K-block
    monkeypatch.setattr(hss_kernels, "ROWS_PER_TASK", 3)
    S, D = _make(kind, 10, 45, np.float64, 3, 0.5)
    S.backend = "sparse"
    X = _rand((45, 5), np.float64, 9)
    np.testing.assert_allclose(S.matmul(X), D @ X, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["block:8x8", "2:4", "4:6->1:4", "3:8"])
@pytest.mark.parametrize("backend", ["sparse", "dense"])
def test_linear_with_bias(kind, backend):
    S, D = _make(kind, 19, 40, np.float32, 3, 0.5)
    S.backend = backend
    X = _rand((13, 40), np.float32, 4)
    b = _rand((19,), np.float32, 5)
    np.testing.assert_allclose(S.linear(X, b), X @ D.T + b, **TOL[np.float32])
    with pytest.raises(ValueError, match=r"bias must have shape \(19,\)"):
        S.linear(X, b[:3])


@pytest.mark.parametrize("kind", ["block:32x32", "block:16x16", "block:12x7", "block:40x8", "block:8x8"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 7, 8, 9, 16, 17, 40])
@pytest.mark.parametrize("parallel", [False, True])
def test_block_linear_direct_and_panels(monkeypatch, kind, dtype, B, parallel):
    """``linear`` from the transposed blocks (8-row x 1-2 register tiles, masked output and
    batch edges, bias), ``W @ X`` on column panels, ``dY @ W`` and the sampled gradient,
    serial twins and threaded kernels."""
    from flexsparse import _limits

    if parallel:
        monkeypatch.setattr(_limits, "PARALLEL_MIN_MACS", 0)
        monkeypatch.setattr(_limits, "LINEAR_PARALLEL_MIN_MACS", 0)
    S, D = _make(kind, 77, 90, dtype, B, 0.5)
    S.backend = "sparse"
    X = _rand((B, 90), dtype, 1)
    b = _rand((77,), dtype, 2)
    np.testing.assert_allclose(S.linear(X), X @ D.T, **TOL[dtype])
    np.testing.assert_allclose(S.linear(X, b), X @ D.T + b, **TOL[dtype])
    np.testing.assert_allclose(S.matmul(X.T), D @ X.T, **TOL[dtype])
    np.testing.assert_allclose(S.linear_grad_input(X[:, :77]), X[:, :77] @ D, **TOL[dtype])
    # sampled gradient in several batch passes: stored slots get dY.T @ X, the rest 0
    from flexsparse.kernels.cpu import block as block_kernels

    monkeypatch.setattr(block_kernels, "SAMPLED_BATCH_ROWS", 3)
    dY = _rand((B, 77), dtype, 3)
    Sg = S.with_values(S.sampled_grad(dY, X))  # validates: padding slots hold 0
    rows, cols, _ = Sg._coo_parts()
    G = Sg.todense()
    np.testing.assert_allclose(G[rows, cols], (dY.T @ X)[rows, cols], **TOL[dtype])
    G[rows, cols] = 0
    assert not np.any(G)


def test_block_transposed_cache_invalidate():
    S, D = _make("block:16x16", 32, 32, np.float32, 0, 1.0)
    S.backend = "sparse"
    X = _rand((4, 32), np.float32, 1)
    np.testing.assert_allclose(S.linear(X), X @ D.T, **TOL[np.float32])
    S.values[...] *= 2  # in-place write: the transposed blocks are stale until invalidated
    S.invalidate_cache()
    np.testing.assert_allclose(S.linear(X), 2 * (X @ D.T), **TOL[np.float32])
    # float64 activations: the float32 blocks are transposed again in float64
    out = S.linear(X.astype(np.float64))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, 2 * (X @ D.T), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("B", [1, 9, 64])
def test_block_linear_thread_choice(monkeypatch, B):
    """``linear`` runs the serial twin below ``LINEAR_PARALLEL_MIN_MACS`` (stored values x
    batch rows) and the threaded kernel from it on, with the same result either way; ``dY @ W``
    follows the same rule."""
    from flexsparse import _limits
    from flexsparse.kernels.cpu import block as block_kernels

    S, D = _make("block:32x32", 96, 80, np.float32, 0, 0.5)
    S.backend = "sparse"
    X = _rand((B, 80), np.float32, 1)
    dY = _rand((B, 96), np.float32, 2)
    calls = []
    for name in ("_linear_serial", "linear_block_dense"):
        kernel = getattr(block_kernels, name)
        monkeypatch.setattr(block_kernels, name,
                            lambda *a, kernel=kernel, name=name: (calls.append(name), kernel(*a))[1])
    macs = S.values.size * B
    for limit, expected in ((macs, "linear_block_dense"), (macs + 1, "_linear_serial")):
        monkeypatch.setattr(_limits, "LINEAR_PARALLEL_MIN_MACS", limit)
        calls.clear()
        np.testing.assert_allclose(S.linear(X), X @ D.T, **TOL[np.float32])
        np.testing.assert_allclose(S.linear_grad_input(dY), dY @ D, **TOL[np.float32])
        assert calls == [expected, expected]


@pytest.mark.parametrize("parts", [2, 3])
def test_block_linear_late_thread_taken_over(parts):
    """The serial twin runs the thread ranges one after the other, as if every thread but
    the first started after it finished: the first takes the next range from the back, the
    later ones find their rows done, and every output is still written once correct."""
    from flexsparse.kernels.cpu import block as block_kernels

    S, D = _make("block:8x8", 61, 50, np.float64, 0, 0.6)
    X = _rand((11, 50), np.float64, 1)
    b = _rand((61,), np.float64, 2)
    gm = S.indptr.shape[0] - 1
    bounds = np.linspace(0, gm, parts + 1).round().astype(np.int64)
    done = np.zeros(gm, dtype=np.uint8)
    out = np.full((11, 61), np.nan)
    block_kernels._linear_serial(S.indptr, S.indices, np.zeros(0, np.int64), S._tvals(np.dtype(np.float64)),
                                 X, b, out, bounds, done)
    np.testing.assert_allclose(out, X @ D.T + b, **TOL[np.float64])
    assert done.all()


@pytest.mark.parametrize("parts", [2, 3])
def test_hss_tmatmul_late_thread_taken_over(parts):
    """``W.T @ Y`` on one thread with several thread ranges: the first takes the next range's
    rows from the top, the later ones find theirs done; with one row of the second range
    already done (its output written), the take-over stops there and that range's owner
    runs the rows below it."""
    from flexsparse.kernels.cpu import hss as hss_kernels
    from flexsparse.kernels.cpu.partition import thread_scope

    S, D = _make("4:6->1:4", 40, 90, np.float64, 0, 1.0)
    Y = _rand((40, 13), np.float64, 1)
    indptr, rows, order = hss_kernels.transposed_csr(S.columns(), 90)
    vals = S._vals(np.dtype(np.float64)).reshape(-1)[order]
    bounds = np.linspace(0, 90, parts + 1).round().astype(np.int64)
    want = D.T @ Y
    with thread_scope(1):
        for met in (None, int(bounds[1])):
            done = np.zeros(90, dtype=np.uint8)
            out = np.full((90, 13), np.nan)
            if met is not None:
                done[met] = 1
                out[met] = want[met]
            hss_kernels.tmatmul_csr_dense(indptr, rows, vals, Y, out, bounds, done)
            np.testing.assert_allclose(out, want, **TOL[np.float64])
            assert done.all()
