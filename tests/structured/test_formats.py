"""Structured formats: layout, round trips (dense <-> format <-> COO/SciPy/torch), validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexsparse.formats.block import BlockSparse
from flexsparse.formats.hss import HSS, HSSPattern, select_hss
from flexsparse.formats.nm import NM
from flexsparse.prune import prune

FLOATS = [np.float32, np.float64]


def _rand(shape, dtype=np.float64, seed=0, density=1.0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal(shape).astype(dtype)
    A[rng.random(shape) >= density] = 0
    return A


def _hss_matrix(shape, pattern, dtype=np.float64, seed=0):
    """A dense matrix that satisfies ``pattern`` (magnitude-selected from random data)."""
    return prune(_rand(shape, dtype, seed), pattern).todense()


# ------------------------------------------------------------------ HSSPattern
@pytest.mark.parametrize("spec,levels,span,density", [
    ("2:4", ((2, 4),), 4, 0.5),
    ("3:4->2:4", ((3, 4), (2, 4)), 16, 0.375),
    ("4:6 -> 1:4", ((4, 6), (1, 4)), 24, 1 / 6),
    ("1:2->1:2->1:2", ((1, 2),) * 3, 8, 0.125),
    ("255:255", ((255, 255),), 255, 1.0),
])
def test_pattern_parse(spec, levels, span, density):
    p = HSSPattern.parse(spec)
    assert p.levels == levels
    assert p.span == span == math.prod(h for _, h in levels)
    assert p.density == pytest.approx(density)
    assert HSSPattern.parse(str(p)) == p


@pytest.mark.parametrize("spec,match", [
    ("5:4", "G=5 of H=4"),
    ("0:4", "G=0 of H=4"),
    ("2:0", "G=2 of H=0"),
    ("2:4->", "level 1 '' is not 'G:H'"),
    ("2-4", "malformed HSS pattern"),
    ("a:b", "malformed HSS pattern"),
    ("2:4:8", "malformed HSS pattern"),
    ("1:256", "H=256 > 255"),
    ("", "malformed HSS pattern"),
])
def test_pattern_parse_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        HSSPattern.parse(spec)


def test_pattern_parse_type_error():
    with pytest.raises(TypeError, match="pattern must be a string"):
        HSSPattern.parse(24)


def test_pattern_metadata_bits():
    # 2:4: C(4,2)=6 -> 3 bits per group; 3:4->2:4: level 0 C(4,3)=4 -> 2 bits per top group,
    # level 1 3 bits per kept level-1 group (3 of them per top group).
    assert HSSPattern.parse("2:4").metadata_bits(10, 16) == 10 * 4 * 3
    assert HSSPattern.parse("3:4->2:4").metadata_bits(2, 32) == 2 * 2 * (2 + 3 * 3)
    assert HSSPattern.parse("4:4").metadata_bits(3, 8) == 0  # dense level: no choice to encode


@given(st.integers(1, 6), st.integers(1, 40), st.sampled_from(["1:2", "2:4", "3:4->2:4", "2:3->1:2"]),
       st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_pattern_validate_matches_definition(M, K, spec, seed):
    p = HSSPattern.parse(spec)
    A = _rand((M, K), seed=seed, density=0.5)
    # oracle: explicit loops over top groups and levels
    ok = True
    span = p.span
    for row in A:
        padded = np.zeros(p.n_top(K) * span)
        padded[:K] = row
        for t in range(p.n_top(K)):
            nz = padded[t * span:(t + 1) * span] != 0
            for G, H in reversed(p.levels):
                groups = nz.reshape(-1, H)
                ok &= bool((groups.sum(axis=1) <= G).all())
                nz = groups.any(axis=1)
    assert p.validate(A) == ok
    assert p.validate(_hss_matrix((M, K), spec, seed=seed))


# ------------------------------------------------------------------ BlockSparse
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,block", [((37, 53), (8, 8)), ((64, 64), (16, 32)), ((5, 3), (4, 4)),
                                         ((1, 130), (1, 128)), ((0, 7), (2, 2)), ((9, 0), (3, 3))])
@pytest.mark.parametrize("density", [0.0, 0.05, 1.0])
def test_block_roundtrip(dtype, shape, block, density):
    W = _rand(shape, dtype, density=density)
    B = BlockSparse.from_dense(W, block)
    B.validate()
    r, c = block
    gm, gk = -(-shape[0] // r), -(-shape[1] // c)
    assert B.indptr.shape == (gm + 1,) and B.indptr.dtype == np.int64
    assert B.indices.dtype == np.int32
    assert B.values.shape == (B.n_blocks, r, c) and B.values.flags.c_contiguous
    assert B.dtype == dtype
    np.testing.assert_array_equal(B.todense(), W)
    # stored blocks are exactly the blocks holding a nonzero
    expected = np.zeros((gm * r, gk * c), dtype=bool)
    expected[:shape[0], :shape[1]] = W != 0
    np.testing.assert_array_equal(B.block_mask(), expected.reshape(gm, r, gk, c).any(axis=(1, 3)))
    coo = B.to_coo()
    np.testing.assert_array_equal(coo.todense(), W)
    assert coo.nnz == np.count_nonzero(W)
    np.testing.assert_array_equal(B.to_scipy("csr").toarray(), W)
    np.testing.assert_array_equal(B.to_scipy("coo").toarray(), W)
    np.testing.assert_array_equal(BlockSparse.from_dense(B.todense(), block, layout=B.block_mask()).values,
                                  B.values)
    assert B.nbytes == B.values.nbytes + B.indptr.nbytes + B.indices.nbytes


def test_block_layout_keeps_given_blocks():
    W = np.arange(1, 17, dtype=np.float64).reshape(4, 4)
    layout = np.array([[True, False], [False, False]])
    B = BlockSparse.from_dense(W, (2, 2), layout=layout)
    assert B.n_blocks == 1
    expect = np.zeros_like(W)
    expect[:2, :2] = W[:2, :2]
    np.testing.assert_array_equal(B.todense(), expect)
    assert B.density == pytest.approx(4 / 16)
    assert B.block_density == pytest.approx(1 / 4)
    # a stored block may be all zeros: layout decides, not the values
    Z = BlockSparse.from_dense(np.zeros((4, 4)), 2, layout=np.ones((2, 2), bool))
    assert Z.n_blocks == 4 and Z.nnz == 16 and Z.count_nonzero() == 0


def test_block_density_ragged():
    B = BlockSparse.from_dense(np.ones((5, 6), np.float32), (4, 4))
    assert B.nnz == 30 and B.density == pytest.approx(1.0)
    assert "block=(4, 4)" in repr(B) and "density=100%" in repr(B)


def test_block_scipy_bsr_and_torch():
    W = _rand((16, 32), density=0.1, seed=3)
    B = BlockSparse.from_dense(W, (8, 16))
    bsr = B.to_scipy("bsr")
    assert bsr.format == "bsr" and bsr.blocksize == (8, 16)
    np.testing.assert_array_equal(bsr.toarray(), W)
    with pytest.raises(ValueError, match=r"multiple of the block"):
        BlockSparse.from_dense(_rand((5, 6)), (4, 4)).to_scipy("bsr")
    with pytest.raises(ValueError, match="unknown scipy format 'dia'"):
        B.to_scipy("dia")
    torch = pytest.importorskip("torch")
    t = B.to_torch()
    assert t.layout == torch.sparse_bsr
    np.testing.assert_array_equal(t.to_dense().numpy(), W)
    np.testing.assert_array_equal(B.to_torch("dense").numpy(), W)
    ragged = BlockSparse.from_dense(_rand((5, 6), seed=1), (4, 4))
    assert ragged.to_torch().layout == torch.sparse_csr
    np.testing.assert_array_equal(ragged.to_torch().to_dense().numpy(), ragged.todense())


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(indptr=[0, 1], indices=[0], values=np.zeros((1, 2, 2), np.int64)), TypeError, "int64"),
    (dict(indptr=[0, 1, 1], indices=[0], values=np.zeros((1, 2, 2))), ValueError, r"indptr must have shape \(2,\)"),
    (dict(indptr=[1, 1], indices=[], values=np.zeros((0, 2, 2))), ValueError, "start at 0"),
    (dict(indptr=[0, 2], indices=[0], values=np.zeros((1, 2, 2))), ValueError, r"indices must have shape \(2,\)"),
    (dict(indptr=[0, 1], indices=[0], values=np.zeros((1, 2, 3))), ValueError, r"values must have shape \(1, 2, 2\)"),
    (dict(indptr=[0, 1], indices=[5], values=np.zeros((1, 2, 2))), ValueError, r"indices must lie in \[0, 2\)"),
    (dict(indptr=[0, 2], indices=[1, 0], values=np.zeros((2, 2, 2))), ValueError, "sorted and unique"),
    (dict(indptr=[0, 2], indices=[1, 1], values=np.zeros((2, 2, 2))), ValueError, "sorted and unique"),
])
def test_block_validate_errors(kwargs, err, match):
    with pytest.raises(err, match=match):
        BlockSparse(shape=(2, 4), block=(2, 2), **kwargs)


def test_block_padding_must_be_zero_and_bad_block():
    vals = np.ones((1, 2, 2))
    with pytest.raises(ValueError, match="padding rows"):
        BlockSparse([0, 1], [0], vals, (1, 2), (2, 2))
    with pytest.raises(ValueError, match="padding columns"):
        BlockSparse([0, 1], [0], vals, (2, 1), (2, 2))
    with pytest.raises(ValueError, match=r"1 <= r, c <= 128"):
        BlockSparse.from_dense(np.zeros((4, 4)), (0, 2))
    with pytest.raises(ValueError, match=r"1 <= r, c <= 128"):
        BlockSparse.from_dense(np.zeros((4, 4)), 129)
    with pytest.raises(ValueError, match=r"layout must have shape \(2, 2\)"):
        BlockSparse.from_dense(np.zeros((4, 4)), 2, layout=np.ones((3, 2), bool))
    with pytest.raises(TypeError, match="W has dtype int64"):
        BlockSparse.from_dense(np.zeros((4, 4), np.int64), 2)
    with pytest.raises(TypeError, match="complex128"):
        BlockSparse.from_dense(np.zeros((4, 4), np.complex128), 2)
    with pytest.raises(ValueError, match="W must be 2-D"):
        BlockSparse.from_dense(np.zeros(4), 2)


def test_block_with_values():
    B = BlockSparse.from_dense(_rand((8, 8), seed=2), 4)
    C = B.with_values(2 * B.values)
    np.testing.assert_array_equal(C.todense(), 2 * B.todense())
    with pytest.raises(ValueError, match="values must have shape"):
        B.with_values(np.zeros((1, 4, 4)))


# ------------------------------------------------------------------ HSS / NM
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("spec", ["2:4", "1:4", "3:4->2:4", "4:6->1:4", "2:3->1:2->2:2", "1:1"])
@pytest.mark.parametrize("shape", [(7, 37), (16, 48), (3, 2), (0, 5), (4, 0)])
def test_hss_roundtrip(dtype, spec, shape):
    p = HSSPattern.parse(spec)
    W = _hss_matrix(shape, spec, dtype, seed=shape[1])
    H = HSS.from_dense(W, p)
    M, K = shape
    n_top = -(-K // p.span)
    Gs = tuple(g for g, _ in p.levels)
    assert H.values.shape == (M, n_top) + Gs and H.dtype == dtype
    for i, q in enumerate(H.positions):
        assert q.dtype == np.uint8 and q.shape == (M, n_top) + Gs[:i + 1]
    np.testing.assert_array_equal(H.todense(), W)
    # the column formula of the HSS layout, recomputed independently
    cols = np.zeros(H.values.shape, dtype=np.int64) + (np.arange(n_top) * p.span).reshape(1, -1, *([1] * len(Gs)))
    for i, q in enumerate(H.positions):
        cols += q.astype(np.int64).reshape(q.shape + (1,) * (len(Gs) - 1 - i)) * p.strides[i]
    np.testing.assert_array_equal(H.columns(), cols.reshape(M, n_top * p.kept))
    assert H.nnz == int(np.sum(cols < K))
    assert H.density == pytest.approx(H.nnz / (M * K) if M * K else 0.0)
    np.testing.assert_array_equal(H.to_coo().todense(), W)
    np.testing.assert_array_equal(H.to_scipy("csr").toarray(), W)
    np.testing.assert_array_equal(H.to_scipy("bsr").toarray(), W)
    assert H.nbytes == H.values.nbytes + sum(q.size for q in H.positions)
    assert H.metadata_bits == p.metadata_bits(M, K)


def test_hss_density_formula_divisible():
    for spec in ["2:4", "3:4->2:4", "4:6->1:4", "1:2->1:2->1:2"]:
        p = HSSPattern.parse(spec)
        H = HSS.from_dense(_hss_matrix((4, 2 * p.span), spec), p)
        assert H.density == pytest.approx(p.density)
        assert H.nnz == H.values.size


def test_hss_from_dense_rejects_violations():
    with pytest.raises(ValueError, match="does not satisfy the pattern 2:4"):
        HSS.from_dense(np.ones((2, 8)), "2:4")
    with pytest.raises(ValueError, match="does not satisfy the pattern 1:2->2:2"):
        HSS.from_dense(np.array([[1., 1., 1., 0.]]), "1:2->2:2")
    with pytest.raises(TypeError, match="int32"):
        HSS.from_dense(np.ones((2, 8), np.int32), "2:4")
    with pytest.raises(ValueError, match="level 0 '3:2'"):
        HSS.from_dense(np.ones((2, 8)), "3:2")


def test_hss_validate_errors():
    H = HSS.from_dense(_hss_matrix((3, 16), "3:4->2:4"), "3:4->2:4")
    v, (p0, p1) = H.values, H.positions
    with pytest.raises(ValueError, match=r"values must have shape \(3, 1, 3, 2\)"):
        HSS(v[:, :, :2], (p0, p1), (3, 16), "3:4->2:4")
    with pytest.raises(ValueError, match="positions must hold 2 arrays"):
        HSS(v, (p0,), (3, 16), "3:4->2:4")
    with pytest.raises(TypeError, match=r"positions\[1\] must be uint8"):
        HSS(v, (p0, p1.astype(np.int16)), (3, 16), "3:4->2:4")
    bad = p1.copy()
    bad[..., 0] = bad[..., 1]
    with pytest.raises(ValueError, match="strictly increasing"):
        HSS(v, (p0, bad), (3, 16), "3:4->2:4")
    big = p0.copy()
    big[0, 0, -1] = 4
    with pytest.raises(ValueError, match=r"positions\[0\] holds 4 >= H_0 = 4"):
        HSS(v, (big, p1), (3, 16), "3:4->2:4")
    with pytest.raises(TypeError, match="tuple of uint8 arrays"):
        HSS(v, p0, (3, 16), "3:4->2:4")
    # a value stored in the padding (column >= K) is rejected
    vals = np.ones((1, 1, 2))
    pos = np.array([[[2, 3]]], dtype=np.uint8)
    with pytest.raises(ValueError, match="padding"):
        NM(vals, pos, (1, 3), 2, 4)


def test_nm_layout_and_errors():
    W = _hss_matrix((6, 21), "2:8", np.float32, seed=5)
    A = NM.from_dense(W, 2, 8)
    assert (A.n, A.m) == (2, 8)
    assert A.values.shape == (6, 3, 2) and A.positions.shape == (6, 3, 2)
    assert A.positions.dtype == np.uint8
    np.testing.assert_array_equal(A.todense(), W)
    cols = np.arange(3)[None, :, None] * 8 + A.positions
    recon = np.zeros((6, 24), np.float32)
    np.put_along_axis(recon, cols.reshape(6, -1), A.values.reshape(6, -1), axis=1)
    np.testing.assert_array_equal(recon[:, :21], W)
    assert "n=2 m=8" in repr(A)
    B = NM(A.values, A.positions, A.shape, 2, 8)  # bare positions array accepted
    np.testing.assert_array_equal(B.todense(), W)
    assert isinstance(A.with_values(A.values * 3), NM)
    np.testing.assert_array_equal(A.with_values(A.values * 3).todense(), 3 * W)
    with pytest.raises(ValueError, match=r"1 <= n <= m <= 32, got n=3, m=2"):
        NM.from_dense(W, 3, 2)
    with pytest.raises(ValueError, match=r"got n=1, m=33"):
        NM.from_dense(W, 1, 33)
    with pytest.raises(ValueError, match=r"got n=0, m=4"):
        NM.from_dense(W, 0, 4)
    with pytest.raises(TypeError, match="n and m must be ints"):
        NM.from_dense(W, 2.0, 4)


def test_select_hss_nonzero_fills_lowest_free_slots():
    W = np.array([[0., 0., 0., 5.]])
    vals, (pos,) = select_hss(W, HSSPattern.parse("2:4"), by="nonzero")
    assert pos.tolist() == [[[0, 3]]] and vals.tolist() == [[[0.0, 5.0]]]
    with pytest.raises(ValueError, match="unknown selection 'random'"):
        select_hss(W, HSSPattern.parse("2:4"), by="random")


def test_backend_names():
    H = HSS.from_dense(np.eye(4), "1:4")
    assert H.backend == "auto"
    H.backend = "dense"
    assert H.backend == "dense"
    with pytest.raises(ValueError, match="valid backends: auto, sparse, dense"):
        H.backend = "gpu"
