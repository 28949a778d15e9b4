"""einsum's per-call shortcuts give the same results as the paths they shortcut.

* all-dense products check their operands for inf/nan only when the BLAS result is not
  finite (_dense.densify_checked): NumPy's values wherever an inf or nan meets a zero, a
  finite overflow keeps the BLAS result;
* the cached dense-pair layout (_dense.dense_pair_layout) for every operand layout;
* FrozenSizes' cached hash stays out of pickles (string hashes differ between processes).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import flexsparse as fs
from flexsparse.contract.parser import FrozenSizes, parse_einsum

SPECS = [("ij,jk->ik", (5, 6), (6, 4)), ("ip,i->i", (4, 5), (4,)), ("abQ,icQ->abic", (3, 3, 5), (2, 3, 5)),
         ("ij,jk->", (3, 4), (4, 2)), ("ij,ij->i", (3, 4), (3, 4)), ("ij,kl->ijkl", (2, 3), (2, 2)),
         ("ij,jk->ik", (3, 0), (0, 2)), ("i,j->i", (3,), (0,)), ("bij,bjk->bik", (2, 3, 4), (2, 4, 3))]


def _same(got, ref):
    got = np.asarray(got.todense() if hasattr(got, "todense") else got)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[~np.isnan(got)], ref[~np.isnan(ref)], rtol=1e-12)


@pytest.mark.parametrize("spec,sa,sb", SPECS)
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_dense_operand_nonfinite_like_numpy(spec, sa, sb, value):
    rng = np.random.default_rng(3)
    for trial in range(6):
        a, b = rng.standard_normal(sa), rng.standard_normal(sb)
        a[rng.random(sa) < 0.4] = 0
        b[rng.random(sb) < 0.4] = 0
        target = (a, b)[trial % 2]
        if target.size:
            target[tuple(rng.integers(0, s) for s in target.shape)] = value
        with np.errstate(invalid="ignore", over="ignore"):
            ref = np.einsum(spec, a, b)
            _same(fs.einsum(spec, a, b), ref)
            if a.ndim and a.size:
                _same(fs.einsum(spec, fs.as_coo(a), b, format="dense"), ref)


def test_dense_overflow_keeps_the_product():
    """Finite operands whose product overflows: the result is the BLAS product (inf where it
    overflows), not a re-evaluation; it agrees with NumPy's."""
    a = np.full((3, 4), 1e300)
    b = np.full((4, 2), 1e10)
    b[0, 0] = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        got = fs.einsum("ij,jk->ik", a, b)
        ref = np.einsum("ij,jk->ik", a, b)
    assert np.isinf(got).all()
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("spec", ["abQ,icQ->abic", "Qab,Qic->abic", "aQb,icQ->bica", "bij,bjk->bik", "ji,kj->ik"])
def test_dense_pair_layouts(order, spec):
    rng = np.random.default_rng(5)
    sizes = dict(a=3, b=4, i=2, c=5, Q=6, j=3, k=2)
    lhs, rhs = spec.split("->")[0].split(",")
    x = np.asarray(rng.standard_normal([sizes[c] for c in lhs]), order=order)
    y = np.asarray(rng.standard_normal([sizes[c] for c in rhs]), order=order)
    for _ in range(2):  # the second call takes the cached layout
        np.testing.assert_allclose(fs.einsum(spec, x, y), np.einsum(spec, x, y), rtol=1e-12)
    # a strided view that is neither layout: one copy, same values
    np.testing.assert_allclose(fs.einsum(spec, x[::1, ...], y), np.einsum(spec, x, y), rtol=1e-12)


def test_int_and_mixed_dtype_pairs():
    rng = np.random.default_rng(6)
    x = rng.integers(-5, 5, (3, 4)).astype(np.int32)
    y = rng.integers(-5, 5, (4, 2)).astype(np.int32)
    np.testing.assert_array_equal(fs.einsum("ij,jk->ik", x, y), np.einsum("ij,jk->ik", x, y))
    got = fs.einsum("ij,jk->ik", x.astype(np.float32), y.astype(">f8"))
    assert got.dtype == np.einsum("ij,jk->ik", x.astype(np.float32), y.astype(">f8")).dtype
    np.testing.assert_allclose(got, x @ y)


def test_frozen_sizes_hash_not_pickled():
    s = FrozenSizes({"i": 2, "j": 3})
    h = hash(s)
    t = pickle.loads(pickle.dumps(s))
    assert t._hash is None  # recomputed in the receiving process
    assert t == s and hash(t) == h
    spec = parse_einsum("ij,jk->ik", [(2, 3), (3, 4)])
    hash(spec)
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_three_dense_operands_scalar_result_nonfinite():
    """Three dense operands (NumPy's optimized einsum path) with a 0-d result: an inf meeting
    zeros still gives NumPy's value."""
    a = np.array([np.inf, 1.0, 0.0])
    b = np.array([0.0, 2.0, 3.0])
    c = np.array([1.0, 1.0, 1.0])
    with np.errstate(invalid="ignore"):
        ref = np.einsum("i,i,i->", a, b, c)
        got = fs.einsum("i,i,i->", a, b, c)
    assert np.isnan(ref) and np.isnan(got)



@pytest.mark.parametrize("out", ["abic", "icab", "aibc"])
def test_auto_format_counts_a_permuted_result(out):
    """format="auto" decides on the real nnz of a dense result whose output order is not the
    GEMM's (a transposed view): a product that is mostly zero comes back sparse, a full one
    dense, and both equal NumPy's."""
    rng = np.random.default_rng(5)
    spec = "abQ,icQ->" + out
    a = rng.standard_normal((40, 3, 6))
    a[16:] = 0  # 40% of the rows (dense enough for BLAS)
    b = rng.standard_normal((2, 3, 6))
    b[1] = 0  # 50%: 20% of the output is non-zero -> COO
    got = fs.einsum(spec, fs.as_coo(a), fs.as_coo(b))
    assert isinstance(got, fs.COO) and got.nnz == 16 * 3 * 3
    np.testing.assert_allclose(got.todense(), np.einsum(spec, a, b), atol=1e-12)
    b = rng.standard_normal((2, 3, 6))
    full = fs.einsum(spec, fs.as_coo(a), fs.as_coo(b))
    assert isinstance(full, np.ndarray)
    np.testing.assert_allclose(full, np.einsum(spec, a, b), atol=1e-12)
