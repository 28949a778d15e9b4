"""COO against a NumPy oracle: construction, canonical form, structure ops, arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexsparse.formats.coo import COO, DenseTooLargeError

DTYPES = [np.float32, np.float64, np.int64, np.complex128]
FLICKR = (320_000, 28_000_000, 1_600_000, 731)


def make_dense(rng, shape, density, dtype):
    """Dense array with about ``density`` nonzeros (exactly 0 or all cells at 0 / 1)."""
    mask = rng.random(shape) < density
    vals = rng.integers(-9, 10, size=shape) if np.dtype(dtype).kind == "i" else rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        vals = vals + 1j * rng.standard_normal(shape)
    vals = np.where(vals == 0, 1, vals)
    return np.asarray(np.where(mask, vals, 0)).astype(dtype)


@st.composite
def shapes(draw, max_ndim=5):
    ndim = draw(st.integers(0, max_ndim))
    hi = 5 if ndim <= 3 else 3
    return tuple(draw(st.lists(st.integers(0 if ndim <= 3 else 1, hi), min_size=ndim, max_size=ndim)))


@st.composite
def dense_arrays(draw, shape=None):
    shape = draw(shapes()) if shape is None else shape
    density = draw(st.sampled_from([0.0, 0.15, 1.0]))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    return make_dense(np.random.default_rng(seed), shape, density, dtype)


def assert_same(coo, dense):
    assert coo.shape == dense.shape
    assert coo.dtype == dense.dtype, (coo.dtype, dense.dtype)
    coo.validate()
    np.testing.assert_allclose(coo.todense(), dense, rtol=1e-5 if dense.dtype == np.float32 else 1e-12)


# ---------------------------------------------------------------------- construction
@settings(max_examples=60, deadline=None)
@given(dense_arrays())
def test_from_numpy_roundtrip_and_attributes(a):
    t = COO.from_numpy(a)
    assert_same(t, a)
    assert t.canonical
    assert t.nnz == np.count_nonzero(a)
    assert t.ndim == a.ndim
    assert t.density == pytest.approx(np.count_nonzero(a) / a.size if a.size else 0.0)
    assert t.nbytes == t.data.nbytes + t.coords.nbytes
    assert t.coords.shape == (a.ndim, t.nnz)
    np.testing.assert_array_equal(np.asarray(t), a)


@settings(max_examples=60, deadline=None)
@given(dense_arrays(), st.integers(0, 2**32 - 1))
def test_sum_duplicates_matches_numpy(a, seed):
    # split every nonzero into 2 pieces and shuffle, so each coordinate appears twice
    rng = np.random.default_rng(seed)
    t = COO.from_numpy(a)
    coords = np.concatenate([t.coords, t.coords], axis=1)
    half = (t.data / 2).astype(a.dtype) if a.dtype.kind != "i" else t.data // 2
    data = np.concatenate([half, t.data - half])
    perm = rng.permutation(coords.shape[1])
    d = COO(coords[:, perm], data[perm], a.shape)
    assert d.canonical == (t.nnz == 0)
    c = d.sum_duplicates()
    assert c.canonical and c.nnz == t.nnz
    assert_same(c, a)
    assert_same(d, a)  # todense of non-canonical input accumulates


def test_canonical_detection_and_flag():
    t = COO([[0, 1, 1], [2, 0, 0]], [1.0, 2.0, 3.0], shape=(2, 3))
    assert not t.canonical
    s = t.sum_duplicates()
    assert s.canonical and s.coords.tolist() == [[0, 1], [2, 0]] and s.data.tolist() == [1.0, 5.0]
    assert s.sum_duplicates() is s
    assert COO([[0, 1], [2, 0]], [1.0, 2.0], shape=(2, 3)).canonical
    with pytest.raises(ValueError, match="canonical=True but coords are not strictly increasing"):
        COO([[1, 0], [0, 0]], [1.0, 2.0], shape=(2, 3), canonical=True)


def test_zero_d_and_one_d():
    s = COO(np.zeros((0, 3), dtype=np.int64), [1.0, 2.0, 4.0], shape=())
    assert not s.canonical
    c = s.sum_duplicates()
    assert c.nnz == 1 and c.todense() == 7.0 and c.todense().shape == ()
    assert COO.from_numpy(np.float64(0)).nnz == 0
    v = COO([3, 1], [1.0, 2.0], shape=(5,))
    np.testing.assert_array_equal(v.todense(), [0, 2, 0, 1, 0])
    assert v.sum_duplicates().coords.tolist() == [[1, 3]]


def test_explicit_zeros_kept_and_eliminated():
    t = COO([[0, 1], [0, 1]], [0.0, 2.0], shape=(2, 2))
    assert t.nnz == 2 and t.canonical
    e = t.eliminate_zeros()
    assert e.nnz == 1 and e.coords.tolist() == [[1], [1]]


def test_index_dtype_and_inferred_shape():
    t = COO(np.array([[0, 4], [1, 2]], dtype=np.int64), [1, 2])
    assert t.shape == (5, 3) and t.coords.dtype == np.int32
    big = COO([[2**40]], [1.0], shape=(2**41,))
    assert big.coords.dtype == np.int64


@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(coords=[[0, 3]], data=[1, 2], shape=(3,)), ValueError, "coordinate 3 out of bounds for mode 0 with extent 3"),
    (dict(coords=[[0, -1]], data=[1, 2], shape=(3,)), ValueError, "negative coordinate -1 in mode 0"),
    (dict(coords=[[0.5]], data=[1], shape=(3,)), TypeError, "coords must be integers"),
    (dict(coords=[[0, 1]], data=[1, 2, 3], shape=(3,)), ValueError, r"data must have shape \[nnz=2\]"),
    (dict(coords=[[0], [1]], data=[1], shape=(3,)), ValueError, r"coords must have shape \[ndim=1, nnz\]"),
    (dict(coords=[[0]], data=["a"], shape=(3,)), TypeError, "data has non-numeric dtype"),
    (dict(coords=[[0]], data=[1], shape=(-3,)), ValueError, "negative extent -3 in mode 0"),
    (dict(coords=[[0]], data=[1], shape=(2**63,)), ValueError, "exceeds the int64 coordinate range"),
    (dict(coords=np.zeros((1, 0), int), data=[], shape=None), ValueError, "cannot infer shape"),
])
def test_constructor_errors(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        COO(**kwargs)


def test_validate_catches_corruption():
    t = COO([[0, 1]], [1.0, 2.0], shape=(3,))
    t.coords[0, 1] = 5
    with pytest.raises(ValueError, match="coordinate 5 out of bounds"):
        t.validate()
    t = COO([[0, 1]], [1.0, 2.0], shape=(3,))
    t.coords[0, :] = [1, 0]
    with pytest.raises(ValueError, match="canonical flag is set"):
        t.validate()


def test_repr():
    t = COO.from_numpy(np.array([[1.0, 0, 2, 0], [0, 3, 0, 4], [5, 0, 0, 0]]))
    assert repr(t) == "<COO shape=(3, 4) nnz=5 density=41.7% dtype=float64>"


def test_todense_refuses_huge():
    t = COO([[0], [0], [0], [0]], [1.0], shape=FLICKR)
    with pytest.raises(DenseTooLargeError, match=r"refusing to densify a tensor of shape \(320000"):
        t.todense()
    with pytest.raises(MemoryError):
        np.asarray(t)
    small = COO([[1]], [2.0], shape=(1000,))
    with pytest.raises(ValueError, match="limit 1.000e\\+02"):
        small.todense(max_bytes=100)


# ---------------------------------------------------------------------- structure
@settings(max_examples=50, deadline=None)
@given(dense_arrays(), st.randoms(use_true_random=False))
def test_transpose_matches_numpy(a, rnd):
    t = COO.from_numpy(a)
    axes = list(range(a.ndim))
    rnd.shuffle(axes)
    assert_same(t.transpose(axes), np.transpose(a, axes))
    assert_same(t.T, a.T)
    assert_same(t.transpose(axes).sum_duplicates(), np.transpose(a, axes))


def test_transpose_errors():
    t = COO.from_numpy(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"axes \(0, 0\) is not a permutation of the 2 modes"):
        t.transpose((0, 0))


@settings(max_examples=50, deadline=None)
@given(dense_arrays(), st.randoms(use_true_random=False))
def test_reshape_matches_numpy(a, rnd):
    t = COO.from_numpy(a)
    # a random factorisation of the size into up to 4 extents
    size = a.size
    new = []
    rest = size
    for _ in range(rnd.randint(0, 3)):
        divs = [d for d in range(1, rest + 1) if rest % d == 0] if rest else [0, 1]
        d = rnd.choice(divs)
        new.append(d)
        rest = rest // d if d else rest
    new.append(rest if size else 0)
    if math.prod(new) != size:
        new = [size]
    r = t.reshape(tuple(new))
    assert_same(r, a.reshape(new))
    assert r.canonical == t.canonical
    assert_same(t.reshape(-1), a.reshape(-1))


def test_reshape_errors():
    t = COO.from_numpy(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"cannot reshape tensor of shape \(2, 3\) \(size 6\) into shape \(4, 2\)"):
        t.reshape((4, 2))
    with pytest.raises(ValueError, match="only specify one unknown"):
        t.reshape((-1, -1))


def test_reshape_beyond_int64_matches_python_ints():
    rng = np.random.default_rng(3)
    co = rng.integers(0, 2**40, size=(2, 200))
    t = COO(co, np.arange(200.0), shape=(2**40, 2**40))
    r = t.reshape((2**20, 2**60))  # one group of size 2**80: Python-int arithmetic path
    lin = [int(i) * 2**40 + int(j) for i, j in co.T]
    assert r.coords.tolist() == [[x // 2**60 for x in lin], [x % 2**60 for x in lin]]
    np.testing.assert_array_equal(r.reshape((2**40, 2**40)).coords, co)


def test_flickr_index_space():
    """A FROSTT-Flickr-shaped tensor: stored, canonicalised, reshaped with no int64 overflow."""
    rng = np.random.default_rng(0)
    co = np.vstack([rng.integers(0, n, 5000) for n in FLICKR])
    co[:, 1] = [FLICKR[0] - 1, FLICKR[1] - 1, FLICKR[2] - 1, FLICKR[3] - 1]  # the far corner
    t = COO(np.hstack([co, co[:, ::-1]]), np.ones(10000), shape=FLICKR)
    assert t.coords.dtype == np.int32 and math.prod(t.shape) > 2**63
    c = t.sum_duplicates()
    assert c.canonical and c.nnz == 5000 and (c.data == 2.0).all()
    # oracle: Python tuples sort lexicographically
    assert [tuple(x) for x in c.coords.T] == sorted({tuple(x) for x in co.T.tolist()})
    r = t.reshape((FLICKR[0] * FLICKR[1], FLICKR[2] * FLICKR[3]))
    expect0 = co[0].astype(object) * FLICKR[1] + co[1].astype(object)
    np.testing.assert_array_equal(r.coords[0, :5000].astype(object), expect0)
    back = r.reshape(FLICKR).sum_duplicates()
    np.testing.assert_array_equal(back.coords, c.coords)
    assert (t * t).nnz == 5000 and (t + t).sum() == 20000.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([1, 3, 731, 2**31 - 1, 2**40, 2**62, 2**63 - 1]), min_size=1, max_size=5),
       st.integers(0, 40), st.integers(0, 2**32 - 1))
def test_lex_order_matches_lexsort_for_any_extents(shape, nnz, seed):
    """Packed/ranked keys never overflow and order exactly like np.lexsort over the modes."""
    from flexsparse.formats import _sort

    rng = np.random.default_rng(seed)
    co = np.vstack([rng.integers(0, s, nnz) for s in shape]) if nnz else np.zeros((len(shape), 0), np.int64)
    co = np.hstack([co, co[:, : nnz // 3]])  # duplicates, so stability matters
    np.testing.assert_array_equal(_sort.lex_order(co, tuple(shape)), np.lexsort(co[::-1]))
    t = COO(co, np.ones(co.shape[1]), tuple(shape)).sum_duplicates()
    assert _sort.is_lex_sorted(t.coords) and t.data.sum() == co.shape[1]


# ---------------------------------------------------------------------- reductions, dtype
@settings(max_examples=50, deadline=None)
@given(dense_arrays(), st.data())
def test_sum_matches_numpy(a, data):
    t = COO.from_numpy(a)
    total = t.sum()
    assert np.ndim(total) == 0
    np.testing.assert_allclose(total, a.sum(), rtol=1e-4)
    assert np.asarray(total).dtype == a.sum().dtype
    if a.ndim:
        axes = tuple(data.draw(st.lists(st.integers(-a.ndim, a.ndim - 1), unique_by=lambda x: x % a.ndim,
                                        max_size=a.ndim)))
        keep = data.draw(st.booleans())
        got = t.sum(axis=axes, keepdims=keep)
        want = a.sum(axis=axes, keepdims=keep)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got.todense(), want, rtol=1e-4)
        assert got.canonical
        ax = data.draw(st.integers(0, a.ndim - 1))
        np.testing.assert_allclose(t.sum(axis=ax).todense(), a.sum(axis=ax), rtol=1e-4)


def test_sum_errors():
    t = COO.from_numpy(np.ones((2, 3)))
    with pytest.raises(ValueError, match="axis 2 is out of bounds for a tensor with 2 modes"):
        t.sum(axis=2)
    with pytest.raises(ValueError, match="duplicate value in axis"):
        t.sum(axis=(0, -2))


@pytest.mark.parametrize("src", DTYPES)
@pytest.mark.parametrize("dst", DTYPES)
def test_astype(src, dst):
    a = make_dense(np.random.default_rng(1), (3, 4), 0.5, src)
    t = COO.from_numpy(a)
    if np.dtype(src).kind == "c" and np.dtype(dst).kind != "c":
        pytest.skip("complex -> real discards the imaginary part (NumPy warns)")
    assert_same(t.astype(dst), a.astype(dst))
    with pytest.raises(TypeError, match="astype target has non-numeric dtype"):
        t.astype("U2")


# ---------------------------------------------------------------------- arithmetic
@settings(max_examples=60, deadline=None)
@given(st.data())
def test_elementwise_matches_numpy(data):
    shape = data.draw(shapes())
    a = data.draw(dense_arrays(shape))
    b = data.draw(dense_arrays(shape))
    ta, tb = COO.from_numpy(a), COO.from_numpy(b)
    assert_same(ta + tb, a + b)
    assert_same(ta - tb, a - b)
    assert_same(ta * tb, a * b)
    assert_same(-ta, -a)
    assert_same(ta * 3, a * 3)
    assert_same(2.5 * ta, 2.5 * a)
    assert_same(ta * b, a * b)  # sparse * dense stays sparse
    assert isinstance(ta * b, COO)
    np.testing.assert_allclose(ta + b, a + b)
    assert (ta * tb).nnz <= min(ta.nnz, tb.nnz)
    # non-canonical operands
    tt = COO(np.concatenate([ta.coords, ta.coords], 1)[:, ::-1], np.concatenate([ta.data, ta.data])[::-1], shape)
    assert_same(tt * tb, (2 * a) * b)


@pytest.mark.parametrize("sa, sb", [((3, 1), (1, 4)), ((4,), (3, 4)), ((2, 1, 3), (2, 5, 1)), ((), (2, 2))])
def test_broadcasting(sa, sb):
    rng = np.random.default_rng(7)
    a, b = make_dense(rng, sa, 0.6, np.float64), make_dense(rng, sb, 0.6, np.float64)
    ta, tb = COO.from_numpy(a), COO.from_numpy(b)
    assert_same(ta + tb, a + b)
    assert_same(ta * tb, a * b)
    assert_same(tb * ta, b * a)


def test_arithmetic_errors():
    t = COO.from_numpy(np.eye(2))
    with pytest.raises(ValueError, match=r"could not be broadcast together with shapes \(2, 2\) and \(3,\)"):
        t + COO.from_numpy(np.ones(3))
    with pytest.raises(ValueError, match="adding the nonzero scalar 1"):
        t + 1
    assert_same(t + 0, np.eye(2))
    with pytest.raises(TypeError, match="can only be divided by a scalar"):
        t / t
    assert_same(t / 2, np.eye(2) / 2)
    with pytest.raises(TypeError):
        t + "x"


def test_matmul_delegates_to_engine():
    pytest.importorskip("flexsparse.contract.execute")
    a = np.arange(6.0).reshape(2, 3)
    b = np.arange(12.0).reshape(3, 4)
    got = COO.from_numpy(a) @ COO.from_numpy(b)
    np.testing.assert_allclose(np.asarray(got.todense() if hasattr(got, "todense") else got), a @ b)


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble, np.float32, np.int8, np.complex64, np.bool_])
@pytest.mark.parametrize("canonical", [True, False])
def test_todense_every_numeric_dtype(dtype, canonical):
    # half precision has no numba type and must take the NumPy scatter
    coords = np.array([[0, 1, 1, 2], [2, 0, 0, 1]]) if not canonical else np.array([[0, 1, 2], [2, 0, 1]])
    data = np.arange(1, coords.shape[1] + 1).astype(dtype)
    t = COO(coords, data, (3, 3))
    expect = np.zeros((3, 3), dtype=dtype)
    np.add.at(expect, tuple(coords), data)
    got = t.todense()
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, expect)
