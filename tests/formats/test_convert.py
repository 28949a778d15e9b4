"""Round trips between COO and NumPy, every SciPy class, pydata/sparse and torch."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings

from flexsparse.formats.convert import (
    SCIPY_FORMATS,
    as_coo,
    from_numpy,
    from_pydata,
    from_scipy,
    from_torch,
    to_numpy,
    to_pydata,
    to_scipy,
    to_torch,
)
from flexsparse.formats.coo import COO
from flexsparse.formats.fiber import CSF

from .test_coo import DTYPES, dense_arrays, make_dense

DENSITIES = [0.0, 0.1, 1.0]
SHAPES_2D = [(5, 7), (1, 9), (6, 1), (0, 3)]


@settings(max_examples=40, deadline=None)
@given(dense_arrays())
def test_numpy_roundtrip(a):
    t = from_numpy(a)
    np.testing.assert_array_equal(to_numpy(t), a)
    assert to_numpy(t).dtype == a.dtype
    np.testing.assert_array_equal(as_coo(a).todense(), a)


@pytest.mark.parametrize("fmt", SCIPY_FORMATS)
@pytest.mark.parametrize("kind", ["array", "matrix"])
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_scipy_every_class_roundtrip(fmt, kind, density, dtype):
    a = make_dense(np.random.default_rng(11), (5, 7), density, dtype)
    m = getattr(sp, f"{fmt}_{kind}")(a)
    t = from_scipy(m)
    assert t.shape == a.shape and t.dtype == a.dtype
    np.testing.assert_array_equal(t.todense(), a)
    np.testing.assert_array_equal(as_coo(m).todense(), a)
    out = to_scipy(t, fmt, matrix=(kind == "matrix"))
    assert out.format == fmt
    assert isinstance(out, sp.spmatrix) == (kind == "matrix")
    np.testing.assert_array_equal(out.toarray(), a)


@pytest.mark.parametrize("shape", SHAPES_2D)
def test_scipy_ragged_and_empty_shapes(shape):
    a = make_dense(np.random.default_rng(1), shape, 0.4, np.float64)
    for fmt in SCIPY_FORMATS:
        np.testing.assert_array_equal(to_scipy(as_coo(a), fmt).toarray(), a)


def test_scipy_duplicates_and_explicit_zeros_kept():
    m = sp.coo_array((np.array([1.0, 2.0, 0.0]), (np.array([0, 0, 1]), np.array([1, 1, 0]))), shape=(2, 2))
    t = from_scipy(m)
    assert t.nnz == 3 and not t.canonical
    np.testing.assert_array_equal(t.todense(), m.toarray())
    c = t.sum_duplicates()
    np.testing.assert_array_equal(to_scipy(c, "csr").toarray(), m.toarray())


def test_scipy_nd_coo_array():
    a = make_dense(np.random.default_rng(3), (3, 4, 5), 0.3, np.float64)
    s = to_scipy(as_coo(a), "coo")
    assert s.shape == (3, 4, 5)
    np.testing.assert_array_equal(s.toarray(), a)
    np.testing.assert_array_equal(from_scipy(s).todense(), a)
    with pytest.raises(ValueError, match=r"scipy format 'csr' needs a 2-D tensor, got shape \(3, 4, 5\)"):
        to_scipy(as_coo(a), "csr")
    with pytest.raises(ValueError, match="unknown scipy format 'xyz'; valid formats: coo, csr"):
        to_scipy(as_coo(a[0]), "xyz")


@pytest.mark.parametrize("fmt", ["coo", "gcxs"])
@pytest.mark.parametrize("shape", [(4,), (3, 5), (2, 3, 4), (2, 1, 3, 2, 2)])
@pytest.mark.parametrize("density", DENSITIES)
def test_pydata_roundtrip(fmt, shape, density):
    sparse = pytest.importorskip("sparse")
    a = make_dense(np.random.default_rng(4), shape, density, np.float64)
    p = to_pydata(as_coo(a), fmt)
    assert isinstance(p, sparse.COO if fmt == "coo" else sparse.GCXS)
    np.testing.assert_array_equal(p.todense(), a)
    t = from_pydata(p)
    np.testing.assert_array_equal(t.todense(), a)
    np.testing.assert_array_equal(as_coo(p).todense(), a)


def test_pydata_errors():
    sparse = pytest.importorskip("sparse")
    p = sparse.COO.from_numpy(np.eye(3), fill_value=0).astype(float)
    p = sparse.COO(p.coords, p.data, shape=p.shape, fill_value=1.0)
    with pytest.raises(ValueError, match="fill_value 1.0; only 0 is representable"):
        from_pydata(p)
    with pytest.raises(ValueError, match="unknown pydata format 'csr'; valid formats: coo, gcxs"):
        to_pydata(as_coo(np.eye(2)), "csr")
    with pytest.raises(TypeError, match="from_pydata expects a pydata sparse array, got ndarray"):
        from_pydata(np.eye(2))


@pytest.mark.parametrize("layout", ["coo", "dense"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("density", DENSITIES)
def test_torch_roundtrip(layout, dtype, density):
    torch = pytest.importorskip("torch")
    a = make_dense(np.random.default_rng(6), (3, 4, 2), density, dtype)
    x = to_torch(as_coo(a), layout)
    assert x.layout == (torch.sparse_coo if layout == "coo" else torch.strided)
    np.testing.assert_array_equal(x.to_dense().numpy(), a)
    np.testing.assert_array_equal(from_torch(x).todense(), a)
    np.testing.assert_array_equal(as_coo(x).todense(), a)


def test_torch_csr_and_uncoalesced():
    torch = pytest.importorskip("torch")
    a = make_dense(np.random.default_rng(8), (6, 5), 0.3, np.float64)
    x = to_torch(as_coo(a), "csr")
    assert x.layout == torch.sparse_csr
    np.testing.assert_array_equal(from_torch(x).todense(), a)
    np.testing.assert_array_equal(from_torch(torch.from_numpy(a).to_sparse_csc()).todense(), a)
    u = torch.sparse_coo_tensor(torch.tensor([[1, 0, 1], [2, 0, 2]]), torch.tensor([1.0, 2.0, 3.0]), (2, 3),
                                check_invariants=True)
    t = from_torch(u)
    np.testing.assert_array_equal(t.todense(), u.to_dense().numpy())
    with pytest.raises(ValueError, match=r"torch CSR needs a 2-D tensor, got shape \(2, 2, 2\)"):
        to_torch(as_coo(np.ones((2, 2, 2))), "csr")
    with pytest.raises(ValueError, match="unknown torch layout 'bsr'; valid layouts: coo, csr, dense"):
        to_torch(as_coo(np.ones((2, 2))), "bsr")
    hybrid = torch.sparse_coo_tensor(torch.tensor([[0, 1]]), torch.ones(2, 3), (2, 3), check_invariants=True)
    with pytest.raises(ValueError, match="hybrid torch sparse tensors"):
        from_torch(hybrid)


def test_as_coo_dispatch_and_errors():
    t = as_coo(np.eye(3))
    assert as_coo(t) is t
    c = CSF.from_coo(t)
    np.testing.assert_array_equal(as_coo(c).todense(), np.eye(3))
    assert as_coo(2.5).todense() == 2.5
    for bad in ([1, 2], "abc", {1: 2}, None):
        with pytest.raises(TypeError, match=f"cannot convert {type(bad).__name__} to a flexsparse COO"):
            as_coo(bad)
    with pytest.raises(TypeError, match="from_scipy expects a scipy.sparse matrix or array, got ndarray"):
        from_scipy(np.eye(2))
    assert isinstance(as_coo(np.float32(0)), COO)
