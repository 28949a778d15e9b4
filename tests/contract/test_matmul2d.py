"""einsum's path for a product of two sparse matrices: every orientation, input kind and format."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import flexsparse as fs
from flexsparse.contract._matmul2d import product_plan
from flexsparse.contract.parser import parse_einsum
from flexsparse.formats.coo import COO
from flexsparse.formats.csr import CSR
from flexsparse.formats.fiber import CSF


def _sparse(rng, shape, density=0.05, dtype=np.float64):
    return sp.random_array(shape, density=density, rng=rng, format="csr", dtype=dtype)


SPECS = ["ij,jk->ik", "ji,jk->ik", "ij,kj->ik", "ji,kj->ik", "ij,jk->ki", "ji,kj->ki", "ij,jk", "ab,bc->ca"]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("threads", [1, 2])
def test_orientations_against_numpy(spec, threads):
    rng = np.random.default_rng(0)
    assert product_plan(parse_einsum(spec, _shapes(spec))) is not None
    a = _sparse(rng, _shapes(spec)[0])
    b = _sparse(rng, _shapes(spec)[1])
    got = fs.einsum(spec, fs.as_coo(a), fs.as_coo(b), threads=min(threads, 2))
    assert isinstance(got, COO) and got._csr is not None and got._coords is None
    np.testing.assert_allclose(got.todense(), np.einsum(spec, a.toarray(), b.toarray()), atol=1e-12)


def _shapes(spec):
    ins = spec.split("->")[0].split(",")
    size = {"i": 60, "j": 70, "k": 80, "a": 60, "b": 70, "c": 80}
    return [tuple(size[c] for c in term) for term in ins]


def test_not_a_plain_product_goes_the_general_way():
    for spec, shapes in (("ij,jk->ijk", [(2, 3), (3, 4)]), ("ii,ij->j", [(3, 3), (3, 4)]),
                         ("ij,ij->i", [(2, 3), (2, 3)]), ("ij,jk->", [(2, 3), (3, 4)])):
        assert product_plan(parse_einsum(spec, shapes)) is None


@pytest.mark.parametrize("kind", ["coo", "coo-jumbled", "coo-duplicates", "csr", "csr-unsorted", "scipy-csr",
                                  "scipy-csc", "scipy-coo", "scipy-matrix"])
def test_input_kinds(kind):
    rng = np.random.default_rng(1)
    a = _sparse(rng, (50, 40))
    dense = a.toarray()
    if kind == "coo":
        x = COO.from_numpy(dense)
    elif kind == "coo-jumbled":
        c = COO.from_numpy(dense)
        perm = rng.permutation(c.nnz)
        x = COO(c.coords[:, perm], c.data[perm], c.shape)
    elif kind == "coo-duplicates":
        c = COO.from_numpy(dense)
        half = c.data / 2
        x = COO(np.hstack([c.coords, c.coords]), np.concatenate([half, half]), c.shape)
        assert not x.canonical
    elif kind == "csr":
        x = CSR.from_scipy(a)
    elif kind == "csr-unsorted":
        s = CSR.from_scipy(a)
        x = CSR(s.indptr, s.indices, s.data, s.shape, sorted_indices=False)
    elif kind == "scipy-csr":
        x = a
    elif kind == "scipy-csc":
        x = a.tocsc()
    elif kind == "scipy-coo":
        x = a.tocoo()
    else:
        x = sp.csr_matrix(a)
    b = _sparse(rng, (40, 45))
    got = fs.einsum("ij,jk->ik", x, fs.as_coo(b))
    np.testing.assert_allclose(fs.to_numpy(got), dense @ b.toarray(), atol=1e-12)
    got2 = fs.einsum("ij,jk->ik", fs.as_coo(b).T, x.T if hasattr(x, "T") else x.transpose())
    np.testing.assert_allclose(fs.to_numpy(got2), b.toarray().T @ dense.T, atol=1e-12)


@pytest.mark.parametrize("fmt", ["auto", "coo", "csr", "csf", "dense"])
def test_output_formats(fmt):
    rng = np.random.default_rng(2)
    a, b = _sparse(rng, (60, 50)), _sparse(rng, (50, 70))
    got = fs.einsum("ij,jk->ik", fs.as_coo(a), fs.as_coo(b), format=fmt)
    ref = a.toarray() @ b.toarray()
    expected = {"auto": COO, "coo": COO, "csr": CSR, "csf": CSF, "dense": np.ndarray}[fmt]
    assert isinstance(got, expected)
    if fmt == "csf":
        got.validate()  # sorted fibers
    if fmt == "csr":
        assert not got.sorted_indices  # the kernel's rows, as computed
        got.validate()
    np.testing.assert_allclose(fs.to_numpy(got), ref, atol=1e-12)
    with pytest.raises(ValueError, match="format='csr' needs a 2-D result"):
        fs.einsum("ijk,kl->ijl", COO.from_numpy(np.ones((2, 2, 2))), COO.from_numpy(np.ones((2, 2))),
                  format="csr")


def test_dense_auto_result_and_matmul_operator():
    rng = np.random.default_rng(3)
    a = _sparse(rng, (30, 30), 0.3)
    got = fs.einsum("ij,jk->ik", fs.as_coo(a), fs.as_coo(a))
    assert isinstance(got, np.ndarray)  # dense enough for format="auto"
    np.testing.assert_allclose(got, a.toarray() @ a.toarray())
    s = _sparse(rng, (200, 200), 0.01)
    x = fs.as_coo(s)
    np.testing.assert_allclose(fs.to_numpy(x @ x), s.toarray() @ s.toarray(), atol=1e-12)


@pytest.mark.parametrize("dtypes", [(np.float32, np.float64), (np.int64, np.float32), (np.bool_, np.bool_),
                                    (np.complex64, np.float64), (np.int32, np.int64)])
def test_dtypes_follow_numpy(dtypes):
    rng = np.random.default_rng(4)
    mats = []
    for dt, shape in zip(dtypes, [(40, 30), (30, 35)]):
        m = _sparse(rng, shape, 0.1)
        m.data = (m.data * 5 + 1).astype(dt) if np.dtype(dt).kind != "b" else np.ones(m.nnz, bool)
        mats.append(m)
    got = fs.einsum("ij,jk->ik", *[fs.as_coo(m) for m in mats], format="dense")
    ref = np.einsum("ij,jk->ik", *[m.toarray() for m in mats])
    assert got.dtype == ref.dtype
    np.testing.assert_allclose(got, ref, rtol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("where", ["a", "b unreferenced"])
@pytest.mark.parametrize("n", [400, 1200])  # the small product's fused call; the separate count
def test_nonfinite_found_by_the_flops_count(monkeypatch, threads, where, n):
    """A product large enough for the sparse kernel scans its values in the flops count (the
    small product's fused call, or the separate count of larger ones): an inf in A, or in a
    row of B that no entry of A reads, still gives NumPy's nan wherever it meets an implicit
    zero."""
    import flexsparse.contract._matmul2d as mm

    found = []
    real_count, real_small = mm.count_flops_checked, mm.spgemm_small

    def count(*args):
        res = real_count(*args)
        found.append(("count", res[2]))
        return res

    def small(*args):
        res = real_small(*args)
        if res[1] is not None:  # it counted
            found.append(("small", res[2]))
        return res

    monkeypatch.setattr(mm, "count_flops_checked", count)
    monkeypatch.setattr(mm, "spgemm_small", small)
    rng = np.random.default_rng(5)
    density = 0.01 if n == 400 else 0.012  # 1200: 34K entries, beyond the small product
    a = _sparse(rng, (n, n), density).tolil()
    b = _sparse(rng, (n, n), density).tolil()
    a[:, 7] = 0  # no entry of A reads row 7 of B
    if where == "a":
        a[3, 5] = np.inf
    else:
        b[7, 2] = np.inf
    a, b = a.tocsr(), b.tocsr()
    with np.errstate(invalid="ignore"):
        ref = a.toarray() @ b.toarray()
        got = fs.einsum("ij,jk->ik", fs.as_coo(a), fs.as_coo(b), format="dense", threads=threads)
    # one scan found it, in the path the size selects (the product itself was not run)
    assert found == [("small" if n == 400 else "count", True)]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert np.isnan(ref).any()
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(ref))


def test_nonfinite_and_explicit_zeros():
    a = COO(np.array([[0, 0, 1], [0, 1, 1]]), np.array([np.inf, 0.0, 1.0]), (2, 2))
    b = COO(np.array([[0, 1], [0, 0]]), np.array([0.0, np.nan]), (2, 2))
    with np.errstate(invalid="ignore"):
        ref = np.einsum("ij,jk->ik", a.todense(), b.todense())
        got = fs.einsum("ij,jk->ik", a, b, format="dense")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    # explicit zeros stay structural in a sparse product (large enough for the sparse path)
    n = 300
    z = COO(np.vstack([np.arange(n), np.arange(n)]), np.zeros(n), (n, n))
    got = fs.einsum("ij,jk->ik", z, z)
    assert isinstance(got, COO) and got.nnz == n and not got.data.any()


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 40), k=st.integers(1, 40), n=st.integers(1, 40), seed=st.integers(0, 2**16),
       spec=st.sampled_from(SPECS[:6]), threads=st.sampled_from([1, 2]))
def test_property_against_numpy(m, k, n, seed, spec, threads):
    rng = np.random.default_rng(seed)
    size = {"i": m, "j": k, "k": n}
    ins = spec.split("->")[0].split(",")
    arrays = [np.where(rng.random([size[c] for c in t]) < 0.1, rng.standard_normal([size[c] for c in t]), 0.0)
              for t in ins]
    got = fs.einsum(spec, *[COO.from_numpy(x) for x in arrays], threads=threads)
    np.testing.assert_allclose(fs.to_numpy(got), np.einsum(spec, *arrays), atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.int64, np.bool_])
def test_dense_results_come_from_the_dense_kernel(monkeypatch, threads, dtype):
    """A product that is dense (auto) or asked dense: the dense kernel runs, with no sparse
    intermediate, and the result equals NumPy's; a sparse auto result never runs it."""
    import flexsparse.contract._matmul2d as m2d

    calls = []
    real = m2d.spgemm_dense_trusted
    monkeypatch.setattr(m2d, "spgemm_dense_trusted", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(m2d, "spgemm_trusted", lambda *a, **k: pytest.fail("sparse kernel ran"))
    rng = np.random.default_rng(5)
    a, b = _sparse(rng, (300, 200), 0.05), _sparse(rng, (200, 250), 0.05)
    a.data, b.data = a.data * 7 + 1, b.data * 7 + 1  # nonzero in every dtype
    a, b = a.astype(dtype), b.astype(dtype)
    ref = a.toarray() @ b.toarray()
    for fmt in ("auto", "dense"):
        got = fs.einsum("ij,jk->ik", fs.as_coo(a), fs.as_coo(b), format=fmt, threads=threads)
        assert isinstance(got, np.ndarray) and got.dtype == ref.dtype
        np.testing.assert_allclose(got, ref, atol=1e-12)
    assert len(calls) == 2
    monkeypatch.undo()
    calls.clear()
    monkeypatch.setattr(m2d, "spgemm_dense_trusted", lambda *a: calls.append(1) or real(*a))
    s = _sparse(rng, (300, 300), 0.002)
    got = fs.einsum("ij,jk->ik", fs.as_coo(s), fs.as_coo(s), threads=threads)
    assert isinstance(got, COO) and not calls


def test_auto_result_that_only_looks_dense_stays_sparse(monkeypatch):
    """Entries that cancel leave stored entries: when the dense result holds fewer nonzeros
    than the dense density but the stored entries reach it, the sparse kernel decides (as
    without the dense kernel)."""
    import flexsparse.contract._matmul2d as m2d

    monkeypatch.setattr(m2d, "estimate_nnz", lambda a, b, samples=64: float(a.shape[0] * b.shape[1]))
    n = 40
    a = sp.csr_array(np.kron(np.eye(n // 2), [[1.0, 1.0]]))  # [n/2, n]
    b = sp.csr_array(np.tile([[1.0], [-1.0]], (n // 2, n)))  # rows pairwise opposite: A @ B == 0
    got = fs.einsum("ij,jk->ik", fs.as_coo(a), fs.as_coo(b))
    ref = fs.einsum("ij,jk->ik", fs.as_coo(a), fs.as_coo(b), format="coo")
    assert isinstance(got, np.ndarray) == (ref.nnz > 0.25 * ref.size)
    np.testing.assert_array_equal(np.asarray(got if isinstance(got, np.ndarray) else got.todense()), 0)


@pytest.mark.parametrize("n, fmt", [(400, "auto"), (400, "dense"), (400, "coo"), (30000, "auto"), (30000, "csr"),
                                    (-400, "auto")])
def test_flops_counted_once_per_product(monkeypatch, n, fmt):
    """einsum counts the rows' flops once per sparse product and hands them on: to the
    dense-result check and to the sparse kernel (or counts them in the small product's fused
    call, which hands them on when the product turns out not small) (a result beyond the dense cap, n = 30000,
    once made the kernel count them again); so is the sampled nnz estimate."""
    import flexsparse.contract._matmul2d as mm
    import flexsparse.kernels.cpu.spgemm as spk

    calls = []
    for mod, where in ((mm, "einsum"), (spk, "kernel")):
        for name in ("count_flops", "count_flops_checked", "estimate_nnz"):
            if hasattr(mod, name):
                real = getattr(mod, name)
                label = f"{where} {name}"
                monkeypatch.setattr(mod, name, lambda *args, _f=real, _n=label: calls.append(_n) or _f(*args))
    real_small = mm.spgemm_small

    def small(*args):  # the small product's fused call counts unless it declines at once
        res = real_small(*args)
        if res[1] is not None:
            calls.append("einsum spgemm_small count")
        return res

    monkeypatch.setattr(mm, "spgemm_small", small)
    monkeypatch.setattr(spk, "PARALLEL_MIN_FLOPS", 0)  # the parallel path, which samples nnz for its pages
    rng = np.random.default_rng(6)
    if n < 0:  # rows whose flops pass the dense bound, over few columns: sampled, then sparse
        n = -n
        a = sp.random_array((n, n), density=0.05, rng=rng, format="csr")
        b = sp.csr_array((rng.random(8 * n), rng.integers(0, 60, 8 * n), np.arange(0, 8 * n + 1, 8)), shape=(n, n))
        b.sum_duplicates()
    else:
        a = b = sp.random_array((n, n), density=min(0.02, 2000 / n**2 * 20), rng=rng, format="csr")
    got = fs.einsum("ij,jk->ik", fs.as_coo(a), fs.as_coo(b), format=fmt, threads=2)
    assert len([c for c in calls if "count" in c]) == 1, calls
    # the dense check's estimate serves the kernel
    assert not ("einsum estimate_nnz" in calls and "kernel estimate_nnz" in calls), calls
    ref = (a @ b).toarray() if n <= 400 else None
    if ref is not None:
        dense = got if isinstance(got, np.ndarray) else got.todense()
        np.testing.assert_allclose(dense, ref, rtol=1e-12, atol=1e-12)
    else:
        c = (a @ b).tocsr()
        got_csr = fs.to_scipy(got).tocsr()
        assert abs(got_csr - c).max() <= 1e-12 * max(abs(c).max(), 1)
