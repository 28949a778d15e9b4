"""One regression test per einsum failure class found by fuzzing against NumPy (issue #9).

Each test reproduces the class's example and checks NumPy's answer: value and dtype.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import flexsparse as fs
from flexsparse.contract.plan import OPTIMIZERS

C = fs.COO.from_numpy
inf, nan = np.inf, np.nan


def _same(got, want):
    got = np.asarray(got.todense() if hasattr(got, "todense") else got)
    want = np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(np.nan_to_num(got, nan=0.0), np.nan_to_num(want, nan=0.0), rtol=1e-12)


def _np(spec, *ops):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return np.einsum(spec, *[o.todense() if hasattr(o, "todense") else o for o in ops])


def _fs(spec, *ops, **kw):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fs.einsum(spec, *ops, **kw)


# ------------------------------------------------------------ valid specs rejected
def test_size1_broadcast_on_a_summed_index_dense():
    assert float(fs.einsum("i,i->", np.ones(1), np.arange(3.0))) == 3.0


def test_size1_broadcast_on_a_summed_index_sparse():
    a, b = C(np.eye(4)[:, :1]), C(np.eye(5)[0])
    _same(fs.einsum("ab,b->a", a, b), np.einsum("ab,b->a", np.eye(4)[:, :1], np.eye(5)[0]))


@pytest.mark.parametrize("optimize", sorted(OPTIMIZERS) + [True, False])
def test_index_left_in_one_operand_after_broadcasting_is_summed_by_the_planner(optimize):
    rng = np.random.default_rng(0)
    x, y, z = rng.random((3, 1)), rng.random((4, 5)), rng.random((5, 3))
    got = fs.einsum("ab,bc,cd->ad", C(x), C(y[:1] * (y[:1] > 0.5)), C(z), optimize=optimize)
    _same(got, np.einsum("ab,bc,cd->ad", x, y[:1] * (y[:1] > 0.5), z))


# ------------------------------------------------------------ wrong values
def test_nan_survives_the_tiled_path():
    a, b = C(np.array([[0.0, 1.0]])), C(np.array([[inf], [1.0]]))
    _same(_fs("ij,jk->ik", a, b, memory_limit="1MB"), _np("ij,jk->ik", a, b))


def test_nan_survives_diagonal_and_broadcast_reductions():
    a, v = C(np.array([[0.0, 1.0], [1.0, 0.0]])), np.array([inf, 1.0])
    _same(_fs("ii,i->i", a, v), _np("ii,i->i", a, v))
    _same(_fs("ij,j->i", C(np.array([[0.0], [2.0]])), np.array([inf, 1.0])),
          _np("ij,j->i", np.array([[0.0], [2.0]]), np.array([inf, 1.0])))


def test_complex_infinities_as_numpy():
    a = C(np.array([[0j, 1 + 0j]]))
    b = C(np.array([[complex(inf, 1)], [complex(1, -inf)]]))
    got = _fs("ij,jk->ik", a, b)
    want = _np("ij,jk->ik", a, b)
    for part in (np.real, np.imag):
        _same(part(np.asarray(got.todense() if hasattr(got, "todense") else got)), part(want))


def test_boolean_coo_duplicates_are_one_true_value():
    dup = fs.COO([[0, 0], [0, 0]], [True, True], shape=(1, 1))
    got = fs.einsum("ij,i->", dup, np.array([1]))
    assert got == np.einsum("ij,i->", dup.todense(), np.array([1])) == 1


def test_summed_boolean_operand_is_counted_not_ored():
    ops = (np.ones((2, 2), bool), np.ones((2, 2)), np.ones(1))
    _same(fs.einsum("jw,jm,w->m", *ops), np.array([4.0, 4.0]))
    _same(fs.einsum("jw,jm,w->m", C(ops[0]), C(ops[1]), ops[2]), np.array([4.0, 4.0]))
    both = (np.ones((3, 2), bool), np.ones((3, 2), bool))
    _same(fs.einsum("ij,ij->", C(both[0]), C(both[1])), np.einsum("ij,ij->", *both))   # all-bool: OR


# ------------------------------------------------------------ precision and dtype
@pytest.mark.parametrize("other", [1.0 / 3.0, np.full(5, 1.0 / 3.0)])
def test_float32_meeting_float64_computes_in_float64(other):
    x = np.full(5, 1.0 / 3.0, np.float32)
    spec = "i,->" if np.ndim(other) == 0 else "i,i->"
    want = np.einsum(spec, x, other)
    for a in (x, C(x)):
        got = fs.einsum(spec, a, other if np.ndim(other) == 0 else C(other))
        assert got.dtype == want.dtype == np.float64 and got == pytest.approx(want, rel=1e-14)  # float32: 1e-8


def test_complex64_meeting_complex128_computes_in_complex128():
    x = np.full((3, 4), (1 + 2j) / 3, np.complex64)
    y = np.full((4, 2), (2 - 1j) / 7, np.complex128)
    _same(fs.einsum("ij,jk->ik", C(x), C(y)), np.einsum("ij,jk->ik", x, y))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32])
def test_integer_results_keep_numpy_widths_and_wrap(dtype):
    x = np.full((3, 40), 100, dtype)
    want = np.einsum("ij,kj->ik", x, x)
    for ops in ((C(x), C(x)), (x, C(x)), (C(x), x)):
        got = fs.einsum("ij,kj->ik", *ops)
        got = np.asarray(got.todense() if hasattr(got, "todense") else got)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert fs.einsum("ij->", C(x)).dtype == np.einsum("ij->", x).dtype


def test_float16_computed_and_returned_as_numpy_does():
    x = (np.arange(12).reshape(3, 4) / 7).astype(np.float16)
    want = np.einsum("ij,kj->ik", x, x)
    got = fs.einsum("ij,kj->ik", C(x), C(x), format="dense")
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3)


# ------------------------------------------------------------ invalid input
@pytest.mark.parametrize("spec", [". ..,i", "i.,i", "..i,i", "i,i->.", "i,i- >", ".... ,i"])
def test_malformed_ellipses_and_arrows_rejected_as_numpy_does(spec):
    ops = (np.ones((2, 2)), np.ones(2))
    with pytest.raises(ValueError):
        np.einsum(spec, *ops)
    with pytest.raises(ValueError):
        fs.einsum(spec, *ops)


def test_pydata_operands_give_our_errors():
    sparse = pytest.importorskip("sparse")
    text = sparse.COO(np.array([[0]]), np.array(["a"]), shape=(2,))
    with pytest.raises(TypeError, match="non-numeric"):
        fs.einsum("i->i", text)
    filled = sparse.COO(np.array([[0]]), np.array([1.0]), shape=(2,), fill_value=1.0)
    with pytest.raises(ValueError, match="fill_value"):
        fs.einsum("i->i", filled)


@pytest.mark.parametrize("threads", [0, -3, 1.5, True, "2"])
def test_threads_validated_up_front(threads):
    with pytest.raises(ValueError, match="threads"):
        fs.einsum("i,i->", C(np.ones(3)), C(np.ones(3)), threads=threads)


@pytest.mark.parametrize("axes, match", [(([5], [0]), "axis 5 is out of bounds for operand a"),
                                         (([0], [-3]), "axis -3 is out of bounds for operand b"),
                                         (([1.5], [0]), "must be ints")])
def test_tensordot_axis_out_of_range_is_an_error(axes, match):
    # an out-of-range axis used to wrap around (5 % 3 == 2) and contract the wrong modes
    a, b = np.ones((2, 3, 4)), np.ones((4, 3))
    with pytest.raises((ValueError, TypeError), match=match):
        fs.tensordot(fs.COO.from_numpy(a), b, axes=axes)
    np.testing.assert_array_equal(fs.tensordot(a, b, axes=([-1], [-2])), np.tensordot(a, b, axes=([-1], [-2])))
