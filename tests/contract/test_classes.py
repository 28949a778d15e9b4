"""The class product (contract._classes and kernels.cpu.colclass) against dense NumPy: block
patterns of exact zeros (symmetry-blocked integrals), stored zeros, self- and cross-products,
dtypes, key collisions, inf/nan, unstructured operands, and the einsum path that takes it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flexsparse as fs
from flexsparse.contract import _classes, _dense
from flexsparse.contract._zero_tail import NOT_TAKEN
from flexsparse.formats.coo import COO
from flexsparse.kernels.cpu import colclass, densify


def _blocked(n_rows, k, n_irreps, dtype, seed, extra_zero=0.0):
    """``[n_rows, k]`` values nonzero only where the row's irrep matches the column's (as
    point-group symmetry makes the density-fitted integrals), plus ``extra_zero`` of the
    allowed cells zero; some columns of every irrep are empty in every row."""
    rng = np.random.default_rng(seed)
    row_irrep = rng.integers(0, n_irreps, n_rows)
    col_irrep = np.random.default_rng(k).integers(0, n_irreps, k)  # shared by the operands of one k
    allowed = row_irrep[:, None] == col_irrep[None, :]
    allowed &= rng.random((n_rows, k)) >= extra_zero
    allowed[:, :: max(1, k // 7)] = False
    vals = rng.standard_normal((n_rows, k))
    if np.dtype(dtype).kind == "c":
        vals = vals + 1j * rng.standard_normal((n_rows, k))
    return np.where(allowed, vals, 0).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
@pytest.mark.parametrize("same", [True, False])
def test_class_product_matches_numpy(dtype, same):
    x = _blocked(300, 200, 4, dtype, 0)
    y = x if same else _blocked(80, 200, 4, dtype, 1)
    got = _classes.class_product(x, y, same)
    assert isinstance(got, np.ndarray) and got.dtype == np.dtype(dtype)
    tol = 1e-4 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-10
    np.testing.assert_allclose(got, x @ y.T, rtol=tol, atol=tol)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 60), cols=st.integers(1, 60), k=st.integers(1, 50), irreps=st.integers(1, 5),
       seed=st.integers(0, 2**16), extra=st.sampled_from([0.0, 0.3, 1.0]), same=st.booleans())
def test_class_product_invariant(rows, cols, k, irreps, seed, extra, same):
    """Any pattern (empty, full, blocked, scattered) gives NumPy's product or NOT_TAKEN."""
    x = _blocked(rows, k, irreps, np.float64, seed, extra)
    y = x if same else _blocked(cols, k, irreps, np.float64, seed + 1, extra)
    got = _classes.class_product(x, y, same)
    if got is not NOT_TAKEN:
        np.testing.assert_allclose(got, x @ y.T, rtol=1e-10, atol=1e-10)


def test_all_zero_columns_give_zeros():
    x = np.zeros((50, 30))
    y = np.ones((20, 30))
    got = _classes.class_product(x, y, False)
    assert isinstance(got, np.ndarray) and got.shape == (50, 20) and not got.any()


def test_unstructured_operands_are_not_taken():
    rng = np.random.default_rng(3)
    x = np.where(rng.random((200, 300)) < 0.5, rng.standard_normal((200, 300)), 0.0)
    assert _classes.class_product(x, x, True) is NOT_TAKEN


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_nonfinite_values_return_none(bad):
    x = _blocked(100, 80, 3, np.float64, 4)
    y = _blocked(40, 80, 3, np.float64, 5)
    y[3, 7] = bad
    assert _classes.class_product(x, y, False) is None


def test_key_collisions_are_caught(monkeypatch):
    """Salts of one value make a column's key its row count: row sets of equal size collide,
    and the gathered counts send the product to the plain path instead of a wrong result."""
    x = np.zeros((4, 6))
    x[0, 0:3] = 1.0  # columns 0-2: rows {0, 1}; columns 3-5: rows {2, 3}
    x[1, 0:3] = 2.0
    x[2, 3:6] = 3.0
    x[3, 3:6] = 4.0
    monkeypatch.setattr(_classes, "_salt", lambda n: np.ones(n, dtype=np.uint64))
    monkeypatch.setattr(_classes, "_PLANS", {})
    monkeypatch.setattr(_classes._limits, "CLASS_FIXED_SECONDS", -1.0)  # take any plan
    got = _classes.class_product(x, x, True)
    assert got is NOT_TAKEN or np.allclose(got, x @ x.T)
    keys, counts, _ = colclass.column_keys(x, np.ones(4, dtype=np.uint64))
    assert len(set(keys.tolist())) == 1  # the collision the test relies on did happen


def test_merge_saves_modelled_time():
    rng = np.random.default_rng(6)
    n, words = 12, 2
    bits = rng.integers(0, 2**63, size=(n, words), dtype=np.int64).astype(np.uint64)
    sizes = rng.integers(1, 40, n).astype(np.int64)
    from flexsparse.contract._zero_tail import plan_model

    costs = np.array((0.5e-9, 1e-9, 8e-6))
    model = plan_model(2)
    group, seconds = colclass.merge_classes(bits, bits, sizes, model, True, costs)
    unmerged = sum(colclass._class_seconds(int(sizes[i]), colclass._popcount(bits, i), colclass._popcount(bits, i),
                                           True, model, costs) for i in range(n))
    assert seconds <= unmerged + 1e-12
    assert group.shape == (n,) and all(group[g] == g for g in group)  # every group names its first member


def test_popcount_counts_bits():
    bits = np.array([[0, 2**64 - 1], [5, 0]], dtype=np.uint64)
    assert colclass._popcount(bits, 0) == 64 and colclass._popcount(bits, 1) == 2


def _coo_with_stored_zeros(vals, seed):
    """COO storing every cell of ``vals`` (zeros included, as the integral files do), sorted."""
    coords = np.array(np.nonzero(np.ones(vals.shape, dtype=bool)), dtype=np.int64)
    return COO(coords, vals[tuple(coords)], vals.shape, canonical=True)


@pytest.mark.parametrize("stored_zeros", [True, False])
def test_einsum_self_product_takes_classes(stored_zeros, monkeypatch):
    # without stored zeros the operand must still be dense enough for BLAS (>= 30%): 2 irreps
    x = _blocked(24 * 24, 375, 4 if stored_zeros else 2, np.float64, 7).reshape(24, 24, 375)
    op = _coo_with_stored_zeros(x, 0) if stored_zeros else fs.COO.from_numpy(x)
    calls = []
    real = _classes.class_product

    def spy(dx, dy, same, *keys):
        res = real(dx, dy, same, *keys)
        calls.append(res is not NOT_TAKEN)
        return res

    monkeypatch.setattr(_dense, "class_product", spy)
    got = fs.einsum("abQ,cdQ->abcd", op, op)
    np.testing.assert_allclose(np.asarray(got), np.einsum("abQ,cdQ->abcd", x, x), rtol=1e-10, atol=1e-10)
    assert calls == [True]


def test_einsum_small_self_product_keeps_its_path(monkeypatch):
    x = _blocked(16, 50, 3, np.float64, 8).reshape(4, 4, 50)
    op = fs.COO.from_numpy(x)
    monkeypatch.setattr(_dense, "class_product", lambda *a: pytest.fail("small products skip the classes"))
    got = fs.einsum("abQ,cdQ->abcd", op, op)
    np.testing.assert_allclose(np.asarray(got), np.einsum("abQ,cdQ->abcd", x, x), rtol=1e-10, atol=1e-10)


def test_einsum_self_product_with_inf_matches_numpy():
    x = _blocked(24 * 24, 375, 4, np.float64, 9).reshape(24, 24, 375)
    x[0, 0, 5] = np.inf
    op = fs.COO.from_numpy(x)
    with np.errstate(invalid="ignore"):
        ref = np.einsum("abQ,cdQ->abcd", x, x)
        got = np.asarray(fs.einsum("abQ,cdQ->abcd", op, op))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(ref), rtol=1e-10, atol=1e-10)


def test_einsum_self_product_of_uncompiled_dtype_keeps_its_path(monkeypatch):
    """A dtype the kernels are not compiled for (long double) never reaches the key pass."""
    x = _blocked(24 * 24, 375, 2, np.float64, 10).reshape(24, 24, 375).astype(np.longdouble)
    op = _coo_with_stored_zeros(x, 0)
    monkeypatch.setattr(_dense, "class_product", lambda *a: pytest.fail("no compiled kernel for long double"))
    got = np.asarray(fs.einsum("abQ,cdQ->abcd", op, op))
    assert got.dtype == np.longdouble
    np.testing.assert_allclose(got.astype(np.float64), np.einsum("abQ,cdQ->abcd", x, x).astype(np.float64),
                               rtol=1e-10, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 40), k=st.integers(1, 60), irreps=st.integers(1, 4), seed=st.integers(0, 2**16),
       extra=st.sampled_from([0.0, 0.5, 1.0]), dtype=st.sampled_from([np.float64, np.float32, np.complex128]))
def test_fused_densify_keys_match_the_separate_passes(rows, k, irreps, seed, extra, dtype):
    """The densify that keys in the same pass writes the dense array, the keys, counts and
    inf/nan flag of ``column_keys`` on it and each row's support, for any pattern (runs cut at
    row ends, gaps, zeros stored or not)."""
    vals = _blocked(rows, k, irreps, dtype, seed, extra)
    store = np.random.default_rng(seed).random(vals.shape) < 0.8  # some cells stored as zeros
    op = COO(np.array(np.nonzero(store | (vals != 0)), dtype=np.int64), vals[store | (vals != 0)], vals.shape,
             canonical=True)
    salt = _classes._salt(rows)
    flat = np.full(rows * k, np.nan, dtype=dtype)  # every cell must be written
    keys, counts, sup = np.zeros(k, dtype=np.uint64), np.zeros(k, dtype=np.int64), np.zeros(rows, dtype=np.int64)
    bad = densify.sorted_coo_to_dense(op.coords, op.data, np.array([k, 1]), flat, True, salt, keys, counts, sup)
    ref = colclass.column_keys(vals, salt)
    np.testing.assert_array_equal(flat.reshape(rows, k), vals)
    assert keys.tolist() == ref[0].tolist() and counts.tolist() == ref[1].tolist() and not bad
    stored = np.zeros(vals.shape, dtype=bool)
    stored[tuple(op.coords)] = True  # support: last stored cell + 1, as the zero-tail walk counts it
    ref_sup = np.where(stored.any(axis=1), k - np.argmax(stored[:, ::-1], axis=1), 0)
    assert sup.tolist() == ref_sup.tolist()


def test_fused_densify_keys_flag_inf():
    vals = np.ones((3, 4))
    vals[1, 2] = np.inf
    op = COO.from_numpy(vals)
    keys, counts, sup = np.zeros(4, dtype=np.uint64), np.zeros(4, dtype=np.int64), np.zeros(3, dtype=np.int64)
    assert densify.sorted_coo_to_dense(op.coords, op.data, np.array([4, 1]), np.empty(12), True, _classes._salt(3),
                                       keys, counts, sup)


@pytest.mark.parametrize("flip", [False, True])
def test_scatter_classes_adds_each_block(flip):
    rng = np.random.default_rng(3)
    out = rng.random((6, 7))
    ref = out.copy()
    rows_x, x_ptr = np.array([0, 2, 5, 1, 2]), np.array([0, 3, 5])
    rows_y, y_ptr = np.array([1, 2, 3, 6, 0, 4]), np.array([0, 4, 6])  # runs 1-3 and 6; 0; 4
    blocks = []
    for g in range(2):
        rx, ry = rows_x[x_ptr[g]:x_ptr[g + 1]], rows_y[y_ptr[g]:y_ptr[g + 1]]
        b = rng.random((rx.shape[0], ry.shape[0]))
        ref[np.ix_(rx, ry)] += b
        blocks.append((b.T if flip else b).ravel())
    colclass.scatter_classes(out, rows_x, x_ptr, rows_y, y_ptr, np.concatenate(blocks), np.array([flip, flip]))
    np.testing.assert_allclose(out, ref, rtol=1e-14)


@pytest.mark.parametrize("stored_zeros", [True, False])
def test_einsum_cross_product_takes_classes(stored_zeros, monkeypatch):
    """``abQ,icQ->abic`` of two blocked COO operands (the vv x ov integrals' shape) runs the
    class product, with both operands keyed by their densify, and matches NumPy."""
    irreps = 4 if stored_zeros else 2
    x = _blocked(24 * 24, 375, irreps, np.float64, 11).reshape(24, 24, 375)
    y = _blocked(4 * 24, 375, irreps, np.float64, 12).reshape(4, 24, 375)
    ops = [_coo_with_stored_zeros(a, 0) if stored_zeros else fs.COO.from_numpy(a) for a in (x, y)]
    calls = []
    real = _classes.class_product

    def spy(dx, dy, same, *keys):
        res = real(dx, dy, same, *keys)
        calls.append((same, len(keys), res is not NOT_TAKEN))
        return res

    monkeypatch.setattr(_dense, "class_product", spy)
    monkeypatch.setattr(_classes._limits, "CLASS_MIN_PLAIN_SECONDS", 0.0)  # any size
    got = fs.einsum("abQ,icQ->abic", *ops)
    np.testing.assert_allclose(np.asarray(got), np.einsum("abQ,icQ->abic", x, y), rtol=1e-10, atol=1e-10)
    assert calls == [(False, 2, True)]


def test_einsum_cross_product_of_unsorted_coo_matches_numpy(monkeypatch):
    """An operand stored in unsorted pieces is densified by the scatter and keyed after."""
    x = _blocked(12 * 12, 90, 3, np.float64, 13).reshape(12, 12, 90)
    y = _blocked(3 * 12, 90, 3, np.float64, 14).reshape(3, 12, 90)
    cy = fs.COO.from_numpy(y)
    perm = np.random.default_rng(0).permutation(cy.nnz)
    shuffled = COO(cy.coords[:, perm], cy.data[perm], cy.shape)
    monkeypatch.setattr(_classes._limits, "CLASS_MIN_PLAIN_SECONDS", 0.0)
    got = fs.einsum("abQ,icQ->abic", fs.COO.from_numpy(x), shuffled)
    np.testing.assert_allclose(np.asarray(got), np.einsum("abQ,icQ->abic", x, y), rtol=1e-10, atol=1e-10)


def test_unblocked_cross_product_with_zero_tails_takes_the_tail_steps(monkeypatch):
    """Operands whose zeros are scattered (no classes) but whose rows store only prefixes of
    the contracted index go on to the zero-tail steps on the dense forms already made."""
    rng = np.random.default_rng(15)
    def tailed(n):
        vals = rng.standard_normal((n, 300)) * (rng.random((n, 300)) < 0.9)  # scattered zeros
        sup = rng.choice([100, 200, 300], n)
        vals[np.arange(300)[None, :] >= sup[:, None]] = 0.0
        return vals
    x, y = tailed(24 * 24).reshape(24, 24, 300), tailed(4 * 24).reshape(4, 24, 300)
    calls = []
    real = _dense.zero_tail_steps

    def spy(*args):
        calls.append(args[0] is None)
        return real(*args)

    monkeypatch.setattr(_dense, "zero_tail_steps", spy)
    monkeypatch.setattr(_classes._limits, "CLASS_MIN_PLAIN_SECONDS", 0.0)
    got = fs.einsum("abQ,icQ->abic", fs.COO.from_numpy(x), fs.COO.from_numpy(y))
    np.testing.assert_allclose(np.asarray(got), np.einsum("abQ,icQ->abic", x, y), rtol=1e-10, atol=1e-10)
    assert calls == [True]
