"""The zero-tail product of two dense-enough COO operands (contract._zero_tail and its
kernels in kernels.cpu.densify) against dense NumPy: sorted and unsorted inputs, rows with
gaps and runs crossing rows, dtypes, densities, grouped and plain plans, inf/nan."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flexsparse as fs
from flexsparse import _limits
from flexsparse.contract import _dense, _zero_tail
from flexsparse.formats.coo import COO, _row_major_strides
from flexsparse.kernels.cpu import densify


def _tailed(shape, nk, levels, dtype, seed, fill=1.0, holes=0.0):
    """A dense array whose rows along the trailing ``nk`` modes store a prefix whose length
    is drawn from ``levels`` (fractions of K), ``fill`` of the prefix stored, ``holes`` of
    the stored cells explicit zeros; returns ``(stored mask, values)``."""
    rng = np.random.default_rng(seed)
    k = int(np.prod(shape[len(shape) - nk:]))
    r = int(np.prod(shape[:len(shape) - nk]))
    lens = (rng.choice(levels, size=r) * k).astype(int)
    mask = np.arange(k)[None, :] < lens[:, None]
    mask &= rng.random((r, k)) < fill
    vals = rng.standard_normal((r, k))
    if np.dtype(dtype).kind == "c":
        vals = vals + 1j * rng.standard_normal((r, k))
    vals[rng.random((r, k)) < holes] = 0
    vals = np.where(mask, vals, 0).astype(dtype)
    return mask.reshape(shape), vals.reshape(shape)


def _coo(mask, vals, order="sorted", seed=0):
    """COO of the stored cells: ``sorted`` (canonical), ``shuffled`` (non-canonical) or
    ``split`` (every value stored as two halves, shuffled: duplicates)."""
    coords = np.array(np.nonzero(mask), dtype=np.int64).reshape(mask.ndim, -1)
    data = vals[tuple(coords)]
    if order == "sorted":
        return COO(coords, data, mask.shape, canonical=True)
    rng = np.random.default_rng(seed)
    if order == "split":
        coords = np.hstack([coords, coords])
        data = np.hstack([data / 2, data - data / 2])
    perm = rng.permutation(data.shape[0])
    return COO(coords[:, perm], data[perm], mask.shape, canonical=False)


def _model(threads=1, **fields):
    """The plan's time model on ``threads`` BLAS threads with some fields replaced."""
    model = _zero_tail.plan_model(threads)
    for name, value in fields.items():
        model[densify.MODEL_FIELDS.index(name)] = value
    return model


def _check(spec, x, xd, y, yd, dtype):
    layout = _zero_tail.zero_tail_layout(spec, x.shape, y.shape)
    assert layout is not None
    got = _zero_tail.zero_tail_pair(x, y, layout)
    want = np.einsum(spec, xd, yd)
    tol = 1e-4 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-11
    assert got is not None and got is not _zero_tail.NOT_TAKEN
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=tol, atol=tol)
    full = fs.einsum(spec, x, y)
    np.testing.assert_allclose(full, want, rtol=tol, atol=tol)
    return layout


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
@pytest.mark.parametrize("order", ["sorted", "shuffled", "split"])
@pytest.mark.parametrize("fill", [1.0, 0.8])
@pytest.mark.parametrize("plan", ["grouped", "plain"])
@pytest.mark.parametrize("wide", [False, True])
def test_grouped_product_matches_numpy(dtype, order, fill, plan, wide, monkeypatch):
    """Three levels, gaps inside rows (fill < 1), runs that cross rows (full-length
    neighbours), explicit zeros; the model's fixed cost set to force each plan. ``wide``:
    the output has more columns than rows (the GEMMs then keep the operands' order; else
    the narrow side goes first and the steps add into the transposed output)."""
    monkeypatch.setattr(_limits, "ZERO_TAIL_FIXED_SECONDS", 0.0 if plan == "grouped" else 1.0)
    monkeypatch.setattr(_limits, "ZERO_TAIL_GEMM_CALL_SECONDS", 0.0)
    mx, xd = _tailed((12, 10, 120), 1, [0.5, 0.75, 1.0], dtype, 1, fill=fill, holes=0.1)
    my, yd = _tailed((4, 15, 120), 1, [0.0, 0.5, 0.75, 1.0], dtype, 2, fill=fill)
    x, y = _coo(mx, xd, order, 3), _coo(my, yd, order, 4)
    spec = "abQ,icQ->abic"
    if wide:
        _check("icQ,abQ->icab", y, yd, x, xd, dtype)
    layout = _check(spec, x, xd, y, yd, dtype)
    sup_x = densify.support_entries(*_zero_tail._entry_rows(x, layout[3][0], 2, 120), x.data,
                                    np.zeros((120, 120), dtype=dtype))[0]
    sup_y = densify.support_entries(*_zero_tail._entry_rows(y, layout[4][0], 2, 120), y.data,
                                    np.zeros((60, 120), dtype=dtype))[0]
    cuts = densify.zero_tail_plan(sup_x, sup_y, 120, _limits.ZERO_TAIL_LEVEL_MERGE, _model(), False)[0]
    assert (cuts.shape[0] >= 2) == (plan == "grouped")


@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("same", [False, True])
def test_densities_and_same_operand(density, same):
    """Empty, sparse and full operands (full: the plain plan, data copied unchecked), and
    ``x`` passed twice (one densify)."""
    levels = [1.0] if density == 1.0 else [0.2, 1.0]
    mx, xd = _tailed((6, 30, 64), 1, levels, np.float64, 5, fill=max(density, 1e-9))
    x = _coo(mx, xd)
    if same:
        y, yd = x, xd
    else:
        my, yd = _tailed((5, 30, 64), 1, levels, np.float64, 6, fill=max(density, 1e-9))
        y = _coo(my, yd)
    spec = "iaQ,jbQ->iajb"
    got = _zero_tail.zero_tail_pair(x, y, _zero_tail.zero_tail_layout(spec, x.shape, y.shape))
    want = np.einsum(spec, xd, yd)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fs.einsum(spec, x, y), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("spec", "sx", "sy", "nk"), [
    ("abPQ,cPQ->abc", (5, 6, 4, 30), (40, 4, 30), 2),   # two contracted modes, 1 free mode on y
    ("Q,iQ->i", (200,), (90, 200), 1),                  # no free mode on x
    ("abcQ,dQ->abcd", (3, 4, 5, 150), (30, 150), 1),    # three free modes: rows formed once
])
@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_layouts(spec, sx, sy, nk, order):
    mx, xd = _tailed(sx, nk, [0.3, 1.0], np.float64, 7, fill=0.9)
    my, yd = _tailed(sy, nk, [0.3, 0.6, 1.0], np.float64, 8, fill=0.9)
    _check(spec, _coo(mx, xd, order, 1), xd, _coo(my, yd, order, 2), yd, np.float64)


def test_layout_rules():
    """Only trailing contracted modes in the same order, without batch, take the path."""
    assert _zero_tail.zero_tail_layout("abQ,icQ->abic", (2, 3, 4), (5, 6, 4)) is not None
    assert _zero_tail.zero_tail_layout("aQb,icQ->abic", (2, 4, 3), (5, 6, 4)) is None
    assert _zero_tail.zero_tail_layout("abPQ,cQP->abc", (2, 3, 4, 5), (6, 5, 4)) is None
    assert _zero_tail.zero_tail_layout("bQ,bQ->b", (2, 4), (2, 4)) is None


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 30), st.lists(st.integers(0, 30), min_size=1, max_size=9),
       st.integers(0, 2**31 - 1), st.booleans())
def test_support_and_split_kernels(n_rows, k, lens, seed, gaps):
    """Support lengths from the run walk equal those of the entry pass and of the dense array;
    the split copy puts every cell where the plan says; the plan's steps cover every row."""
    rng = np.random.default_rng(seed)
    lens = np.minimum(np.resize(np.array(lens), n_rows), k)
    mask = np.arange(k)[None, :] < lens[:, None]
    if gaps:
        mask &= rng.random((n_rows, k)) < 0.7
    vals = np.where(mask, rng.standard_normal((n_rows, k)) + 1, 0)
    coords = np.array(np.nonzero(mask), dtype=np.int64)
    want = np.where(mask.any(1), k - np.argmax(mask[:, ::-1], axis=1), 0)
    strides = _row_major_strides((n_rows, k))
    sup, runs = densify.support_sorted(coords, strides, k, n_rows)
    np.testing.assert_array_equal(sup, want)
    dense = np.zeros((n_rows, k))
    sup2, bad = densify.support_entries(coords[0], coords[0], 0, coords[1], vals[mask], dense)
    np.testing.assert_array_equal(sup2, want)
    np.testing.assert_array_equal(dense, vals)
    assert not bad
    model = _model(mac=1.0, pack=0.0, call=0.0, cell=0.0, fixed=0.0)
    cuts, nx, ny, pos, rows, _, _ = densify.zero_tail_plan(sup, sup, k, 0.0, model, False)
    if cuts.shape[0] == 0:
        return
    c, kt = int(cuts[0]), int(cuts[-1] - cuts[0])
    assert (sup[pos < 0] <= c).all() and (sup[pos >= 0] > c).all()
    main, tail = np.full((n_rows, c), np.nan), np.full((rows.shape[0], kt), np.nan)
    assert not densify.split_sorted(runs, vals[mask], k, pos, main, tail)
    np.testing.assert_array_equal(main, vals[:, :c])
    np.testing.assert_array_equal(tail, vals[rows, c:c + kt])
    assert (np.diff(sup[rows]) <= 0).all()  # levels descending (no merging)
    for s in range(cuts.shape[0] - 1):
        assert nx[s] == ny[s] == (sup > cuts[s]).sum()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 40), st.integers(1, 60), st.integers(0, 2**31 - 1),
       st.sampled_from([0.0, 0.3, 1.0]), st.sampled_from([-1, 0, 3, 1000]), st.sampled_from(["none", "inf", "nan"]))
def test_support_entries_runs_in_any_order(n_rows, k, run, seed, dup, max_runs, bad):
    """Entries in shuffled pieces of consecutive cells (runs cut anywhere, rows crossed,
    pieces repeated: duplicates add up): the run path and the per-entry path give the dense
    array, the support lengths and the inf/nan flag NumPy gives, within any run budget."""
    rng = np.random.default_rng(seed)
    size = n_rows * k
    cells = np.flatnonzero(rng.random(size) < 0.8)
    pieces = np.split(cells, np.flatnonzero(np.diff(cells) != 1) + 1) if cells.size else []
    pieces = [p[i:i + run] for p in pieces for i in range(0, p.size, run)]
    pieces += [pieces[i] for i in range(len(pieces)) if rng.random() < dup]
    order = rng.permutation(len(pieces))
    lin = np.concatenate([pieces[i] for i in order]) if pieces else np.zeros(0, dtype=np.int64)
    vals = rng.standard_normal(lin.size)
    if bad != "none" and lin.size:
        vals[rng.integers(lin.size)] = np.inf if bad == "inf" else np.nan
    want = np.zeros(size)
    np.add.at(want, lin, vals)
    mask = np.zeros(size, dtype=bool)
    mask[lin] = True
    mask = mask.reshape(n_rows, k)
    want_sup = np.where(mask.any(1), k - np.argmax(mask[:, ::-1], axis=1), 0)
    hi, q = (lin // k).astype(np.int32), (lin % k).astype(np.int32)
    starts = densify.entry_runs(hi, hi, 0, q, k, max_runs)
    if starts.shape[0]:
        assert starts[0] == 0 and starts[-1] == lin.size and starts.shape[0] - 1 <= max_runs
        for a, b in zip(starts[:-1], starts[1:]):
            assert (np.diff(lin[a:b]) == 1).all()
            assert b == lin.size or lin[b] != lin[b - 1] + 1
    for budget in (-1, max_runs):
        dense = np.zeros((n_rows, k))
        sup, flag = densify.support_entries(hi, hi, 0, q, vals, dense, budget)
        np.testing.assert_array_equal(sup, want_sup)
        assert bool(flag) == (bad != "none" and lin.size > 0)
        np.testing.assert_allclose(dense.reshape(-1), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("value", [np.inf, np.nan])
@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_nonfinite_goes_to_full_path(value, order):
    """An inf or nan flagged by the densify pass: the zero-tail path declines, einsum gives
    NumPy's values (the skipped tails would have made nan)."""
    mx, xd = _tailed((10, 12, 100), 1, [0.4, 1.0], np.float64, 9, fill=0.9)
    my, yd = _tailed((4, 12, 100), 1, [0.4, 1.0], np.float64, 10, fill=0.9)
    r = int(np.argmax(mx.reshape(120, 100).sum(1) == 100))  # a full row of x
    xd.reshape(120, 100)[r, 99] = value
    mx.reshape(120, 100)[r, 99] = True
    x, y = _coo(mx, xd, order, 1), _coo(my, yd, order, 2)
    spec = "abQ,icQ->abic"
    assert _zero_tail.zero_tail_pair(x, y, _zero_tail.zero_tail_layout(spec, x.shape, y.shape)) is None
    assert _dense.coo_pair_fast(spec, x, y, "auto") is None
    with np.errstate(invalid="ignore"):
        want = np.einsum(spec, xd, yd)
        got = fs.einsum(spec, x, y, format="dense")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-12)


def test_plan_model():
    """The plan splits only when the model's savings pass the fixed cost."""
    full = np.full(200, 300, dtype=np.int64)
    short = np.concatenate([np.full(100, 300), np.full(100, 30)]).astype(np.int64)
    merge = _limits.ZERO_TAIL_LEVEL_MERGE
    assert densify.zero_tail_plan(full, full, 300, merge, _model(), False)[0].shape[0] == 0
    cuts = densify.zero_tail_plan(short, short, 300, merge, _model(), False)[0]
    assert cuts.tolist() == [30, 300]
    assert densify.zero_tail_plan(short, short, 300, merge, _model(fixed=1.0), False)[0].shape[0] == 0
    # lengths within the merge fraction share a level (here: the plain GEMM's), else not
    near = np.concatenate([np.full(100, 300), np.full(100, 285)]).astype(np.int64)
    assert densify.zero_tail_plan(near, near, 300, merge, _model(fixed=0.0), False)[0].shape[0] == 0
    assert densify.zero_tail_plan(near, near, 300, 0.0, _model(fixed=0.0), False)[0].tolist() == [285, 300]


def test_gemm_model_syrk_and_threads():
    """A self-product is modelled as a SYRK (about half a GEMM's time); a product below the
    threading base gains nothing from a second thread, a large one gains ``1 + cap``."""
    one, two = _model(1), _model(2)
    gemm = densify._gemm_seconds(576, 576, 375, False, one)
    syrk = densify._gemm_seconds(576, 576, 375, True, one)
    assert 0.4 * gemm < syrk < 0.7 * gemm
    call = _limits.ZERO_TAIL_GEMM_CALL_SECONDS
    small = densify._gemm_seconds(96, 96, 193, True, one)  # 0.9M multiply-adds: below the SYRK base
    assert densify._gemm_seconds(96, 96, 193, True, two) == small
    big2 = densify._gemm_seconds(576, 576, 375, True, two)
    assert (syrk - call) / (big2 - call) == pytest.approx(1 + _limits.ZERO_TAIL_THREAD_SYRK_CAP)
    assert densify._gemm_seconds(576, 576, 375, False, two) < gemm / 1.5
    assert densify._gemm_seconds(0, 576, 375, True, one) == 0.0


@pytest.mark.parametrize("cell", [None, 4e-9])
def test_plan_self_product(cell):
    """Self-product plans return one tail order for both sides; more threads (the scatter
    serial, the GEMMs faster) never make a split more attractive (chemistry-like levels:
    on one thread the split wins, on two the plain SYRK, as measured)."""
    sup = np.repeat(np.array([193] * 5 + [284] * 4 + [375] * 15, dtype=np.int64), 24)  # TEvv's 576 rows
    fields = {} if cell is None else {"cell": cell}
    plans = [densify.zero_tail_plan(sup, sup, 375, 1 / 16, _model(t, **fields), True) for t in (1, 2, 4)]
    splits = [p[0].shape[0] > 0 for p in plans]
    assert splits == sorted(splits, reverse=True)
    cuts, nx, ny, pos_x, rows_x, pos_y, rows_y = plans[0]
    if cell is None:
        assert splits == [True, False, False]
        assert cuts.tolist() == [193, 284, 375]
    if splits[0]:
        assert np.shares_memory(pos_x, pos_y) and np.shares_memory(rows_x, rows_y) and (nx == ny).all()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 40), st.integers(0, 2**31 - 1), st.booleans())
def test_scatter_add_block(n_rows, n_cols, seed, fortran):
    """Runs of consecutive output columns and scattered ones, C and Fortran blocks: blocks
    in long runs are added run by run, the others cell by cell (``_limits.SCATTER_MIN_MEAN_RUN``)."""
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((n_rows + 5, n_cols + 7))
    rows = np.sort(rng.choice(n_rows + 5, size=n_rows, replace=False))
    cols = rng.choice(n_cols + 7, size=n_cols, replace=False)
    kind = rng.integers(3)
    if kind == 1:  # runs: a sorted stretch of the columns
        cols[: n_cols // 2] = np.sort(cols[: n_cols // 2])
    elif kind == 2:  # one run, or two: long runs
        start = int(rng.integers(0, 8))
        cols = np.arange(start, start + n_cols)
        cols[n_cols // 2:] += 1 if start + n_cols < n_cols + 7 else 0
    block = rng.standard_normal((n_rows, n_cols))
    if fortran:
        block = np.asfortranarray(block)
    want = out.copy()
    want[np.ix_(rows, cols)] += block
    densify.scatter_add_block(out, rows, cols, block)
    np.testing.assert_allclose(out, want, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("order", ["sorted", "shuffled", "split"])
@pytest.mark.parametrize("dtype", [np.float64, np.complex64])
@pytest.mark.parametrize("density", [0.0, 0.3, 0.95, 1.0])
def test_self_product_on_blas_threads(threads, order, dtype, density, monkeypatch):
    """``x`` given twice, planned for one and for two BLAS threads (the plan may differ),
    empty, sparse (short runs: the scatter), dense-ish with zero tails and full: equal to
    NumPy either way."""
    monkeypatch.setattr(_zero_tail, "blas_threads", lambda: threads)
    levels = [1.0] if density == 1.0 else [0.5, 0.75, 1.0]
    mx, xd = _tailed((16, 12, 200), 1, levels, dtype, 11, fill=max(density, 1e-9), holes=0.05)
    x = _coo(mx, xd, order, 12)
    spec = "abQ,cdQ->abcd"
    got = _zero_tail.zero_tail_pair(x, x, _zero_tail.zero_tail_layout(spec, x.shape, x.shape))
    want = np.einsum(spec, xd, xd)
    tol = 1e-4 if np.dtype(dtype) == np.complex64 else 1e-11
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=tol, atol=tol)
    np.testing.assert_allclose(fs.einsum(spec, x, x), want, rtol=tol, atol=tol)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(2, 30), st.lists(st.integers(-2, 2), min_size=1, max_size=40),
       st.integers(0, 2**31 - 1))
def test_run_walk_guesses(n_rows, k, jitter, seed):
    """Rows whose stored prefixes repeat one length with +-1, +-2 deviations (the walk's guess
    is the previous run's length: right, one short, one long), full rows that join runs
    across rows, and the run budget: the walk, the run copy and the dense array agree."""
    rng = np.random.default_rng(seed)
    base = int(rng.integers(1, k + 1))
    lens = np.clip(base + np.resize(np.array(jitter), n_rows), 0, k)
    lens[rng.random(n_rows) < 0.2] = k
    mask = np.arange(k)[None, :] < lens[:, None]
    vals = np.where(mask, rng.standard_normal((n_rows, k)) + 3, 0)
    coords = np.array(np.nonzero(mask), dtype=np.int64)
    strides = _row_major_strides((n_rows, k))
    sup, runs = densify.support_sorted(coords, strides, k, n_rows)
    np.testing.assert_array_equal(sup, lens)
    assert runs[:, 2].sum() == coords.shape[1]
    if coords.shape[1]:
        flat = np.full(n_rows * k, np.nan)
        assert not densify.sorted_coo_to_dense(coords, vals[mask], strides, flat, True)
        np.testing.assert_array_equal(flat.reshape(n_rows, k), vals)
        n_runs = runs.shape[0]
        assert densify.support_sorted(coords, strides, k, n_rows, n_runs)[1].shape[0] == n_runs
        assert densify.support_sorted(coords, strides, k, n_rows, n_runs - 1)[1].shape[0] == 0


def test_plan_cache(monkeypatch):
    """Plans are remembered per exact support lengths, self-product flag and model; the
    cache keeps at most its limit; a product planned from the cache equals NumPy."""
    monkeypatch.setattr(_zero_tail, "_PLANS", {})
    monkeypatch.setattr(_limits, "ZERO_TAIL_PLAN_CACHE_ENTRIES", 2)
    sup = np.repeat(np.array([193] * 5 + [284] * 4 + [375] * 15, dtype=np.int64), 24)
    first = _zero_tail.plan_steps(densify, sup, sup, 375, True)
    assert _zero_tail.plan_steps(densify, sup.copy(), sup.copy(), 375, True) is first
    other = sup.copy()
    other[0] = 375
    assert _zero_tail.plan_steps(densify, other, other, 375, True) is not first
    monkeypatch.setattr(_limits, "ZERO_TAIL_FIXED_SECONDS", 1.0)  # another model: planned again (plain)
    assert _zero_tail.plan_steps(densify, sup, sup, 375, True)[0].shape[0] == 0
    assert len(_zero_tail._PLANS) == 2
    mx, xd = _tailed((12, 10, 120), 1, [0.5, 1.0], np.float64, 21, fill=1.0)
    x = _coo(mx, xd)
    for _ in range(2):
        _check("abQ,cdQ->abcd", x, xd, x, xd, np.float64)
