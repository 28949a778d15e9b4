"""SpGEMM (Gustavson, dense and hash accumulators) and the CSR container vs SciPy/NumPy."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import flexsparse.kernels.cpu._spgemm_worker as spgemm_worker
import flexsparse.kernels.cpu.spgemm as spgemm_mod
from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu._spgemm_flops import _row_flops
from flexsparse.kernels.cpu._spgemm_rows import warm
from flexsparse.kernels.cpu.spgemm import (
    ACCUMULATORS,
    ADAPT_CHUNK,
    BACK_CHUNK,
    DENSE_MAX_COLS,
    VARIANTS,
    get_accumulator,
    spgemm,
)

from ..conftest import rand_csr

DTYPES = [np.float32, np.float64, np.int64, np.complex128]


def pattern(x: CSR):
    """Structural pattern (ones at every stored entry) as a SciPy float matrix."""
    return sp.csr_array((np.ones(x.nnz), x.indices, x.indptr), shape=x.shape)


def check_product(c: CSR, a: CSR, b: CSR, rtol=1e-10, sort=True):
    """Exact structure vs the structural product (rows sorted, or the same column sets when
    ``sort=False``, never a duplicate), values vs dense NumPy."""
    c.validate()
    assert c.sorted_indices == sort
    ref = pattern(a) @ pattern(b)
    ref.sort_indices()
    np.testing.assert_array_equal(c.indptr, ref.indptr)
    if sort:
        np.testing.assert_array_equal(c.indices, ref.indices)
    else:
        s = c.sorted()
        assert s.nnz == c.nnz  # sorting found no duplicate to merge
        np.testing.assert_array_equal(s.indices, ref.indices)
    dense = a.toarray() @ b.toarray()
    assert c.dtype == dense.dtype
    np.testing.assert_allclose(c.toarray(), dense, rtol=rtol, atol=rtol * 10)


# ---------------------------------------------------------------------------- CSR
@pytest.mark.jitless
def test_csr_transpose_and_roundtrip_tiny():
    rng = np.random.default_rng(0)
    a = rand_csr(rng, (3, 4), 0.5)
    t = a.transpose()
    t.validate()
    np.testing.assert_array_equal(t.toarray(), a.toarray().T)
    np.testing.assert_array_equal(CSR.from_scipy(a.to_scipy()).toarray(), a.toarray())


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (1, 1), (7, 30), (30, 7)])
def test_csr_from_coo_sums_duplicates(shape):
    rng = np.random.default_rng(1)
    m, n = shape
    k = 40 if m and n else 0
    rows, cols = rng.integers(0, max(m, 1), k), rng.integers(0, max(n, 1), k)
    vals = rng.standard_normal(k)
    c = CSR.from_coo_arrays(rows, cols, vals, shape)
    ref = sp.coo_array((vals, (rows, cols)), shape=shape).tocsr()
    ref.sum_duplicates()
    np.testing.assert_array_equal(c.indptr, ref.indptr)
    np.testing.assert_array_equal(c.indices, ref.indices)
    np.testing.assert_allclose(c.data, ref.data)
    np.testing.assert_allclose(c.transpose().toarray(), ref.toarray().T)


def test_csr_validate_errors():
    with pytest.raises(ValueError, match="indptr must have length n_rows \\+ 1 = 3"):
        CSR(np.array([0, 1]), np.array([0]), np.ones(1), (2, 2))
    with pytest.raises(ValueError, match="column index 5 at position 0 is out of range"):
        CSR(np.array([0, 1]), np.array([5]), np.ones(1), (1, 2))
    with pytest.raises(ValueError, match="row 1 are not strictly increasing"):
        CSR(np.array([0, 1, 3]), np.array([0, 1, 1]), np.ones(3), (2, 2))
    with pytest.raises(ValueError, match="indptr decreases at row 1 \\(2 then 1\\)"):
        CSR(np.array([0, 2, 1]), np.array([0, 1]), np.ones(2), (2, 2))
    with pytest.raises(TypeError, match="indices must be an integer array"):
        CSR(np.array([0, 1]), np.array([0.5]), np.ones(1), (1, 2))
    with pytest.raises(TypeError, match="non-numeric dtype"):
        CSR(np.array([0, 1]), np.array([0]), np.array(["x"]), (1, 2))
    with pytest.raises(ValueError, match="row coordinate 3 at position 1 is out of range"):
        CSR.from_coo_arrays([0, 3], [0, 0], [1.0, 1.0], (2, 2))
    # unsorted is fine when declared
    u = CSR(np.array([0, 2]), np.array([1, 0]), np.array([1.0, 2.0]), (1, 2), sorted_indices=False)
    np.testing.assert_array_equal(u.toarray(), [[2.0, 1.0]])


# ---------------------------------------------------------------------------- spgemm
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("accumulator", ["dense", "hash", "auto"])
@pytest.mark.parametrize("density", [0.0, 0.01, 0.3, 1.0])
def test_spgemm_matches_scipy(dtype, accumulator, density):
    rng = np.random.default_rng(2)
    a = rand_csr(rng, (40, 25), density, dtype)
    b = rand_csr(rng, (25, 33), density, dtype)
    c = spgemm(a, b, accumulator=accumulator)
    check_product(c, a, b, rtol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("accumulator", ["dense", "hash"])
@pytest.mark.parametrize("shape_a,shape_b", [((0, 5), (5, 4)), ((4, 0), (0, 6)), ((4, 5), (5, 0)),
                                             ((1, 1), (1, 1)), ((200, 3), (3, 150)), ((3, 200), (200, 2))])
def test_spgemm_ragged_and_empty_shapes(accumulator, shape_a, shape_b):
    rng = np.random.default_rng(3)
    a = rand_csr(rng, shape_a, 0.5)
    b = rand_csr(rng, shape_b, 0.5)
    check_product(spgemm(a, b, accumulator=accumulator), a, b)


@pytest.mark.parametrize("accumulator", ["dense", "hash", "auto"])
def test_spgemm_powerlaw_threads_agree(accumulator):
    rng = np.random.default_rng(4)
    a = rand_csr(rng, (600, 500), 0.01, powerlaw=True)
    b = rand_csr(rng, (500, 700), 0.01, powerlaw=True)
    c1 = spgemm(a, b, accumulator=accumulator, threads=1)
    c = spgemm(a, b, accumulator=accumulator)
    check_product(c, a, b)
    np.testing.assert_array_equal(c.indptr, c1.indptr)
    np.testing.assert_array_equal(c.indices, c1.indices)
    np.testing.assert_allclose(c.data, c1.data, rtol=1e-12)


def test_spgemm_wide_output_uses_both_accumulators():
    """A wide output (> DENSE_MAX_COLS columns): rows of A that hit the two dense rows
    of B use the dense accumulator under 'auto', the others the hash; all match."""
    rng = np.random.default_rng(5)
    n = DENSE_MAX_COLS + 40_000
    flags = get_accumulator("auto")(np.array([1e6, 10.0]), np.array([10, 10]), n)
    assert flags.tolist() == [True, False]
    a = CSR.from_coo_arrays([0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 0, 1, 10, 20, 30, 40],
                            rng.standard_normal(8), (8, 50))
    dense_rows = rand_csr(rng, (2, n), 0.05)
    sparse_rows = rand_csr(rng, (48, n), 0.0002)
    b = CSR.from_scipy(sp.vstack([dense_rows.to_scipy(), sparse_rows.to_scipy()]).tocsr())
    for acc in ("auto", "hash", "dense"):
        check_product(spgemm(a, b, accumulator=acc, threads=min(2, numba.config.NUMBA_NUM_THREADS)), a, b)


def test_spgemm_unsorted_b_and_int64_indices():
    rng = np.random.default_rng(6)
    a = rand_csr(rng, (30, 20), 0.2)
    b = rand_csr(rng, (20, 25), 0.3)
    perm = np.concatenate([rng.permutation(np.arange(b.indptr[i], b.indptr[i + 1]))
                           for i in range(b.n_rows)]).astype(np.int64)
    bu = CSR(b.indptr, b.indices[perm].astype(np.int64), b.data[perm], b.shape, sorted_indices=False)
    assert bu.indices.dtype == np.int64
    for acc in ("dense", "hash"):
        check_product(spgemm(a, bu, accumulator=acc), a, b)


def test_spgemm_nan_inf_and_explicit_zeros_propagate():
    a = CSR(np.array([0, 2, 3]), np.array([0, 1, 1]), np.array([0.0, 1.0, np.inf]), (2, 2))
    b = CSR(np.array([0, 1, 2]), np.array([0, 0]), np.array([np.nan, 0.0]), (2, 1))
    for acc in ("dense", "hash"):
        c = spgemm(a, b, accumulator=acc)
        np.testing.assert_array_equal(c.indices, [0, 0])  # structural: both rows stored
        assert np.isnan(c.data).all()  # 0*nan + 1*0 = nan ; inf*0 = nan
        with np.errstate(invalid="ignore"):
            np.testing.assert_array_equal(c.toarray(), a.toarray() @ b.toarray())


def test_spgemm_dtype_promotion_and_bool():
    rng = np.random.default_rng(7)
    a = rand_csr(rng, (10, 8), 0.4, np.float32)
    b = rand_csr(rng, (8, 9), 0.4, np.int64)
    c = spgemm(a, b)
    assert c.dtype == np.result_type(np.float32, np.int64)
    check_product(c, a, b, rtol=1e-6)
    ab = rand_csr(rng, (10, 8), 0.4, np.bool_)
    bb = rand_csr(rng, (8, 9), 0.4, np.bool_)
    cb = spgemm(ab, bb)
    assert cb.dtype == np.bool_
    np.testing.assert_array_equal(cb.toarray(), ab.toarray() @ bb.toarray())


@pytest.mark.jitless
def test_spgemm_tiny_both_accumulators():
    rng = np.random.default_rng(8)
    a = rand_csr(rng, (4, 3), 0.6)
    b = rand_csr(rng, (3, 5), 0.6)
    for acc in ("dense", "hash"):
        check_product(spgemm(a, b, accumulator=acc, threads=1), a, b)


def test_spgemm_errors():
    rng = np.random.default_rng(9)
    a = rand_csr(rng, (4, 3), 0.5)
    with pytest.raises(ValueError, match="a has 3 columns .* but b has 4 rows"):
        spgemm(a, a)
    with pytest.raises(ValueError, match="unknown accumulator 'spa'; valid names: auto, dense, hash"):
        spgemm(a, a.transpose(), accumulator="spa")
    with pytest.raises(TypeError, match="b must be a flexsparse CSR"):
        spgemm(a, np.ones((3, 3)))
    with pytest.raises(ValueError, match="threads must be None or an int"):
        spgemm(a, a.transpose(), threads=0)
    with pytest.raises(ValueError, match="unknown variant 'fast'; valid names: auto, position, value"):
        spgemm(a, a.transpose(), variant="fast")
    assert set(ACCUMULATORS) == {"auto", "dense", "hash"}


@settings(max_examples=25, deadline=None)
@given(m=st.integers(0, 12), k=st.integers(0, 12), n=st.integers(0, 12),
       da=st.floats(0, 1), db=st.floats(0, 1), seed=st.integers(0, 2**16),
       acc=st.sampled_from(["dense", "hash"]))
def test_spgemm_property(m, k, n, da, db, seed, acc):
    rng = np.random.default_rng(seed)
    a = rand_csr(rng, (m, k), da)
    b = rand_csr(rng, (k, n), db)
    check_product(spgemm(a, b, accumulator=acc), a, b)


@pytest.mark.parametrize("accumulator", ["dense", "hash", "auto"])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.bool_])
def test_spgemm_parallel_kernels_match_serial(monkeypatch, accumulator, dtype):
    """Force the parallel symbolic/numeric kernels (SMALL_FLOPS = 0) on 2 threads and
    compare with the fused one-thread kernel and the oracle."""
    import flexsparse.kernels.cpu.spgemm as mod

    rng = np.random.default_rng(10)
    a = rand_csr(rng, (300, 250), 0.02, dtype, powerlaw=True)
    b = rand_csr(rng, (250, 9000), 0.003, dtype, powerlaw=True)
    c1 = spgemm(a, b, accumulator=accumulator, threads=1)
    monkeypatch.setattr(mod, "SMALL_FLOPS", 0)
    monkeypatch.setattr(mod, "PARALLEL_MIN_FLOPS", 0)
    c2 = spgemm(a, b, accumulator=accumulator, threads=min(2, numba.config.NUMBA_NUM_THREADS))
    for c in (c1, c2):
        if dtype == np.bool_:
            assert c.dtype == np.bool_
            np.testing.assert_array_equal(c.toarray(), a.toarray() @ b.toarray())
            ref = pattern(a) @ pattern(b)
            ref.sort_indices()
            np.testing.assert_array_equal(c.indices, ref.indices)
        else:
            check_product(c, a, b)
    np.testing.assert_array_equal(c1.indptr, c2.indptr)
    np.testing.assert_array_equal(c1.indices, c2.indices)


@pytest.mark.parametrize("n_cols", [70, 5000, 20000])
@pytest.mark.parametrize("row_len", [1, 3, 40])
def test_spgemm_dense_emission_modes(n_cols, row_len):
    """Sparse rows over a wide span take the two-level (summary bitmap) emission, dense
    rows walk the span word by word; both give the exact sorted structure, including
    columns in several 4096-column summary words and the last, partial bitmap word."""
    rng = np.random.default_rng(11)
    k = 60
    lengths = np.full(k, row_len)
    rows = np.repeat(np.arange(k), lengths)
    cols = np.concatenate([rng.choice(n_cols, row_len, replace=False) for _ in range(k)])
    cols[-1] = n_cols - 1  # touch the last column
    b = CSR.from_coo_arrays(rows, cols, rng.standard_normal(rows.size), (k, n_cols))
    a = rand_csr(rng, (50, k), 0.3)
    check_product(spgemm(a, b, accumulator="dense", threads=1), a, b)


# ------------------------------------------------------------------ paths of the engine
THREADS = min(2, numba.config.NUMBA_NUM_THREADS)


def _paths(monkeypatch, path):
    """Force one of the engine's paths: the fused small kernel, the one-thread one-pass
    path, the parallel path (last block written without counting) or the parallel path
    with every row counted first (no room for an uncounted block)."""
    if path != "small":
        monkeypatch.setattr(spgemm_mod, "SMALL_FLOPS", 0)
        monkeypatch.setattr(spgemm_mod, "PARALLEL_MIN_FLOPS", 0)
    if path == "counted":
        monkeypatch.setattr(spgemm_mod, "ONE_PASS_MAX_BYTES", 0)
    return 1 if path in ("small", "one-pass") else THREADS


@pytest.mark.parametrize("path", ["small", "one-pass", "parallel", "counted"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("accumulator", ["dense", "hash"])
@pytest.mark.parametrize("sort", [True, False])
def test_spgemm_every_path_variant_and_order(monkeypatch, path, variant, accumulator, sort):
    threads = _paths(monkeypatch, path)
    rng = np.random.default_rng(20)
    a = rand_csr(rng, (120, 90), 0.05, powerlaw=True)
    b = rand_csr(rng, (90, 300), 0.04, powerlaw=True)
    c = spgemm(a, b, accumulator=accumulator, variant=variant, sort=sort, threads=threads)
    check_product(c, a, b, sort=sort)


@pytest.mark.parametrize("path", ["one-pass", "parallel", "counted"])
@pytest.mark.parametrize("sort", [False, True])
def test_spgemm_adaptive_variant_choice_is_timed_and_correct(monkeypatch, path, sort):
    """A product with enough dense work per part and per worker for the timed trials of
    both dense variants (each variant computes a stretch twice, the second run timed): the
    result is the same whichever wins, sorted or not."""
    threads = _paths(monkeypatch, path)
    a = CSR.from_scipy(sp.random_array((2000, 2000), density=0.025, rng=np.random.default_rng(21), format="csr"))
    flops = (pattern(a) @ pattern(a)).sum()
    assert flops > threads * spgemm_worker._TIMED_WORKER_CHUNKS * ADAPT_CHUNK
    c = spgemm(a, a, sort=sort, threads=threads)
    check_product(c, a, a, sort=sort)
    if threads > 1:
        trace = spgemm_mod.LAST_TRACE
        assert trace.shape == (threads, spgemm_mod.TRACE_FIELDS)
        assert set(trace[:, 0]) <= {1.0, 2.0}
        assert np.isfinite(trace[:, 1:3]).all()  # both variants were timed on every thread
        assert trace[-1, 3] - spgemm_mod.LAST_START == c.nnz
        assert (trace[:, 5] > trace[:, 4]).all() and (trace[:, 4] > 0).all()  # cycle stamps


@pytest.mark.parametrize("n, timed", [(600, True), (120, False)])
def test_small_workers_time_the_variants_on_a_share_of_their_flops(monkeypatch, n, timed):
    """A worker with fewer multiply-adds than ``_TIMED_WORKER_CHUNKS`` full stretches still
    times both variants (once, on stretches of a share of its flops), and one below
    ``MIN_TIMED_FLOPS`` takes the position map untimed; the product is right either way."""
    _paths(monkeypatch, "parallel")
    a = CSR.from_scipy(sp.random_array((n, n), density=0.05, rng=np.random.default_rng(23), format="csr"))
    flops = int((pattern(a) @ pattern(a)).sum())
    assert flops < spgemm_worker._TIMED_WORKER_CHUNKS * ADAPT_CHUNK
    assert (flops >= 2.5 * spgemm_worker.MIN_TIMED_FLOPS) if timed else (flops < spgemm_worker.MIN_TIMED_FLOPS)
    c = spgemm(a, a, sort=False, threads=2)
    check_product(c, a, a, sort=False)
    trace = spgemm_mod.LAST_TRACE
    assert np.isfinite(trace[:, 1:3]).all() == timed
    if not timed:
        assert (trace[:, 0] == 1.0).all()

@pytest.mark.parametrize("dtype", [np.uint32, np.uint64, np.bool_, np.int64, np.float32, np.float64, np.complex128])
def test_warm_loads_every_workspace_dtype_and_writes_nothing(dtype):
    """The loads before a variant trial (:func:`warm`) compile for every workspace dtype, write
    nothing, and keep their loads: an empty ``asm`` statement reads what they loaded."""
    arr = (np.arange(1000) % 3).astype(dtype)
    before = arr.copy()
    warm(arr)
    warm(arr[:0])
    warm(arr[:5])
    np.testing.assert_array_equal(arr, before)
    if not numba.config.DISABLE_JIT:  # compiled afresh: a function loaded from the cache has no IR
        fresh = numba.njit(warm.py_func)
        fresh(arr)
        assert "asm sideeffect" in fresh.inspect_llvm(fresh.signatures[0])


@pytest.mark.parametrize("path", ["small", "one-pass", "parallel", "counted"])
@pytest.mark.parametrize("dtype", [np.bool_, np.int32, np.int64, np.float32, np.complex64, np.complex128])
def test_spgemm_dtypes_on_every_path(monkeypatch, path, dtype):
    threads = _paths(monkeypatch, path)
    rng = np.random.default_rng(22)
    a = rand_csr(rng, (70, 60), 0.1, dtype)
    b = rand_csr(rng, (60, 80), 0.1, dtype)
    c = spgemm(a, b, sort=False, threads=threads)
    assert c.dtype == np.result_type(dtype, dtype)
    if dtype == np.bool_:
        np.testing.assert_array_equal(c.toarray(), a.toarray() @ b.toarray())
    else:
        check_product(c, a, b, rtol=1e-5 if np.dtype(dtype).itemsize <= 8 and np.dtype(dtype).kind != "i"
                      else 1e-10, sort=False)


@pytest.mark.parametrize("path", ["small", "parallel"])
def test_spgemm_duplicates_and_unsorted_inputs_are_summed(monkeypatch, path):
    threads = _paths(monkeypatch, path)
    rng = np.random.default_rng(23)
    rows, cols = rng.integers(0, 40, 600), rng.integers(0, 30, 600)
    a = CSR.from_coo_arrays(rows, cols, rng.standard_normal(600), (40, 30), sum_duplicates=False)
    assert not a.sorted_indices  # holds duplicates
    b = rand_csr(rng, (30, 50), 0.2)
    bu = CSR.from_coo_arrays(np.repeat(np.arange(30), np.diff(b.indptr))[::-1].copy(), b.indices[::-1].copy(),
                             b.data[::-1].copy(), b.shape, sum_duplicates=False)
    c = spgemm(a, bu, sort=True, threads=threads)
    c.validate()
    np.testing.assert_allclose(c.toarray(), a.toarray() @ b.toarray(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("path", ["small", "one-pass", "parallel"])
def test_spgemm_empty_rows_columns_and_int64_indices(monkeypatch, path):
    threads = _paths(monkeypatch, path)
    rng = np.random.default_rng(24)
    a = rand_csr(rng, (50, 40), 0.15)
    keep = np.ones(50, bool)
    keep[::3] = False  # empty rows in A
    da = a.toarray() * keep[:, None]
    da[:, 5:9] = 0  # empty columns of A meet rows of B
    a = CSR.from_scipy(sp.csr_array(da))
    b = rand_csr(rng, (40, 45), 0.2)
    db = b.toarray()
    db[:, ::4] = 0  # empty columns of C
    b64 = CSR.from_scipy(sp.csr_array(db))
    b64 = CSR(b64.indptr, b64.indices.astype(np.int64), b64.data, b64.shape)
    for sort in (True, False):
        c = spgemm(a, b64, sort=sort, threads=threads)
        check_product(c, a, b64, sort=sort)


@pytest.mark.parametrize("path", ["small", "one-pass", "parallel", "counted"])
@pytest.mark.parametrize("self_product", [False, True])
def test_spgemm_narrows_int64_indices_when_rows_of_b_are_reread(monkeypatch, path, self_product):
    """int64 column indices are narrowed to int32 for the kernel exactly when the product
    reaches SPGEMM_NARROW_MIN_FLOPS_PER_ENTRY multiply-adds per stored entry (an operand given
    twice narrowed once), and the result is the same either way."""
    threads = _paths(monkeypatch, path)
    calls = []
    real = CSR.compact_indices

    def spy(self):
        calls.append(self.indices.dtype)
        return real(self)

    monkeypatch.setattr(CSR, "compact_indices", spy)
    rng = np.random.default_rng(31)
    for density in (0.02, 0.3):  # ~1 and ~18 multiply-adds per entry
        a = rand_csr(rng, (60, 60), density)
        a64 = CSR(a.indptr, a.indices.astype(np.int64), a.data, a.shape)
        b64 = a64 if self_product else CSR(a.indptr, a.indices.astype(np.int64), a.data * 2, a.shape)
        flops = int(np.diff(b64.indptr)[a64.indices].sum())
        calls.clear()
        c = spgemm(a64, b64, sort=True, threads=threads)
        check_product(c, a64, b64)
        nnz = a64.nnz + b64.nnz
        expected = 0 if flops < spgemm_mod.NARROW_MIN_FLOPS_PER_ENTRY * nnz else (1 if self_product else 2)
        assert len(calls) == expected and all(d == np.int64 for d in calls)


def test_spgemm_hub_rows_split_over_threads(monkeypatch):
    """Rows of very different cost (a few hub rows of A hitting long rows of B) on the
    parallel path: every worker's block starts where the previous one ended."""
    threads = _paths(monkeypatch, "parallel")
    rng = np.random.default_rng(25)
    n = 400
    rows = np.concatenate([np.zeros(n, np.int64), np.full(n, 7), rng.integers(0, n, 3 * n)])
    cols = np.concatenate([np.arange(n), np.arange(n), rng.integers(0, n, 3 * n)])
    a = CSR.from_coo_arrays(rows, cols, rng.standard_normal(rows.size), (n, n))
    for variant in VARIANTS:
        check_product(spgemm(a, a, variant=variant, sort=False, threads=threads), a, a, sort=False)


@pytest.mark.jitless
def test_spgemm_tiny_every_variant_jitless():
    rng = np.random.default_rng(26)
    a = rand_csr(rng, (5, 4), 0.6)
    b = rand_csr(rng, (4, 6), 0.6)
    for variant in VARIANTS:
        for acc in ("dense", "hash"):
            check_product(spgemm(a, b, accumulator=acc, variant=variant, sort=False, threads=1), a, b,
                          sort=False)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 14), k=st.integers(0, 14), n=st.integers(0, 14),
       da=st.floats(0, 1), db=st.floats(0, 1), seed=st.integers(0, 2**16),
       acc=st.sampled_from(["dense", "hash", "auto"]), variant=st.sampled_from(list(VARIANTS)),
       sort=st.booleans(), parallel=st.booleans())
def test_spgemm_property_all_options(m, k, n, da, db, seed, acc, variant, sort, parallel):
    rng = np.random.default_rng(seed)
    a = rand_csr(rng, (m, k), da)
    b = rand_csr(rng, (k, n), db)
    old = spgemm_mod.SMALL_FLOPS, spgemm_mod.PARALLEL_MIN_FLOPS
    if parallel:
        spgemm_mod.SMALL_FLOPS = spgemm_mod.PARALLEL_MIN_FLOPS = 0
    try:
        c = spgemm(a, b, accumulator=acc, variant=variant, sort=sort, threads=THREADS if parallel else 1)
    finally:
        spgemm_mod.SMALL_FLOPS, spgemm_mod.PARALLEL_MIN_FLOPS = old
    if c.nnz or m * n:
        check_product(c, a, b, sort=sort or c.nnz == 0)


@pytest.mark.parametrize("workers", [2, 3, 4])
@pytest.mark.parametrize("one_pass", [True, False])
@pytest.mark.parametrize("two_ended", [True, False])
@pytest.mark.parametrize("sort", [True, False])
def test_spgemm_worker_layouts(monkeypatch, workers, one_pass, two_ended, sort):
    """The last worker writes into room for its flops and the rows before it are counted
    (with ``TWO_ENDED``, worker 0 writes its rows down from worker 1's offset and only the
    middle workers' rows are counted; without room, everything is counted): any number of
    workers gives the product (more workers than threads run one after the other)."""
    if not one_pass:
        monkeypatch.setattr(spgemm_mod, "ONE_PASS_MAX_BYTES", 0)
    monkeypatch.setattr(spgemm_mod, "TWO_ENDED", two_ended)
    rng = np.random.default_rng(24)
    a = rand_csr(rng, (400, 300), 0.03, powerlaw=True)
    b = rand_csr(rng, (300, 500), 0.03, powerlaw=True)
    flops = np.empty(a.n_rows, dtype=np.int64)
    total = _row_flops(a.indptr, a.indices, b.indptr, flops, 0, a.n_rows)
    for code in VARIANTS.values():
        indptr, indices, data = spgemm_mod._run(a, b, a.data, b.data, flops, int(total), get_accumulator("auto"),
                                                code, sort, workers, np.dtype(np.int32), np.dtype(np.float64))
        c = CSR(indptr, indices, data, (a.n_rows, b.n_cols), sorted_indices=sort)
        check_product(c, a, b, sort=sort)
        # worker 0's rows merge entries, so they end up above the start of its room
        assert (spgemm_mod.LAST_START > 0) == (one_pass and two_ended)


@pytest.mark.parametrize("accumulator", ["dense", "hash"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("sort", [True, False])
def test_spgemm_walk_down_in_chunks(monkeypatch, accumulator, variant, sort):
    """Worker 0 walking down takes many chunks of about BACK_CHUNK multiply-adds, one hub row
    far above that, and rows without entries; every chunk lands against the one above it."""
    monkeypatch.setattr(spgemm_mod, "TWO_ENDED", True)
    monkeypatch.setattr(spgemm_mod, "PARALLEL_MIN_FLOPS", 0)
    rng = np.random.default_rng(25)
    n = 3000
    a = sp.random_array((n, n), density=0.01, rng=rng, format="lil")
    a[5, :] = rng.random(n)  # a hub row with ~n * 30 multiply-adds
    a[7:40, :] = 0  # empty rows
    a = CSR.from_scipy(sp.csr_array(a))
    flops = np.empty(n, dtype=np.int64)
    total = _row_flops(a.indptr, a.indices, a.indptr, flops, 0, n)
    assert flops[5] > 4 * BACK_CHUNK and total > 2 * 16 * BACK_CHUNK
    c = spgemm(a, a, accumulator=accumulator, variant=variant, sort=sort, threads=2)
    check_product(c, a, a, sort=sort)
    assert spgemm_mod.LAST_START > 0  # worker 0's rows merged entries: they start above its room


@pytest.mark.parametrize("tag_dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("path", ["one-pass", "parallel", "counted"])
def test_spgemm_position_map_tags_of_either_width(monkeypatch, tag_dtype, path):
    """The position map's generations are the same in 32- and 64-bit tags: repeated columns
    across many rows (hub columns) land in the right slot, and rows computed by another
    variant in between leave no stale tag readable as current."""
    monkeypatch.setattr(spgemm_mod, "position_tag_dtype", lambda flops: np.dtype(tag_dtype))
    threads = _paths(monkeypatch, path)
    rng = np.random.default_rng(26)
    a = rand_csr(rng, (400, 300), 0.03, powerlaw=True)
    b = rand_csr(rng, (300, 500), 0.03, powerlaw=True)
    for variant in ("position", "auto"):
        for sort in (True, False):
            c = spgemm(a, b, accumulator="dense", variant=variant, sort=sort, threads=threads)
            check_product(c, a, b, sort=sort)


def test_position_tag_dtype_widens_past_32_bit_generations():
    from flexsparse.kernels.cpu._spgemm_rows import position_tag_dtype

    assert position_tag_dtype(0) == np.uint32
    assert position_tag_dtype(2**32 - 3) == np.uint32  # generations up to 2**32 - 1
    assert position_tag_dtype(2**32 - 2) == np.uint64


def test_spgemm_value_accumulator_only_while_its_workspaces_fit(monkeypatch):
    """Above SPGEMM_VALUE_MAX_BYTES of value workspaces, ``auto`` uses the position map alone
    (no trial of the value accumulator); below, both are timed. Same result either way."""
    monkeypatch.setattr(spgemm_mod, "PARALLEL_MIN_FLOPS", 0)
    rng = np.random.default_rng(21)
    a = rand_csr(rng, (2000, 2000), 0.025)
    expected = None
    for limit, timed_value in ((2**40, True), (0, False)):
        monkeypatch.setattr(spgemm_mod, "VALUE_MAX_BYTES", limit)
        c = spgemm(a, a, sort=True, threads=THREADS)
        check_product(c, a, a)
        trace = spgemm_mod.LAST_TRACE
        assert np.isfinite(trace[:, 2]).all() == timed_value
        assert timed_value or set(trace[:, 0]) == {1.0}
        expected = c.toarray() if expected is None else expected
        np.testing.assert_array_equal(c.toarray(), expected)


@pytest.mark.skipif(THREADS < 2, reason="stealing needs two workers")
def _skewed_two_workers(monkeypatch, skew: str) -> None:
    """Products of any size on two threads in kept buffers, all parts but one given to the
    ``skew`` worker."""
    from flexsparse.kernels.cpu.partition import Split

    monkeypatch.setattr(spgemm_mod, "SMALL_FLOPS", 0)
    monkeypatch.setattr(spgemm_mod, "PARALLEL_MIN_FLOPS", 0)
    monkeypatch.setattr(spgemm_mod, "SMALL_PAGES_MAX_BYTES", 0)
    real = spgemm_mod.cost_split

    def skewed(costs, n_workers, per_worker, cuts=None):
        p = real(costs, n_workers, per_worker, cuts)
        if n_workers != 2:
            return p
        wb = p.worker_bounds.copy()
        wb[1] = wb[2] - 1 if skew == "worker 0" else 1
        return Split(p.bounds, wb, p.part_costs)

    monkeypatch.setattr(spgemm_mod, "cost_split", skewed)


@pytest.mark.parametrize("skew", ["worker 0", "worker 1"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("accumulator", ["dense", "hash"])
@pytest.mark.parametrize("sort", [True, False])
def test_spgemm_workers_steal_parts(monkeypatch, skew, variant, accumulator, sort):
    """Two workers, all parts but one given to one of them: the other claims that one's
    parts from the far end once done with its own, and the stitched result is the product
    (rows in place, offsets shifted, column order as asked), and some part changes hands."""
    _skewed_two_workers(monkeypatch, skew)
    monkeypatch.setattr(spgemm_mod, "STEAL_MIN_BYTES", 0)
    rng = np.random.default_rng(41)
    a = rand_csr(rng, (600, 500), 0.03)  # rows of like cost: the idle worker's own part is short
    b = rand_csr(rng, (500, 700), 0.03)
    moved = 0
    for _ in range(10):  # a thread that starts after the other has claimed everything steals nothing
        c = spgemm(a, b, accumulator=accumulator, variant=variant, sort=sort, threads=2)
        check_product(c, a, b, sort=sort)
        moved += int(spgemm_mod.LAST_STOLEN.sum())
        if moved:
            break
    assert moved > 0, spgemm_mod.LAST_TRACE[:, 3:6].tolist()  # (end or start, cycles at start, at end)


@settings(max_examples=40, deadline=None)
# rows around one block (_COUNT_BLOCK = 2048 entries) and across several
@given(lengths=st.lists(st.sampled_from([0, 0, 1, 2, 7, 2047, 2048, 2049, 5000]), min_size=1, max_size=12),
       cut=st.tuples(st.integers(0, 12), st.integers(0, 12)), seed=st.integers(0, 2**16))
def test_row_flops_blocks(lengths, cut, seed):
    """The blocked flops count (:func:`_row_flops_blocked`, running sums per block of
    ``_COUNT_BLOCK`` entries) on rows shorter than, as long as and longer than a block, empty
    rows anywhere, and any row range: equal to the row sums of B's row lengths, from B's
    lengths and from its row pointers."""
    from flexsparse.kernels.cpu._spgemm_flops import _row_flops_blocked

    rng = np.random.default_rng(seed)
    n_b = 300
    indptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    indices = rng.integers(0, n_b, indptr[-1]).astype(np.int32)
    b_indptr = np.concatenate(([0], np.cumsum(rng.integers(0, 6, n_b)))).astype(np.int64)
    b_len = np.diff(b_indptr)
    r0, r1 = sorted(min(c, len(lengths)) for c in cut)
    expected = np.array([b_len[indices[indptr[i]:indptr[i + 1]]].sum() for i in range(r0, r1)], dtype=np.int64)
    for b, by_len in ((b_len.astype(np.int32), True), (b_indptr, False)):
        out = np.full(len(lengths), -1, dtype=np.int64)
        total = _row_flops_blocked(indptr, indices, b, by_len, out, r0, r1)
        np.testing.assert_array_equal(out[r0:r1], expected)
        assert (out[:r0] == -1).all() and (out[r1:] == -1).all()  # nothing outside the range
        assert total == expected.sum()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("b_rows", [3000, 400_000])
def test_count_flops_matches_scipy_row_counts(threads, b_rows):
    """The flops of every output row against SciPy's pattern product, on the parallel path
    that reads B's row lengths (A with 2^18+ entries, B with fewer rows than that) and on the
    row-pointer path it falls back to when B has more rows than A has entries."""
    from flexsparse.kernels.cpu._spgemm_flops import _PARALLEL_FLOPS_NNZ, count_flops

    rng = np.random.default_rng(7)
    m = 2000
    per_row = _PARALLEL_FLOPS_NNZ // m + 2
    a = sp.random_array((m, b_rows), density=per_row / b_rows, rng=rng, format="csr")
    b = sp.random_array((b_rows, 50), density=0.1, rng=rng, format="csr")
    assert a.nnz >= _PARALLEL_FLOPS_NNZ
    flops, total = count_flops(CSR.from_scipy(a), CSR.from_scipy(b), threads)
    a_pattern = (a != 0).astype(np.int64)
    expected = a_pattern @ np.diff(b.indptr)
    np.testing.assert_array_equal(flops, expected)
    assert total == int(expected.sum())


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("b_rows", [3000, 400_000])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex64, np.int64])
@pytest.mark.parametrize("where", ["none", "a", "b", "b unreferenced", "same operand"])
def test_count_flops_checked_finds_inf_and_nan(threads, b_rows, dtype, where):
    """The fused count finds an inf or nan wherever it is stored (an entry of A, of B, of a row
    of B that no entry of A reads, of an operand given twice) on both of its paths, says
    nothing for finite values, and counts the same flops as :func:`count_flops`."""
    from flexsparse.kernels.cpu._spgemm_flops import _PARALLEL_FLOPS_NNZ, count_flops, count_flops_checked

    rng = np.random.default_rng(11)
    m = 2000
    per_row = _PARALLEL_FLOPS_NNZ // m + 2
    a = sp.random_array((m, b_rows), density=per_row / b_rows, rng=rng, format="csr").astype(dtype)
    b = sp.random_array((b_rows, 50), density=0.1, rng=rng, format="csr").astype(dtype)
    if where == "same operand":
        a = b = sp.random_array((700, 700), density=0.6, rng=rng, format="csr").astype(dtype)
    bad = np.nan if np.dtype(dtype).kind != "i" else 7
    if where in ("a", "same operand"):
        a.data[a.nnz // 3] = bad
    elif where == "b":
        b.data[b.nnz - 1] = bad
    elif where == "b unreferenced":  # a row of B that A never reads
        k = int(np.setdiff1d(np.arange(b_rows), a.indices)[0]) if b_rows > a.nnz else None
        if k is None:
            pytest.skip("every row of B is read")
        b = b.tolil()
        b[k, 3] = np.inf if np.dtype(dtype).kind != "i" else 7
        b = b.tocsr()
    fa = CSR.from_scipy(a)
    fb = fa if b is a else CSR.from_scipy(b)
    flops, total, found = count_flops_checked(fa, fb, threads)
    expected_flops, expected_total = count_flops(fa, fb, threads)
    np.testing.assert_array_equal(flops, expected_flops)
    assert total == expected_total
    assert found == (where != "none" and np.dtype(dtype).kind != "i")


@pytest.mark.parametrize("variant", ["auto", "position", "value"])
def test_spgemm_workers_zero_their_workspaces(monkeypatch, variant):
    """Workspaces the workers are to clear themselves (``zero``) may hold anything on entry:
    filled with garbage before the kernel, the two-thread product is still exact."""
    monkeypatch.setattr(spgemm_mod, "SMALL_FLOPS", 0)
    monkeypatch.setattr(spgemm_mod, "PARALLEL_MIN_FLOPS", 0)
    real = spgemm_mod.dense_workspaces
    cleared = []

    def dirty(*args):
        code, tag, marker, acc, zero = real(*args)
        if zero:
            for ws in (tag, marker, acc):
                ws.view(np.uint8)[...] = 0xA5
        cleared.append(zero)
        return code, tag, marker, acc, zero

    monkeypatch.setattr(spgemm_mod, "dense_workspaces", dirty)
    rng = np.random.default_rng(43)
    a = rand_csr(rng, (300, 200), 0.05)
    b = rand_csr(rng, (200, 4000), 0.005)  # wide: under 32 multiply-adds a column, not populated
    for _ in range(2):
        check_product(spgemm(a, b, variant=variant, threads=2), a, b, sort=True)
    assert cleared and all(cleared)


def test_spgemm_small_products_do_not_steal(monkeypatch):
    """Below ``SPGEMM_STEAL_MIN_BYTES`` of operands and expected result the two workers keep
    to their own parts (a stolen part's reserve pages would be a large share of the product's
    memory), however uneven the split; the product is exact either way."""
    _skewed_two_workers(monkeypatch, "worker 1")
    rng = np.random.default_rng(47)
    a = rand_csr(rng, (600, 500), 0.03)
    b = rand_csr(rng, (500, 700), 0.03)
    assert not spgemm_mod._large_enough_to_steal(a, b, 12)
    for _ in range(5):
        check_product(spgemm(a, b, threads=2), a, b, sort=True)
        assert int(spgemm_mod.LAST_STOLEN.sum()) == 0
    # einsum hands its sampled estimate on: a result expected to be large steals
    assert spgemm_mod._large_enough_to_steal(a, b, 12, nnz_hint=spgemm_mod.STEAL_MIN_BYTES / 12)
    monkeypatch.setattr(spgemm_mod, "STEAL_MIN_BYTES", 0)
    assert spgemm_mod._large_enough_to_steal(a, b, 12)


def test_only_workspaces_past_the_heap_are_faulted_in_first(monkeypatch):
    """One-thread dense workspaces of a product with many multiply-adds a column are faulted
    in before the kernel only from ``WORKSPACE_POPULATE_MIN_BYTES`` up; all come zeroed."""
    seen = []
    monkeypatch.setattr(spgemm_mod, "populate", lambda ws, lo, hi: seen.append(ws.nbytes) or True)
    for n_cols in (4000, 100_000):
        seen.clear()
        code, tag, marker, acc, zero = spgemm_mod.dense_workspaces(1, n_cols, 64 * n_cols, 0, np.dtype(np.float64))
        assert not zero and not tag.any() and not marker.any() and not acc.any()
        big = [ws.nbytes for ws in (tag, marker, acc) if ws.nbytes >= spgemm_mod.WORKSPACE_POPULATE_MIN_BYTES]
        assert sorted(seen) == sorted(big)
        assert (n_cols > 10_000) == bool(seen)
