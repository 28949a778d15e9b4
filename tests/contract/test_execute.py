"""flexsparse.einsum / tensordot / matmul against numpy.einsum (the oracle)."""

from __future__ import annotations

import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flexsparse as fs
from flexsparse.formats.coo import COO

DTYPES = [np.float32, np.float64, np.int64, np.complex128]


def _rand(shape, density, dtype, rng):
    vals = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        vals = vals + 1j * rng.standard_normal(shape)
    if np.dtype(dtype).kind in "iu":
        vals = rng.integers(-5, 6, size=shape)
    arr = np.where(rng.random(shape) < density, vals, 0).astype(dtype)
    return arr


def _dense(x):
    if isinstance(x, COO):
        return x.todense()
    if hasattr(x, "todense"):
        return x.todense()
    return np.asarray(x)


def _check(spec, *arrays, kinds=None, **kw):
    kinds = kinds or ["sparse"] * len(arrays)
    ops = [COO.from_numpy(a) if k == "sparse" else a for a, k in zip(arrays, kinds)]
    expected = np.einsum(spec, *arrays)
    got = fs.einsum(spec, *ops, **kw)
    got_d = _dense(got)
    assert got_d.shape == np.shape(expected)
    assert got_d.dtype == np.result_type(*[a.dtype for a in arrays]), (got_d.dtype, spec)
    rtol = 1e-4 if any(a.dtype in (np.float32,) for a in arrays) else 1e-10
    np.testing.assert_allclose(got_d, expected, rtol=rtol, atol=rtol)
    return got


CASES = [
    ("ij,jk->ik", [(7, 9), (9, 5)]),
    ("ij,jk", [(7, 9), (9, 5)]),
    ("ij,kj->ik", [(7, 9), (5, 9)]),
    ("bij,bjk->bik", [(3, 4, 5), (3, 5, 6)]),
    ("ijk,jkl->il", [(4, 5, 6), (5, 6, 3)]),
    ("ijkl,mjkl->im", [(5, 4, 3, 6), (7, 4, 3, 6)]),
    ("ii->i", [(6, 6)]),
    ("ii", [(6, 6)]),
    ("iij->j", [(4, 4, 3)]),
    ("ij->", [(5, 4)]),
    ("ij->ji", [(5, 4)]),
    ("ijk,k->ij", [(3, 4, 5), (5,)]),
    ("i,j->ij", [(4,), (3,)]),
    ("i,i->", [(6,), (6,)]),
    ("ij,jk,kl->il", [(5, 6), (6, 7), (7, 3)]),
    ("ab,bc,cd,de->ae", [(3, 4), (4, 5), (5, 2), (2, 6)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("...ij,...jk->...ik", [(1, 3, 4), (2, 4, 5)]),
    ("ij,ij->ij", [(4, 5), (4, 5)]),
    ("ijk,ijk->", [(3, 4, 5), (3, 4, 5)]),
    ("abQ,ijQ->abij", [(4, 4, 7), (3, 3, 7)]),
    ("iaQ,jbQ->iajb", [(3, 4, 7), (3, 4, 7)]),
    ("ij,jk->", [(4, 5), (5, 3)]),
    (",ij->ij", [(), (3, 4)]),
]


@pytest.mark.parametrize("density", [0.0, 0.15, 1.0])
@pytest.mark.parametrize("spec,shapes", CASES)
def test_against_numpy_sparse(spec, shapes, density):
    rng = np.random.default_rng(abs(hash((spec, density))) % 2**32)
    arrays = [_rand(s, density, np.float64, rng) for s in shapes]
    _check(spec, *arrays)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec,shapes", CASES[:6] + CASES[13:17])
def test_dtypes_and_mixed_dense(spec, shapes, dtype):
    rng = np.random.default_rng(7)
    arrays = [_rand(s, 0.3, dtype, rng) for s in shapes]
    for kinds in (["sparse"] * len(arrays), ["dense"] + ["sparse"] * (len(arrays) - 1),
                  ["sparse"] * (len(arrays) - 1) + ["dense"]):
        _check(spec, *arrays, kinds=kinds)


@pytest.mark.parametrize("fmt", ["coo", "csf", "dense", "auto"])
def test_formats(fmt):
    rng = np.random.default_rng(1)
    a, b = _rand((8, 9), 0.2, np.float64, rng), _rand((9, 6), 0.2, np.float64, rng)
    got = fs.einsum("ij,jk->ik", COO.from_numpy(a), COO.from_numpy(b), format=fmt)
    if fmt == "coo":
        # a matrix product keeps its rows in first-touch order, duplicate-free; sorting is lazy
        assert isinstance(got, COO) and got.sum_duplicates().canonical
        assert got.sum_duplicates().nnz == got.nnz
    elif fmt == "csf":
        assert type(got).__name__ == "CSF"
    elif fmt == "dense":
        assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(_dense(got), a @ b)


def test_auto_format_rule():
    eye = COO.from_numpy(np.eye(50))
    assert isinstance(fs.einsum("ij,jk->ik", eye, eye), COO)  # 2% dense -> sparse
    full = COO.from_numpy(np.ones((6, 6)))
    assert isinstance(fs.einsum("ij,jk->ik", full, full), np.ndarray)  # dense result -> ndarray


def test_scalar_output_is_numpy_scalar():
    a = COO.from_numpy(np.arange(6.0).reshape(2, 3))
    got = fs.einsum("ij,ij->", a, a)
    assert np.ndim(got) == 0 and float(got) == 55.0


def test_empty_and_zero_size():
    a = COO(np.zeros((2, 0), np.int64), np.zeros(0), (4, 5))
    b = COO(np.zeros((2, 0), np.int64), np.zeros(0), (5, 3))
    got = fs.einsum("ij,jk->ik", a, b, format="coo")
    assert got.nnz == 0 and got.shape == (4, 3)
    z = np.zeros((0, 3))
    np.testing.assert_array_equal(_dense(fs.einsum("ij,jk->ik", z, COO.from_numpy(np.ones((3, 2))))),
                                  np.zeros((0, 2)))


@pytest.mark.parametrize("spec,shapes", [("i,ij->j", [(4,), (4, 3)]), ("ij,ij->", [(3, 4), (3, 4)]),
                                         ("i,i->", [(5,), (5,)])])
def test_empty_sparse_times_dense(spec, shapes):
    """Regression: an all-zero sparse operand against a dense one, every output format."""
    sparse_zero = np.zeros(shapes[0])
    dense = np.arange(np.prod(shapes[1]), dtype=float).reshape(shapes[1]) + 1
    for fmt in ("dense", "coo", "auto"):
        got = fs.einsum(spec, COO.from_numpy(sparse_zero), dense, format=fmt)
        np.testing.assert_array_equal(_dense(got), np.einsum(spec, sparse_zero, dense))


def test_nan_inf_propagate_like_numpy():
    a = np.array([[np.inf, 0.0], [0.0, 1.0]])
    b = np.array([[0.0, 2.0], [np.nan, 0.0]])
    with np.errstate(invalid="ignore"):
        expected = np.einsum("ij,jk->ik", a, b)
        got = fs.einsum("ij,jk->ik", COO.from_numpy(a), COO.from_numpy(b), format="dense")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(got[~np.isnan(got)], expected[~np.isnan(expected)])


@pytest.mark.parametrize("threads", [1, 2])
def test_nan_inf_in_large_operands_like_numpy(monkeypatch, threads):
    """The operand scan on the call's threads (lowered limit) still sends an inf in either
    operand of a sparse product to NumPy's semantics."""
    from flexsparse import _limits

    monkeypatch.setattr(_limits, "NONFINITE_PARALLEL_MIN_VALUES", 8)
    rng = np.random.default_rng(2)
    a = np.where(rng.random((30, 40)) < 0.1, rng.standard_normal((30, 40)), 0.0)
    b = np.where(rng.random((40, 20)) < 0.1, rng.standard_normal((40, 20)), 0.0)
    for which in (0, 1):
        x, y = a.copy(), b.copy()
        ((x, y)[which])[np.nonzero((x, y)[which])[0][-1], np.nonzero((x, y)[which])[1][-1]] = np.inf
        with np.errstate(invalid="ignore"):
            want = np.einsum("ij,jk->ik", x, y)
            got = fs.einsum("ij,jk->ik", COO.from_numpy(x), COO.from_numpy(y), format="dense", threads=threads)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(got[~np.isnan(got)], want[~np.isnan(want)])


def test_flickr_sized_index_space():
    shape = (320_000, 28_000_000, 1_600_000, 731)
    rng = np.random.default_rng(0)
    n = 2000
    coords = np.stack([rng.integers(0, s, n) for s in shape])
    coords[:, :50] = coords[:, 50:100]  # guaranteed shared coordinates
    x = COO(coords, rng.standard_normal(n), shape).sum_duplicates()
    # self-contraction over modes 1,2,3: out[i, m] = sum_{jkl} X[i,j,k,l] X[m,j,k,l]
    got = fs.einsum("ijkl,mjkl->im", x, x, format="coo")
    # oracle: only coordinates sharing (j,k,l) contribute; compute with a dict
    by_tail: dict[tuple, list] = {}
    for t in range(x.nnz):
        by_tail.setdefault(tuple(int(v) for v in x.coords[1:, t]), []).append((int(x.coords[0, t]), x.data[t]))
    ref: dict[tuple, float] = {}
    for entries in by_tail.values():
        for i, vi in entries:
            for m, vm in entries:
                ref[(i, m)] = ref.get((i, m), 0.0) + vi * vm
    got_map = {(int(a), int(b)): v for a, b, v in zip(got.coords[0], got.coords[1], got.data)}
    assert set(got_map) == set(ref)
    for k, v in ref.items():
        assert got_map[k] == pytest.approx(v)
    # and a contraction keeping the huge modes in the output
    y = fs.einsum("ijkl,ijkl->ijk", x, x, format="coo")
    assert y.shape == shape[:3] and y.nnz == x.nnz


def test_scipy_and_interleaved_operands():
    sp = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(3)
    a = sp.random(20, 30, density=0.1, random_state=1, format="csr")
    b = rng.standard_normal((30, 4))
    np.testing.assert_allclose(_dense(fs.einsum("ij,jk->ik", a, b)), a @ b)
    np.testing.assert_allclose(_dense(fs.einsum(a, [0, 1], b, [1, 2], [0, 2])), a @ b)


@pytest.mark.parametrize("bad,match", [
    ("ij,jk->ik->i", "->"),
    ("ij,jk->iz", "z"),
    ("ij,jk->ii", "ii|repeat|twice"),
    ("i$,jk->ik", r"\$"),
])
def test_bad_subscripts(bad, match):
    a = COO.from_numpy(np.ones((2, 2)))
    with pytest.raises(ValueError, match=match):
        fs.einsum(bad, a, a)


def test_bad_inputs():
    a = COO.from_numpy(np.ones((2, 3)))
    with pytest.raises(ValueError, match="j"):
        fs.einsum("ij,jk->ik", a, COO.from_numpy(np.ones((4, 2))))
    with pytest.raises(ValueError, match="operand"):
        fs.einsum("ij,jk->ik", a)
    with pytest.raises(TypeError, match="non-numeric"):
        fs.einsum("ij->ij", np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="format"):
        fs.einsum("ij->ij", a, format="bsr")


def test_tensordot_and_matmul():
    rng = np.random.default_rng(5)
    x = _rand((4, 5, 6), 0.3, np.float64, rng)
    y = _rand((5, 6, 3), 0.3, np.float64, rng)
    np.testing.assert_allclose(_dense(fs.tensordot(COO.from_numpy(x), COO.from_numpy(y), axes=2)),
                               np.tensordot(x, y, axes=2))
    np.testing.assert_allclose(_dense(fs.tensordot(COO.from_numpy(x), y, axes=([1], [0]))),
                               np.tensordot(x, y, axes=([1], [0])))
    m = _rand((6, 7), 0.3, np.float64, rng)
    v = rng.standard_normal(7)
    np.testing.assert_allclose(_dense(fs.matmul(COO.from_numpy(m), v)), m @ v)
    np.testing.assert_allclose(_dense(COO.from_numpy(m) @ COO.from_numpy(m.T)), m @ m.T)
    b3 = _rand((2, 6, 7), 0.3, np.float64, rng)
    np.testing.assert_allclose(_dense(fs.matmul(COO.from_numpy(b3), m.T)), b3 @ m.T)
    with pytest.raises(ValueError):
        fs.matmul(COO.from_numpy(m), COO.from_numpy(m))


@pytest.mark.jitless
def test_jitless_small_paths():
    """Tiny cases through every engine (also run with NUMBA_DISABLE_JIT=1)."""
    rng = np.random.default_rng(11)
    a, b = _rand((5, 6), 0.4, np.float64, rng), _rand((6, 4), 0.4, np.float64, rng)
    _check("ij,jk->ik", a, b)
    _check("ij,jk->ik", a, b, kinds=["sparse", "dense"])
    _check("bij,bjk->bik", _rand((2, 3, 4), 0.5, np.float64, rng), _rand((2, 4, 3), 0.5, np.float64, rng))


# ---------------------------------------------------------------------- property test
@st.composite
def einsum_problems(draw):
    n_ops = draw(st.integers(1, 3))
    letters = string.ascii_lowercase[:5]
    sizes = {c: draw(st.integers(1, 4)) for c in letters}
    terms = []
    for _ in range(n_ops):
        nd = draw(st.integers(0, 3))
        terms.append("".join(draw(st.lists(st.sampled_from(letters), min_size=nd, max_size=nd))))
    used = sorted(set("".join(terms)))
    out = "".join(draw(st.permutations(used))[: draw(st.integers(0, len(used)))]) if used else ""
    spec = ",".join(terms) + "->" + out
    dens = [draw(st.sampled_from([0.0, 0.3, 1.0])) for _ in terms]
    kinds = [draw(st.sampled_from(["sparse", "dense"])) for _ in terms]
    dtype = draw(st.sampled_from([np.float64, np.int64, np.complex128]))
    seed = draw(st.integers(0, 2**16))
    return spec, [tuple(sizes[c] for c in t) for t in terms], dens, kinds, dtype, seed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(einsum_problems())
def test_property_matches_numpy(problem):
    spec, shapes, dens, kinds, dtype, seed = problem
    rng = np.random.default_rng(seed)
    arrays = [_rand(s, d, dtype, rng) for s, d in zip(shapes, dens)]
    _check(spec, *arrays, kinds=kinds)


@pytest.mark.parametrize("dtype", [np.float32, np.complex128])
@pytest.mark.parametrize("where", [0, 1, None])
def test_dense_enough_coo_nonfinite_like_numpy(dtype, where):
    """Dense-enough COO operands are densified before the inf/nan check (the scatter reports
    it): an inf in either operand, or in a duplicate pair, still gives NumPy's result."""
    rng = np.random.default_rng(11)
    a = _rand((4, 5, 6), 0.6, dtype, rng)
    b = _rand((3, 5, 6), 0.6, dtype, rng)
    if where is not None:
        (a, b)[where][1, 2, 3] = np.inf
    ca = COO.from_numpy(a)
    # b as a non-canonical COO: every entry split into two halves (duplicates summed)
    cb = COO.from_numpy(b)
    with np.errstate(invalid="ignore", over="ignore"):
        cb = COO(np.hstack([cb.coords, cb.coords]), np.hstack([cb.data / 2, cb.data / 2]), b.shape, canonical=False)
        expected = np.einsum("abQ,icQ->abic", a, cb.todense())
        for fmt in ("auto", "dense"):
            got = _dense(fs.einsum("abQ,icQ->abic", ca, cb, format=fmt))
            np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
            np.testing.assert_allclose(got[~np.isnan(got)], expected[~np.isnan(expected)], rtol=1e-5)


@pytest.mark.parametrize("spec,sa,sb", [("bxc,xco->bo", (6, 4, 16), (4, 16, 5)), ("ck,bk->bc", (5, 40), (3, 40)),
                                        ("bxc,cxo->ob", (6, 4, 16), (16, 4, 5))])
@pytest.mark.parametrize("rows", ["few", "most"])
def test_sparse_times_dense_needs_no_statistics(monkeypatch, spec, sa, sb, rows):
    """A COO below the dense method's density times a dense array runs the SpMM without the
    planner's statistics, and picks its output layout from the output rows its stored values
    reach: few reached rows give a sparse intermediate, most a dense one; both equal NumPy."""
    import flexsparse.contract.execute as ex
    import flexsparse.contract.stats as stats

    def refuse(*args, **kwargs):
        raise AssertionError("operand statistics computed")

    monkeypatch.setattr(stats, "operand_stats", refuse)
    layouts = []
    real = ex._pair_sparse_dense

    def spy(*args):
        res = real(*args)
        layouts.append(type(res[0]))
        return res

    monkeypatch.setattr(ex, "_pair_sparse_dense", spy)
    rng = np.random.default_rng(7)
    a = rng.standard_normal(sa)
    if rows == "few":  # one output row reached
        a[1:] = 0
        a[0, rng.random(sa[1:]) < 0.7] = 0
    else:
        a[rng.random(sa) < 0.8] = 0
    b = rng.standard_normal(sb)
    for fmt in ("auto", "coo", "dense"):
        got = fs.einsum(spec, fs.as_coo(a), b, format=fmt)
        dense = got.todense() if hasattr(got, "todense") else got
        np.testing.assert_allclose(dense, np.einsum(spec, a, b), rtol=1e-12, atol=1e-12)
    assert set(layouts) == {COO if rows == "few" else np.ndarray}
