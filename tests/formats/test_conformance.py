"""Every format against one contract: SparseArray's methods and einsum/tensordot/@ vs dense NumPy.

Parametrised over [COO, CSF, CSR, CSC, BlockSparse, NM, HSS] x dtypes x densities {0, small, 1}.
Structured formats (BlockSparse, NM, HSS) hold float32/float64 only: other dtypes must raise a
clear TypeError. For N:M and HSS, "density 1" means every slot of the pattern is filled (the
pattern itself caps the density: 2:4 -> 50%, 3:4->2:4 -> 37.5%).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import flexsparse as fs
from flexsparse.formats.base import FORMATS, SparseArray
from flexsparse.formats.block import BlockSparse
from flexsparse.formats.coo import COO
from flexsparse.formats.csr import CSC, CSR
from flexsparse.formats.fiber import CSF
from flexsparse.formats.hss import HSS
from flexsparse.formats.nm import NM

from ..conftest import dense_with_density

SHAPE = (7, 10)  # ragged for 2x3 blocks and for groups of 4 along the reduction axis
GENERAL = {"coo": COO, "csf": CSF, "csr": CSR, "csc": CSC}
STRUCTURED = {"block": BlockSparse, "nm": NM, "hss": HSS}
GENERAL_DTYPES = [np.bool_, np.int64, np.float32, np.float64, np.complex128]
FLOAT_DTYPES = [np.float32, np.float64]
DENSITIES = [0.0, 0.15, 1.0]
OPTIONS = {"block": {"block": (2, 3)}, "nm": {"n": 2, "m": 4}, "hss": {"pattern": "3:4->2:4"}}
PATTERN = {"nm": "2:4", "hss": "3:4->2:4"}


def _fit(fmt: str, dense: np.ndarray) -> np.ndarray:
    """``dense`` restricted to what the format can hold (N:M / HSS patterns keep the largest)."""
    if fmt in PATTERN:
        return dense * fs.prune_mask(dense, PATTERN[fmt])
    return dense


def make(fmt: str, dense: np.ndarray):
    coo = COO.from_numpy(dense)
    cls = GENERAL.get(fmt) or STRUCTURED[fmt]
    return cls.from_coo(coo, **OPTIONS.get(fmt, {}))


def case(fmt: str, dtype, density: float, shape=SHAPE, seed: int = 0):
    dense = _fit(fmt, dense_with_density(seed, shape, density, dtype))
    return make(fmt, dense), dense


def _tol(dtype):
    dt = np.dtype(dtype)
    return {"rtol": 2e-4, "atol": 2e-4} if dt in (np.float32, np.complex64) else {"rtol": 1e-10, "atol": 1e-10}


def _eq(got, want, dtype):
    got = np.asarray(got)
    assert got.shape == np.shape(want)
    if np.dtype(dtype).kind in "biu":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, **_tol(dtype))


ALL_CASES = [(f, d, p) for f in GENERAL for d in GENERAL_DTYPES for p in DENSITIES] + \
            [(f, d, p) for f in STRUCTURED for d in FLOAT_DTYPES for p in DENSITIES]
IDS = [f"{f}-{np.dtype(d).name}-{p}" for f, d, p in ALL_CASES]


# ---------------------------------------------------------------------- base methods
@pytest.mark.parametrize("fmt, dtype, density", ALL_CASES, ids=IDS)
def test_base_methods_match_numpy(fmt, dtype, density):
    x, dense = case(fmt, dtype, density)
    assert isinstance(x, SparseArray) and FORMATS[x.format] is type(x)
    x.validate()
    assert x.shape == dense.shape and x.ndim == 2 and x.size == dense.size and len(x) == dense.shape[0]
    assert x.dtype == dense.dtype
    nz = int(np.count_nonzero(dense))
    if fmt in GENERAL:
        assert x.nnz == nz
    else:  # kept slots of the pattern, some of which may hold zeros
        assert nz <= x.nnz <= x.size
    assert x.density == pytest.approx(x.nnz / x.size)
    assert isinstance(x.nbytes, int) and x.nbytes >= 0 and (x.nbytes > 0 or x.nnz == 0)
    _eq(x.todense(), dense, dtype)
    _eq(np.asarray(x), dense, dtype)
    _eq(np.asarray(x, dtype=np.complex128), dense.astype(np.complex128), np.complex128)
    _eq(x.T.todense(), dense.T, dtype)
    _eq(x.transpose((1, 0)).todense(), dense.T, dtype)
    _eq(x.transpose((0, 1)).todense(), dense, dtype)
    _eq(x.to_coo().todense(), dense, dtype)
    back = type(x).from_coo(x.to_coo(), **OPTIONS.get(fmt, {}))
    assert type(back) is type(x)
    _eq(back.todense(), dense, dtype)
    _eq(x.to_scipy().toarray(), dense, dtype)
    for name in ("coo", "csr", "csc", "csf"):
        _eq(x.asformat(name).todense(), dense, dtype)
    r = repr(x)
    assert type(x).__name__ in r and str(x.shape) in r and f"dtype={x.dtype}" in r


@pytest.mark.parametrize("fmt, dtype, density", ALL_CASES, ids=IDS)
def test_astype_and_value_maps_keep_the_format(fmt, dtype, density):
    x, dense = case(fmt, dtype, density)
    if fmt in GENERAL:
        target = np.complex128 if np.dtype(dtype).kind == "c" else np.float64
    else:
        target = np.float32 if dtype == np.float64 else np.float64
    y = x.astype(target)
    assert type(y) is type(x) and y.dtype == target
    _eq(y.todense(), dense.astype(target), target)
    for op, ref in ((lambda t: 2 * t, lambda d: 2 * d), (lambda t: t * 3, lambda d: d * 3),
                    (abs, np.abs)):
        got = op(x)
        assert type(got) is type(x)
        _eq(got.todense(), ref(dense), got.dtype)
    if dtype != np.bool_:
        _eq((-x).todense(), -dense, dtype)
        _eq((x / 2).todense(), dense / 2, (dense / 2).dtype)
    with pytest.raises(TypeError, match="divided by a scalar"):
        x / np.ones(SHAPE)


@pytest.mark.parametrize("fmt, dtype, density", ALL_CASES, ids=IDS)
def test_elementwise_operators(fmt, dtype, density):
    x, dense = case(fmt, dtype, density)
    y, dense_y = case(fmt, dtype, 0.3, seed=1)
    s = x + y
    assert type(s) is (type(x) if fmt in GENERAL else COO)
    _eq(s.todense(), dense + dense_y, s.dtype)
    _eq((x * y).todense(), dense * dense_y, (x * y).dtype)
    _eq(np.asarray(x + dense_y), dense + dense_y, (dense + dense_y).dtype)
    if dtype != np.bool_:
        _eq(np.asarray(x - y), dense - dense_y, dtype)


@pytest.mark.parametrize("fmt", list(STRUCTURED))
@pytest.mark.parametrize("dtype", [np.bool_, np.int32, np.int64, np.complex128])
def test_structured_formats_refuse_other_dtypes(fmt, dtype):
    dense = dense_with_density(0, SHAPE, 0.3, np.float64)
    x = make(fmt, _fit(fmt, dense))
    with pytest.raises(TypeError, match="structured formats support float32 and float64 only"):
        x.astype(dtype)
    with pytest.raises(TypeError, match="float32 and float64 only"):
        make(fmt, _fit(fmt, dense).astype(dtype))
    z = x * 1j  # leaves the format's dtypes: the value map falls back to COO
    assert type(z) is COO and z.dtype == np.complex128
    np.testing.assert_allclose(z.todense(), x.todense() * 1j)


# ---------------------------------------------------------------------- products
SPECS = [  # (spec, shape of the other operand); the format operand is first, shape (7, 10)
    ("ij,jk->ik", (10, 5)),     # W @ D (structured: matmul)
    ("ij,kj->ik", (5, 10)),     # D @ W.T (structured: linear)
    ("ij,ik->jk", (7, 4)),      # W.T @ D (structured: tmatmul / linear_grad_input)
    ("ij,ij->", (7, 10)),       # full reduction: every format as COO
    ("ij,jk->ijk", (10, 3)),    # batch index shared with the output: COO
    ("ij,k->ijk", (4,)),        # outer product
]


@pytest.mark.parametrize("spec, other_shape", SPECS, ids=[s for s, _ in SPECS])
@pytest.mark.parametrize("fmt, dtype, density", ALL_CASES, ids=IDS)
def test_einsum_with_a_dense_operand(fmt, dtype, density, spec, other_shape):
    x, dense = case(fmt, dtype, density)
    d = dense_with_density(2, other_shape, 0.7, dtype)
    want = np.einsum(spec, dense, d)
    _eq(fs.einsum(spec, x, d, format="dense"), want, want.dtype)
    rev = spec.split("->")[0].split(",")[::-1]
    spec_r = ",".join(rev) + "->" + spec.split("->")[1]
    _eq(fs.einsum(spec_r, d, x, format="dense"), want, want.dtype)


@pytest.mark.parametrize("fmt, dtype, density", ALL_CASES, ids=IDS)
def test_einsum_tensordot_matmul_between_formats(fmt, dtype, density):
    x, dense = case(fmt, dtype, density)
    y, dense_y = case(fmt, dtype, 0.4, shape=(10, 6), seed=3)
    want = dense @ dense_y if dtype != np.bool_ else np.einsum("ij,jk->ik", dense, dense_y)
    _eq(fs.einsum("ij,jk->ik", x, y, format="dense"), want, want.dtype)
    _eq(np.asarray(fs.tensordot(x, y, axes=1, format="dense")), want, want.dtype)
    _eq(np.asarray(x @ y), want, want.dtype)
    _eq(np.asarray(fs.matmul(x, y)), want, want.dtype)
    d = dense_with_density(4, (10, 3), 1.0, dtype)
    ref = np.einsum("ij,jk->ik", dense, d)
    _eq(np.asarray(x @ d), ref, ref.dtype)
    _eq(np.asarray(x @ d[:, 0]), ref[:, 0], ref.dtype)
    e = dense_with_density(5, (2, 7), 1.0, dtype)
    ref_l = np.einsum("ij,jk->ik", e, dense)
    _eq(np.asarray(e @ x), ref_l, ref_l.dtype)
    _eq(np.asarray(fs.tensordot(e, x, axes=([1], [0]), format="dense")), ref_l, ref_l.dtype)


# ---------------------------------------------------------------------- structured in einsum
def test_structured_examples_run_their_kernels():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((64, 96)).astype(np.float32)
    X = rng.standard_normal((96, 8)).astype(np.float32)
    Wb = fs.prune(W, "block:32x32", density=0.2)   # failed with "non-numeric dtype object" before
    np.testing.assert_allclose(fs.einsum("ij,jk->ik", Wb, X), Wb.todense() @ X, rtol=1e-4, atol=1e-4)
    Wh = fs.prune(W, "4:6->1:4")
    B = rng.standard_normal((5, 96)).astype(np.float32)
    np.testing.assert_allclose(fs.einsum("bi,oi->bo", B, Wh), B @ Wh.todense().T, rtol=1e-4, atol=1e-4)
    report = fs.einsum_path("bi,oi->bo", B, Wh)[1]
    assert "HSS.matmul" in report and " hss " in report
    assert "BlockSparse.matmul" in fs.einsum_path("ij,jk->ik", Wb, X)[1]
    assert "NM.tmatmul" in fs.einsum_path("ij,ik->jk", fs.prune(W, "2:4"), rng.random((64, 3)))[1]
    # a step the structured kernels cannot run goes through COO (and says so)
    assert "spmm" in fs.einsum_path("ij,jk->ijk", Wh, X)[1]


def test_structured_products_call_the_class_methods(monkeypatch):
    W = fs.prune(np.random.default_rng(1).standard_normal((8, 12)), "2:4")
    calls = []
    for name in ("matmul", "tmatmul", "linear", "linear_grad_input"):
        real = getattr(type(W), name)

        def spy(self, arr, _real=real, _name=name):
            calls.append(_name)
            return _real(self, arr)

        monkeypatch.setattr(type(W), name, spy)
    X = np.ones((12, 3))
    fs.einsum("ij,jk->ik", W, np.asfortranarray(X))   # (k, j) view is row-major: linear
    fs.einsum("ij,jk->ik", W, X)                       # copied as [j, k]: matmul
    fs.einsum("ij,ik->jk", W, np.ones((8, 2)))
    assert calls == ["linear", "matmul", "tmatmul"]


def test_device_dispatch_decision():
    from flexsparse.contract._structured import einsum_on_device, structured_backend

    class FakeCuda:
        device = type("D", (), {"type": "cuda"})()
        shape = (12, 3)

    assert structured_backend(FakeCuda()) == "triton"
    assert structured_backend(np.ones(3)) == "numba"
    torch = pytest.importorskip("torch")
    assert structured_backend(torch.ones(3)) == "numba"
    W = fs.prune(np.ones((4, 12)), "2:4")
    assert einsum_on_device("ij,jk->ik", (W, np.ones((12, 3))), "auto", None) is None


# ---------------------------------------------------------------------- layering
def test_formats_never_import_the_engine():
    """formats/ depends on nothing above it: the operators reach the engine via register_dispatch."""
    root = Path(fs.__file__).parent / "formats"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith(("flexsparse.contract", "flexsparse.tiling")), \
                    f"{path.name} imports {name}"
