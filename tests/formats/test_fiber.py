"""CSF: layout, every mode order, round trips and the FLAASH last-mode view, against NumPy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexsparse.formats.coo import COO
from flexsparse.formats.fiber import CSF

from .test_coo import dense_arrays, make_dense


@settings(max_examples=50, deadline=None)
@given(dense_arrays(), st.randoms(use_true_random=False))
def test_roundtrip_any_mode_order(a, rnd):
    t = COO.from_numpy(a)
    order = list(range(a.ndim))
    rnd.shuffle(order)
    c = CSF.from_coo(t, mode_order=order)
    c.validate()
    assert c.nnz == t.nnz and c.dtype == a.dtype and c.shape == a.shape
    np.testing.assert_array_equal(c.todense(), a)
    back = c.to_coo()
    back.validate()
    np.testing.assert_array_equal(back.todense(), a)
    if order == sorted(order):
        assert back.canonical  # identity order: leaves come out sorted and unique
    # nbytes counts values and every index array
    assert c.nbytes == c.values.nbytes + sum(p.nbytes for p in c.fptr) + sum(f.nbytes for f in c.fids)


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_layout_shape_formulas(order):
    a = make_dense(np.random.default_rng(5), (4, 3, 5), 0.3, np.float64)
    c = CSF.from_coo(COO.from_numpy(a), mode_order=order)
    ap = np.transpose(a, order)
    # n_l = number of distinct nonzero prefixes of length l+1 in level order
    nz = np.argwhere(ap != 0)
    n = [1] + [len({tuple(r[: l + 1]) for r in nz}) for l in range(3)]
    for lvl in range(3):
        assert c.fptr[lvl].shape == (n[lvl] + 1,)
        assert c.fids[lvl].shape == (n[lvl + 1],)
    assert c.values.shape == (n[3],)
    np.testing.assert_array_equal(c.values, ap[ap != 0])  # leaves in level-order lexicographic order


def test_duplicates_are_summed():
    t = COO([[1, 0, 1], [2, 1, 2]], [1.0, 2.0, 3.0], shape=(2, 3))
    c = CSF.from_coo(t, mode_order=(1, 0))
    assert c.values.tolist() == [2.0, 4.0]
    np.testing.assert_array_equal(c.todense(), t.todense())


def test_zero_d_one_d_and_empty():
    s = CSF.from_coo(COO.from_numpy(np.float64(3.5)))
    assert s.fptr == [] and s.values.tolist() == [3.5] and s.todense() == 3.5
    v = CSF.from_coo(COO([4, 1], [1.0, 2.0], shape=(6,)))
    assert v.fptr[0].tolist() == [0, 2] and v.fids[0].tolist() == [1, 4]
    e = CSF.from_coo(COO.empty((3, 4, 5)), mode_order=(2, 1, 0))
    assert e.nnz == 0 and [p.tolist() for p in e.fptr] == [[0, 0], [0], [0]]
    np.testing.assert_array_equal(e.todense(), np.zeros((3, 4, 5)))


@settings(max_examples=40, deadline=None)
@given(dense_arrays(), st.randoms(use_true_random=False))
def test_last_mode_fibers_is_csr_over_leading_modes(a, rnd):
    if a.ndim == 0:
        with pytest.raises(ValueError, match="0-D CSF has no fibers"):
            CSF.from_coo(COO.from_numpy(a)).last_mode_fibers()
        return
    order = list(range(a.ndim))
    rnd.shuffle(order)
    f = CSF.from_coo(COO.from_numpy(a), mode_order=order).last_mode_fibers()
    ap = np.transpose(a, order)
    n_f = f.fiber_ptr.shape[0] - 1
    assert f.leading_coords.shape == (a.ndim - 1, n_f)
    rebuilt = np.zeros_like(ap)
    for k in range(n_f):
        lead = tuple(int(x) for x in f.leading_coords[:, k])
        seg = slice(f.fiber_ptr[k], f.fiber_ptr[k + 1])
        assert np.all(np.diff(f.last_idx[seg]) > 0)  # sorted, distinct in each fiber
        rebuilt[lead + (f.last_idx[seg],)] = f.values[seg]
    np.testing.assert_array_equal(rebuilt, ap)


def test_flickr_shaped_csf():
    shape = (320_000, 28_000_000, 1_600_000, 731)
    rng = np.random.default_rng(2)
    co = np.vstack([rng.integers(0, n, 3000) for n in shape])
    co[0, :1000] = 7  # many nonzeros share a leading slice
    t = COO(co, rng.random(3000), shape)
    c = CSF.from_coo(t, mode_order=(3, 1, 0, 2))
    back = c.to_coo().sum_duplicates()
    ref = t.sum_duplicates()
    np.testing.assert_array_equal(back.coords, ref.coords)
    np.testing.assert_array_equal(back.data, ref.data)


@pytest.mark.parametrize("mutate, msg", [
    (lambda c: c.fptr.__setitem__(1, np.array([0, 2, 9])), r"fptr\[1\] must start at 0 and end at"),
    (lambda c: c.fids.__setitem__(0, np.array([0, 9])), r"fids\[0\] has coordinate 9 out of bounds for mode 0"),
    (lambda c: c.fids.__setitem__(1, c.fids[1][::-1].copy()), r"fids\[1\] is not strictly increasing"),
    (lambda c: setattr(c, "values", c.values[:-1]), r"values must have shape \[nnz="),
    (lambda c: setattr(c, "mode_order", (0, 0)), r"mode_order \(0, 0\) is not a permutation"),
])
def test_validate_errors(mutate, msg):
    t = COO([[0, 0, 1, 1], [0, 2, 1, 2]], [1.0, 2.0, 3.0, 4.0], shape=(2, 3))
    c = CSF.from_coo(t)
    c.validate()
    mutate(c)
    with pytest.raises(ValueError, match=msg):
        c.validate()


def test_from_coo_errors():
    with pytest.raises(ValueError, match=r"mode_order \(0, 2\) is not a permutation of the 2 modes"):
        CSF.from_coo(COO.from_numpy(np.eye(2)), mode_order=(0, 2))
    with pytest.raises(TypeError, match="CSF.from_coo expects a COO, got ndarray"):
        CSF.from_coo(np.eye(2))


def test_repr_and_density():
    c = CSF.from_coo(COO.from_numpy(np.eye(4)), mode_order=(1, 0))
    assert repr(c) == "<CSF shape=(4, 4) nnz=4 density=25% dtype=float64 mode_order=(1, 0)>"
    assert c.density == 0.25
