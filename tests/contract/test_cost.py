"""Operand statistics and pairwise cost estimates against exact counts (NumPy/SciPy oracles)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from flexsparse.contract.cost import (
    METHODS,
    coo_bytes,
    estimate_pair,
    method_cost,
    project_stats,
    result_stats,
    squeeze_stats,
)
from flexsparse.contract.parser import FrozenSizes
from flexsparse.contract.stats import SKETCH_WIDTH, OperandStats, dense_stats, operand_stats, rows_per_bucket
from flexsparse.formats.coo import COO


def to_coo(m) -> COO:
    m = sp.coo_matrix(m)
    return COO(np.vstack([m.row, m.col]), m.data, m.shape)


def tensor(shape, nnz, rng, alpha=0.0, dtype=np.float64) -> COO:
    """Random n-D COO; coordinates uniform (alpha=0) or Zipf-like with exponent alpha per mode."""
    cols = []
    for n in shape:
        if alpha:
            p = 1.0 / np.arange(1, n + 1) ** alpha
            cols.append(rng.choice(n, nnz, p=p / p.sum()))
        else:
            cols.append(rng.integers(0, n, nnz))
    c = np.array(cols).reshape(len(shape), nnz)
    _, first = np.unique(np.ravel_multi_index(c, shape), return_index=True)
    c = c[:, np.sort(first)]
    return COO(c, np.ones(c.shape[1], dtype=dtype), shape)


def exact_counts(a_idx, a, b_idx, b, out):
    """(multiply-adds of nonzero pairs, nnz of the result) on the sparsity patterns."""
    pa = (np.asarray(a.todense() if hasattr(a, "todense") else a) != 0).astype(np.float64)
    pb = (np.asarray(b.todense() if hasattr(b, "todense") else b) != 0).astype(np.float64)
    flops = np.einsum(f"{a_idx},{b_idx}->", pa, pb)
    nnz = np.count_nonzero(np.einsum(f"{a_idx},{b_idx}->{out}", pa, pb))
    return float(flops), int(nnz)


def uniform_only(s: OperandStats) -> OperandStats:
    """The same operand seen through a density-only model (no slice counts)."""
    return OperandStats(s.indices, s.shape, s.nnz, False, s.itemsize,
                        FrozenSizes({i: s.dim(i) for i in s.indices}), {}, True)


def within(est, exact, factor):
    if exact == 0:
        return est == 0
    return exact / factor <= est <= exact * factor


# ---------------------------------------------------------------------------------- stats
def test_operand_stats_coo_exact():
    a = np.array([[1.0, 0, 2, 0], [0, 0, 0, 0], [0, 3, 4, 5]])
    s = operand_stats("ij", to_coo(a))
    assert s.nnz == 5 and not s.is_dense and s.exact
    assert s.shape == (3, 4) and s.size == 12 and s.density == pytest.approx(5 / 12)
    np.testing.assert_array_equal(s.slice_counts("i"), np.count_nonzero(a, axis=1))
    np.testing.assert_array_equal(s.slice_counts("j"), np.count_nonzero(a, axis=0))
    assert dict(s.distinct) == {"i": 2, "j": 4}
    assert not s.slice_counts("i").flags.writeable
    # uniform non-empty slices -> skew 1; one hub slice -> larger
    assert operand_stats("ij", to_coo(np.eye(5))).skew("i") == pytest.approx(1.0)
    hub = np.zeros((5, 5))
    hub[0] = 1
    hub[1, 0] = 1
    assert operand_stats("ij", to_coo(hub)).skew("i") > 1.3


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.complex128])
def test_operand_stats_dtypes_and_dense(dtype):
    a = (np.arange(12).reshape(3, 4) % 3).astype(dtype)
    s = operand_stats("ij", to_coo(a))
    assert s.nnz == np.count_nonzero(a) and s.itemsize == np.dtype(dtype).itemsize
    d = operand_stats("ij", a)
    assert d.is_dense and d.nnz == 12 and d.density == 1.0 and d.itemsize == np.dtype(dtype).itemsize
    np.testing.assert_array_equal(d.slice_counts("j"), [3.0] * 4)


def test_operand_stats_diagonal_scalar_scipy_and_empty():
    a = np.array([[1.0, 0, 2], [0, 0, 0], [4, 3, 5]])
    d = operand_stats("ii", to_coo(a))
    assert d.indices == "i" and d.nnz == np.count_nonzero(np.diag(a))
    t = np.zeros((3, 3, 2))
    t[0, 0, 1] = t[1, 2, 0] = t[2, 2, 1] = t[2, 2, 0] = 1
    s3 = operand_stats("iji", COO.from_numpy(t.transpose(0, 2, 1).copy()))
    assert s3.indices == "ij" and s3.shape == (3, 2)
    assert s3.nnz == np.count_nonzero(np.einsum("iji->ij", t.transpose(0, 2, 1)))
    assert operand_stats("ii", np.ones((4, 4))).nnz == 4
    assert operand_stats("", np.float64(3.0)).nnz == 1 and operand_stats("", 2.0).shape == ()
    m = sp.random(30, 40, 0.1, random_state=0, format="csr")
    s = operand_stats("ij", m)
    assert s.nnz == m.nnz and s.distinct["i"] == np.count_nonzero(m.getnnz(axis=1))
    e = operand_stats("ij", COO.empty((5, 6)))
    assert e.nnz == 0 and dict(e.distinct) == {"i": 0, "j": 0} and e.density == 0.0


def test_operand_stats_errors():
    with pytest.raises(ValueError, match=r"indices 'ijk' name 3 axes but the operand has 2"):
        operand_stats("ijk", to_coo(np.eye(3)))
    with pytest.raises(ValueError, match=r"indices 'i' name 1 axes but the operand has 2"):
        operand_stats("i", np.eye(3))
    with pytest.raises(ValueError, match=r"index 'i' is repeated in 'ii' with different sizes \(2 != 3\)"):
        operand_stats("ii", to_coo(np.ones((2, 3))))
    with pytest.raises(TypeError, match="non-numeric dtype"):
        operand_stats("i", np.array(["a", "b"]))
    with pytest.raises(TypeError, match="indices must be a str"):
        operand_stats(["i"], np.ones(2))
    with pytest.raises(ValueError, match="must be distinct"):
        OperandStats("ii", (2, 2), 1, False)
    with pytest.raises(ValueError, match="does not match indices"):
        OperandStats("ij", (2,), 1, False)


def test_wide_modes_are_folded_into_the_sketch():
    rng = np.random.default_rng(3)
    n = SKETCH_WIDTH * 3 + 5
    x = tensor((n, 50), 20_000, rng)
    s = operand_stats("ij", x)
    assert s.slice_counts("i").shape == (SKETCH_WIDTH,) and s.slice_counts("i").sum() == x.nnz
    assert s.distinct["i"] == np.unique(x.coords[0]).size
    np.testing.assert_array_equal(rows_per_bucket(n)[:5], [4, 4, 4, 4, 4])
    assert rows_per_bucket(n).sum() == n
    # flops over the folded mode stay close to exact
    y = tensor((n, 60), 20_000, rng)
    e = estimate_pair(s, operand_stats("ik", y), "jk")
    f, nnz = exact_counts_sparse(x, y)
    assert within(e.flops, f, 1.5) and within(e.nnz, nnz, 1.5)


def exact_counts_sparse(x: COO, y: COO):
    """Exact flops / nnz of x^T y (contracting mode 0 of both) with SciPy."""
    a = sp.csr_matrix((np.ones(x.nnz), (x.coords[1], x.coords[0])), shape=(x.shape[1], x.shape[0]))
    b = sp.csr_matrix((np.ones(y.nnz), (y.coords[0], y.coords[1])), shape=y.shape)
    flops = float(np.dot(np.asarray(a.getnnz(axis=0)), np.asarray(b.getnnz(axis=1))))
    return flops, (a @ b).nnz


# ------------------------------------------------------------------------------- estimates
def test_dense_operands_are_exact():
    a, b = dense_stats("ijb", (4, 5, 3)), dense_stats("jkb", (5, 6, 3))
    e = estimate_pair(a, b, "ikb")
    assert e.flops == 4 * 5 * 6 * 3 and e.nnz == 4 * 6 * 3 and e.density == 1.0
    assert e.contracted == "j" and e.batch == "b" and e.dense_flops == 360
    assert e.dense_bytes == 72 * 8 and e.out_shape == (4, 6, 3)
    outer = estimate_pair(dense_stats("i", (3,)), dense_stats("k", (4,)), "ik")
    assert outer.flops == 12 and outer.nnz == 12
    scalar = estimate_pair(dense_stats("", ()), dense_stats("ij", (2, 3)), "ij")
    assert scalar.flops == 6 and scalar.nnz == 6


@pytest.mark.parametrize("density", [0.0, 0.002, 0.01, 0.05, 0.2, 1.0])
def test_uniform_matrices_within_factor_two(density):
    a = sp.random(300, 200, density, random_state=1, format="csr")
    b = sp.random(200, 250, density, random_state=2, format="csr")
    e = estimate_pair(operand_stats("ij", to_coo(a)), operand_stats("jk", to_coo(b)), "ik")
    f, nnz = exact_counts("ij", a, "jk", b, "ik")
    assert e.flops == pytest.approx(f)          # one contracted index, exact sketch: exact
    assert within(e.nnz, nnz, 2.0)
    assert e.nnz <= e.flops and e.nnz <= e.cells
    assert e.density == pytest.approx(e.nnz / (300 * 250))


def test_sparse_times_dense_is_exact():
    a = sp.random(200, 100, 0.01, random_state=4, format="csr")
    e = estimate_pair(operand_stats("ij", to_coo(a)), operand_stats("jk", np.ones((100, 30))), "ik")
    f, nnz = exact_counts("ij", a, "jk", np.ones((100, 30)), "ik")
    assert e.flops == pytest.approx(f) and e.nnz == pytest.approx(nnz)


@pytest.mark.parametrize("a_idx, b_idx, out", [
    ("ijk", "ljk", "il"),     # two contracted indices
    ("ijk", "imn", "jkmn"),   # one contracted index, four free
    ("ijk", "ijn", "ikn"),    # batch i, contracted j
    ("ijk", "lmk", "ijlm"),
    ("ijk", "ljm", "ikjlm"),  # batch j, no contraction
])
def test_uniform_tensors_within_factor_two(a_idx, b_idx, out):
    rng = np.random.default_rng(0)
    x, y = tensor((20, 25, 30), 3000, rng), tensor((20, 25, 30), 3000, rng)
    e = estimate_pair(operand_stats(a_idx, x), operand_stats(b_idx, y), out)
    f, nnz = exact_counts(a_idx, x, b_idx, y, out)
    assert within(e.flops, f, 1.25) and within(e.nnz, nnz, 2.0)


def test_skew_correction_on_power_law_self_product():
    # X X^T with Zipf-distributed columns: hub columns make flops = sum_j nnz(col j)^2.
    rng = np.random.default_rng(1)
    x = tensor((1500, 2000), 15_000, rng, alpha=1.3)
    sx, sxt = operand_stats("ij", x), operand_stats("kj", x)
    m = sp.csr_matrix((np.ones(x.nnz), (x.coords[0], x.coords[1])), shape=x.shape)
    col = np.asarray(m.getnnz(axis=0), dtype=np.float64)
    f, nnz = float(col @ col), (m @ m.T).nnz      # SciPy oracle: sum_j nnz(col j)^2, nnz(X X^T)
    aware = estimate_pair(sx, sxt, "ik")
    naive = estimate_pair(uniform_only(sx), uniform_only(sxt), "ik")
    assert aware.flops == pytest.approx(f)
    assert naive.flops < f / 20                       # density-only model misses the hubs
    assert within(aware.nnz, nnz, 2.0)
    assert abs(math.log(aware.nnz / nnz)) < abs(math.log(naive.nnz / nnz))


def test_skew_correction_on_hub_rows():
    # A has power-law rows: hub rows saturate their output row, the row model sees it.
    rng = np.random.default_rng(2)
    a = tensor((2000, 3000), 20_000, rng, alpha=1.5)
    b = sp.random(3000, 400, 0.01, random_state=5, format="csr")
    sa, sb = operand_stats("ij", a), operand_stats("jk", to_coo(b))
    f, nnz = exact_counts("ij", a, "jk", b, "ik")
    aware = estimate_pair(sa, sb, "ik")
    naive = estimate_pair(uniform_only(sa), uniform_only(sb), "ik")
    assert within(aware.nnz, nnz, 1.5)
    assert abs(math.log(aware.nnz / nnz)) < abs(math.log(naive.nnz / nnz)) / 2


def test_power_law_tensor_self_contraction_within_factor_three():
    rng = np.random.default_rng(4)
    x = tensor((40, 50, 60), 6000, rng, alpha=1.2)
    for a_idx, b_idx, out in [("ijk", "ljk", "il"), ("ijk", "imn", "jkmn"), ("ijk", "ijn", "ikn")]:
        e = estimate_pair(operand_stats(a_idx, x), operand_stats(b_idx, x), out)
        f, nnz = exact_counts(a_idx, x, b_idx, x, out)
        assert within(e.flops, f, 1.5) and within(e.nnz, nnz, 3.0)


def test_empty_operand_gives_zero():
    e = estimate_pair(operand_stats("ij", COO.empty((4, 5))), dense_stats("jk", (5, 6)), "ik")
    assert e.flops == 0 and e.nnz == 0 and e.density == 0 and e.coo_bytes == 0
    z = estimate_pair(dense_stats("ij", (0, 5)), dense_stats("jk", (5, 6)), "ik")
    assert z.cells == 0 and z.nnz == 0 and z.density == 0


def test_bytes_follow_dtype():
    a32 = operand_stats("ij", np.ones((10, 20), dtype=np.float32))
    b32 = operand_stats("jk", np.ones((20, 30), dtype=np.float32))
    e = estimate_pair(a32, b32, "ik")
    assert e.itemsize == 4 and e.dense_bytes == 300 * 4
    assert e.coo_bytes == coo_bytes(300, (10, 30), 4) == 300 * (2 * 4 + 4)
    c = estimate_pair(a32, operand_stats("jk", np.ones((20, 30), dtype=np.complex128)), "ik")
    assert c.itemsize == 16 and c.dense_bytes == 300 * 16
    assert coo_bytes(10, (2**40, 3), 8) == 10 * (2 * 8 + 8)   # int64 coordinates for a huge mode


def test_estimate_errors():
    a, b = dense_stats("ij", (2, 3)), dense_stats("jk", (3, 4))
    with pytest.raises(ValueError, match="out index 'z' is in neither operand"):
        estimate_pair(a, b, "iz")
    with pytest.raises(ValueError, match="repeat an index"):
        estimate_pair(a, b, "iik")
    with pytest.raises(ValueError, match="index 'k' is in one operand only and not kept"):
        estimate_pair(a, b, "i")
    with pytest.raises(ValueError, match=r"index 'j' has size 3 in lhs but 5 in rhs"):
        estimate_pair(a, dense_stats("jk", (5, 4)), "ik")
    with pytest.raises(ValueError, match="unknown method 'fast'; valid methods: dense, gustavson, dot, spmm"):
        method_cost("fast", estimate_pair(a, b, "ik"), a, b)


def test_method_costs_rank_sensibly():
    a = operand_stats("ij", to_coo(sp.random(500, 500, 0.002, random_state=1)))
    b = operand_stats("jk", to_coo(sp.random(500, 500, 0.002, random_state=2)))
    e = estimate_pair(a, b, "ik")
    costs = {m: method_cost(m, e, a, b) for m in METHODS}
    assert costs["gustavson"] < costs["dense"] and costs["gustavson"] < costs["dot"]
    dot = estimate_pair(a, operand_stats("ij", to_coo(sp.random(500, 500, 0.002, random_state=3))), "")
    assert method_cost("dot", dot, a, a) < method_cost("dense", dot, a, a)


def test_result_project_and_squeeze_stats():
    a = operand_stats("ij", to_coo(sp.random(50, 40, 0.05, random_state=1)))
    b = operand_stats("jk", to_coo(sp.random(40, 30, 0.05, random_state=2)))
    e = estimate_pair(a, b, "ik")
    r = result_stats(e, dense=False)
    assert r.indices == "ik" and r.shape == (50, 30) and not r.exact and r.nnz == math.ceil(e.nnz)
    assert r.slice_counts("i").sum() == pytest.approx(e.nnz)
    d = result_stats(e, dense=True)
    assert d.is_dense and d.nnz == 1500
    m = sp.random(60, 70, 0.05, random_state=3, format="csr")
    s = operand_stats("ij", to_coo(m))
    p = project_stats(s, "i")
    assert p.indices == "i" and p.nnz == np.count_nonzero(m.getnnz(axis=1))   # exact for one index
    assert project_stats(s, "ij") is s and project_stats(s, "").nnz == 1
    x = tensor((10, 12, 14), 300, np.random.default_rng(0))
    p2 = project_stats(operand_stats("ijk", x), "ik")
    true = np.count_nonzero(np.asarray(x.todense()).sum(axis=1))
    assert within(p2.nnz, true, 1.5)
    with pytest.raises(ValueError, match="cannot keep index 'z'"):
        project_stats(s, "iz")
    q = squeeze_stats(operand_stats("ij", to_coo(np.ones((1, 5)))), "i")
    assert q.indices == "j" and q.nnz == 5
    with pytest.raises(ValueError, match="cannot squeeze index 'j' of size 5"):
        squeeze_stats(q, "j")
