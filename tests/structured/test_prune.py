"""Magnitude pruning: patterns respected, magnitude criteria, ties, orientation, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexsparse.formats.block import BlockSparse
from flexsparse.formats.hss import HSS, HSSPattern
from flexsparse.formats.nm import NM
from flexsparse.prune import prune, prune_mask


def _rand(shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@given(M=st.integers(1, 12), K=st.integers(1, 60), seed=st.integers(0, 10_000),
       spec=st.sampled_from(["1:4", "2:4", "3:8", "1:1", "3:4->2:4", "4:6->1:4", "2:3->1:2->1:2"]),
       dtype=st.sampled_from([np.float32, np.float64]))
@settings(max_examples=60, deadline=None)
def test_pruned_satisfies_pattern(M, K, seed, spec, dtype):
    W = _rand((M, K), dtype, seed)
    S = prune(W, spec)
    S.validate()
    P = S.todense()
    assert P.dtype == dtype
    assert HSSPattern.parse(spec).validate(P)
    kept = P != 0
    np.testing.assert_array_equal(P[kept], W[kept])  # kept values are unchanged
    mask = prune_mask(W, spec)
    assert mask.shape == W.shape and mask.dtype == W.dtype
    assert set(np.unique(mask)) <= {0.0, 1.0}
    np.testing.assert_array_equal(W * mask, P)


@given(M=st.integers(1, 8), G=st.integers(1, 6), n=st.integers(1, 4), m=st.integers(4, 8),
       seed=st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_nm_keeps_largest_in_each_group(M, G, n, m, seed):
    K = G * m
    W = _rand((M, K), seed=seed)
    A = prune(W, f"{n}:{m}")
    assert isinstance(A, NM) and (A.n, A.m) == (n, m)
    mask = prune_mask(W, f"{n}:{m}").reshape(M, G, m).astype(bool)
    mags = np.abs(W).reshape(M, G, m)
    assert (mask.sum(axis=-1) == n).all()
    # every kept magnitude >= every dropped magnitude of the same group
    kept_min = np.where(mask, mags, np.inf).min(axis=-1)
    dropped_max = np.where(~mask, mags, -np.inf).max(axis=-1)
    assert (kept_min >= dropped_max).all()


def test_hss_inner_first_then_outer_by_norm():
    # 1:2 -> 1:2 (span 4): inner keeps the larger of each pair, outer keeps the pair whose
    # survivor has the larger norm.
    W = np.array([[3.0, 1.0, -2.0, 2.5],    # survivors 3.0 | 2.5 -> keep 3.0
                  [0.1, 0.2, -4.0, 0.0]])   # survivors 0.2 | -4.0 -> keep -4.0
    P = prune(W, "1:2->1:2").todense()
    np.testing.assert_array_equal(P, [[3.0, 0, 0, 0], [0, 0, -4.0, 0]])
    # "1:2->2:4": the outer level ranks the two groups of 4 by the L2 norm of the 2:4 survivors,
    # not of the raw group: group 0 = (1, 1, 1, 1) raw norm 2, survivors (1, 1) norm 1.41;
    # group 1 = (1.5, 0, 0, 0.3) raw norm 1.53, survivors the same -> group 1 is kept.
    W3 = np.array([[1.0, 1.0, 1.0, 1.0, 1.5, 0.0, 0.0, 0.3]])
    P3 = prune(W3, "1:2->2:4").todense()
    np.testing.assert_array_equal(P3, [[0, 0, 0, 0, 1.5, 0, 0, 0.3]])
    # the group that holds the single largest element is not automatically kept
    W4 = np.array([[1.0, 0.0, 1.0, 0.0, 0.0, 1.3, 0.0, 0.0]])
    np.testing.assert_array_equal(prune(W4, "1:2->2:4").todense(), [[1.0, 0, 1.0, 0, 0, 0, 0, 0]])


def test_ties_are_deterministic_lower_index_wins():
    W = np.ones((2, 8))
    P = prune(W, "2:4").todense()
    np.testing.assert_array_equal(P, np.tile([1, 1, 0, 0], (2, 2)))
    B = prune(np.ones((4, 4)), "block:2x2", density=0.5)
    np.testing.assert_array_equal(B.block_mask(), [[True, True], [False, False]])
    np.testing.assert_array_equal(prune(W, "2:4").values, prune(W.copy(), "2:4").values)


@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("block", [(4, 4), (3, 5), (8, 2)])
def test_block_prune_keeps_largest_norm_blocks(density, block):
    W = _rand((23, 31), seed=7)
    spec = f"block:{block[0]}x{block[1]}"
    B = prune(W, spec, density=density)
    assert isinstance(B, BlockSparse) and B.block == block
    gm, gk = -(-23 // block[0]), -(-31 // block[1])
    assert B.n_blocks == round(density * gm * gk)
    P = np.zeros((gm * block[0], gk * block[1]))
    P[:23, :31] = W
    norms = np.sqrt((P.reshape(gm, block[0], gk, block[1]) ** 2).sum(axis=(1, 3)))
    mask = B.block_mask()
    if 0 < B.n_blocks < gm * gk:
        assert norms[mask].min() >= norms[~mask].max()
    D = B.todense()
    np.testing.assert_array_equal(D[D != 0], W[D != 0])
    np.testing.assert_array_equal(prune_mask(W, spec, density=density).astype(bool),
                                  np.kron(mask, np.ones(block, bool))[:23, :31])


def test_square_block_shorthand_and_dense():
    W = _rand((8, 8), seed=1)
    assert prune(W, "block:4", density=0.5).block == (4, 4)
    D = prune(W, "dense")
    assert isinstance(D, HSS) and D.density == 1.0
    np.testing.assert_array_equal(D.todense(), W)
    np.testing.assert_array_equal(prune_mask(W, "dense"), np.ones_like(W))
    H = prune(_rand((3, 80)), "1:40")  # one level with H > 32 -> HSS
    assert type(H) is HSS


def test_axis0_orientation():
    W = _rand((8, 3), seed=2)
    S = prune(W, "2:4", axis=0)
    assert S.shape == (3, 8)  # represents W.T
    np.testing.assert_array_equal(S.todense(), prune(W.T, "2:4").todense())
    mask = prune_mask(W, "2:4", axis=0)
    assert mask.shape == W.shape
    assert (mask.reshape(2, 4, 3).sum(axis=1) == 2).all()  # groups run down the columns
    np.testing.assert_array_equal(W * mask, S.todense().T)


@pytest.mark.parametrize("args,kwargs,err,match", [
    (("2;4",), {}, ValueError, "malformed HSS pattern '2;4'"),
    (("5:4",), {}, ValueError, "G=5 of H=4"),
    (("0:4",), {}, ValueError, "G=0 of H=4"),
    (("2:4",), {"density": 0.5}, ValueError, "density= applies to block patterns only"),
    (("block:32x32",), {}, ValueError, "needs density="),
    (("block:32x32",), {"density": 1.5}, ValueError, r"density must lie in \[0, 1\]"),
    (("block:0x4",), {"density": 0.5}, ValueError, "between 1 and 128"),
    (("block:256",), {"density": 0.5}, ValueError, "between 1 and 128"),
    (("block:axb",), {"density": 0.5}, ValueError, "malformed block pattern"),
    (("2:4",), {"axis": 2}, ValueError, "axis must be 0 or 1"),
    ((24,), {}, TypeError, "pattern must be a string"),
])
def test_prune_errors(args, kwargs, err, match):
    with pytest.raises(err, match=match):
        prune(_rand((4, 8)), *args, **kwargs)


def test_prune_weight_errors():
    with pytest.raises(TypeError, match="weight has dtype int64"):
        prune(np.ones((4, 8), np.int64), "2:4")
    with pytest.raises(TypeError, match="weight has dtype complex128"):
        prune(np.ones((4, 8), np.complex128), "2:4")
    with pytest.raises(ValueError, match=r"weight must be 2-D, got shape \(8,\)"):
        prune(np.ones(8), "2:4")


def test_prune_empty_and_zero_weights():
    for spec, kw in [("2:4", {}), ("3:4->2:4", {}), ("block:4", {"density": 0.5})]:
        S = prune(np.zeros((0, 8)), spec, **kw)
        assert S.shape == (0, 8) and S.todense().shape == (0, 8)
        Z = prune(np.zeros((3, 8)), spec, **kw)
        np.testing.assert_array_equal(Z.todense(), np.zeros((3, 8)))


def test_prune_accepts_torch_tensor_with_grad():
    torch = pytest.importorskip("torch")
    t = torch.randn(4, 8, requires_grad=True)
    S = prune(t, "2:4")
    np.testing.assert_array_equal(S.todense(), prune(t.detach().numpy(), "2:4").todense())
    assert prune_mask(t, "2:4").shape == (4, 8)
