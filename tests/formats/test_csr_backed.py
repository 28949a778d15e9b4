"""A 2-D COO backed by a CSR: coordinates built only when read, lazy per-row sorting."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import flexsparse as fs
from flexsparse.formats.coo import COO
from flexsparse.formats.csr import CSR
from flexsparse.formats.fiber import CSF


def _jumbled_csr(rng, shape=(40, 50), density=0.1, dtype=np.float64):
    m = sp.random_array(shape, density=density, rng=rng, format="csr", dtype=dtype)
    perm = np.concatenate([rng.permutation(np.arange(m.indptr[i], m.indptr[i + 1]))
                           for i in range(shape[0])]).astype(np.int64)
    return CSR(m.indptr.astype(np.int64), m.indices[perm], m.data[perm], shape, sorted_indices=False), m


def test_from_csr_is_lazy_and_exact():
    rng = np.random.default_rng(0)
    csr, m = _jumbled_csr(rng)
    t = COO.from_csr(csr)
    assert t._coords is None and t.data is csr.data and not t.canonical
    assert t.nbytes == csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes
    np.testing.assert_array_equal(t.todense(), m.toarray())  # from the CSR, no coordinates
    assert t._coords is None
    assert t.to_csr(sort=False) is csr
    c = t.coords  # built once, in the CSR's (jumbled) order
    assert c.dtype == np.int32 and t.coords is c
    np.testing.assert_array_equal(c[0], np.repeat(np.arange(40), np.diff(csr.indptr)))
    np.testing.assert_array_equal(c[1], csr.indices)
    t.validate()


def test_sum_duplicates_sorts_rows_not_coordinates():
    rng = np.random.default_rng(1)
    csr, m = _jumbled_csr(rng)
    t = COO.from_csr(csr)
    s = t.sum_duplicates()
    assert s.canonical and s._csr is not None and s._csr.sorted_indices
    s.validate()
    ref = COO.from_numpy(m.toarray())
    np.testing.assert_array_equal(s.coords, ref.coords)
    np.testing.assert_array_equal(s.data, ref.data)
    assert not np.shares_memory(s.data, csr.data)  # the jumbled result is left as it was


def test_value_maps_keep_the_compressed_layout():
    rng = np.random.default_rng(2)
    csr, m = _jumbled_csr(rng)
    t = COO.from_csr(csr)
    for u, ref in ((t.astype(np.complex128), m.toarray().astype(np.complex128)), (-t, -m.toarray()),
                   (2 * t, 2 * m.toarray())):
        assert u._coords is None and u._csr is not None
        np.testing.assert_array_equal(u.todense(), ref)


def test_to_csr_of_plain_coos():
    rng = np.random.default_rng(3)
    rows, cols = rng.integers(0, 20, 200), rng.integers(0, 15, 200)
    vals = rng.standard_normal(200)
    t = COO(np.vstack([rows, cols]), vals, (20, 15))
    dense = np.zeros((20, 15))
    np.add.at(dense, (rows, cols), vals)
    loose = t.to_csr(sort=False)  # counting sort by row, duplicates kept
    assert not loose.sorted_indices and loose.nnz == 200
    np.testing.assert_allclose(loose.toarray(), dense)
    tight = t.to_csr()
    assert tight.sorted_indices
    np.testing.assert_allclose(tight.toarray(), dense)
    canon = t.sum_duplicates()
    c = canon.to_csr(sort=False)
    assert c.sorted_indices and np.shares_memory(c.data, canon.data)
    with pytest.raises(ValueError, match="to_csr needs a 2-D COO"):
        COO.empty((2, 2, 2)).to_csr()


def test_scipy_csr_and_csc_are_backed_without_copies():
    rng = np.random.default_rng(4)
    m = sp.random_array((30, 25), density=0.2, rng=rng, format="csr")
    t = fs.as_coo(m)
    assert t._csr is not None and t._coords is None and np.shares_memory(t.data, m.data)
    assert t.canonical and np.shares_memory(t._csr.indices, m.indices)
    back = fs.to_scipy(t)
    assert np.shares_memory(back.data, m.data)
    np.testing.assert_array_equal(fs.as_coo(m.tocsc()).todense(), m.toarray())
    np.testing.assert_array_equal(fs.as_coo(sp.csr_matrix(m)).todense(), m.toarray())
    bad = sp.csr_array((np.ones(2), np.array([0, 7]), np.array([0, 1, 2])), shape=(2, 3))
    with pytest.raises(ValueError, match="column indices out of range"):
        fs.as_coo(bad)


def test_csf_from_csr():
    rng = np.random.default_rng(5)
    csr, m = _jumbled_csr(rng, (30, 20), 0.15)
    dense = m.toarray()
    dense[4] = 0
    csr = CSR.from_scipy(sp.csr_array(dense))
    c = CSF.from_csr(csr)
    c.validate()
    np.testing.assert_array_equal(c.todense(), dense)
    assert 4 not in c.fids[0].tolist()


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble, np.bool_, np.int8, np.complex64])
def test_todense_of_every_value_type(dtype):
    # value types numba lacks (float16, longdouble) take NumPy's scatter; duplicates add up
    indptr, indices = np.array([0, 3, 3, 5]), np.array([2, 0, 2, 1, 1])
    data = np.array([1, 2, 3, 4, 5]).astype(dtype)
    expect = np.zeros((3, 3), dtype=dtype)
    np.add.at(expect, (np.repeat(np.arange(3), np.diff(indptr)), indices), data)
    csr = CSR(indptr, indices, data, (3, 3), sorted_indices=False)
    for got in (csr.todense(), COO.from_csr(csr).todense()):
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, expect)


def test_compact_indices_made_once_and_not_pickled():
    """The narrow copy of int64 indices is made on first use and kept (a repeated product
    narrows nothing again); ``compacted`` hands it out without making one; a pickle (a
    distributed panel) leaves it behind."""
    import pickle

    m = CSR.from_scipy(sp.random_array((40, 30), density=0.2, rng=3, format="csr"))
    m64 = CSR(m.indptr, m.indices.astype(np.int64), m.data, m.shape)
    assert m64.compacted() is m64
    narrow = m64.compact_indices()
    assert narrow.indices.dtype == np.int32 and narrow is m64.compact_indices() and m64.compacted() is narrow
    np.testing.assert_array_equal(narrow.indices, m64.indices)
    assert narrow.data is m64.data and narrow.indptr is m64.indptr
    back = pickle.loads(pickle.dumps(m64))
    assert "_compact" not in back.__dict__ and back.compacted() is back
    np.testing.assert_array_equal(back.toarray(), m64.toarray())
    assert m.compact_indices() is m  # already narrow: nothing kept
