"""Triton kernels (flexsparse.gpu) against dense products, run in Triton's interpreter.

CI has no GPU: Triton runs the kernels on CPU tensors in its interpreter, which must be
switched on (TRITON_INTERPRET=1) BEFORE triton is first imported -- triton decorates its
own library functions at import time. This module sets the variable at collection time;
if something imported triton earlier in this process, ``test_rerun_in_fresh_process``
runs this file in a fresh interpreter instead and the in-process tests say so.
With a CUDA device and TRITON_INTERPRET=0 the same tests run on the GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
triton = pytest.importorskip("triton")

from flexsparse.kernels.triton._runtime import interpreter_ready, next_pow2  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
READY = interpreter_ready() if INTERPRET else torch.cuda.is_available()
DEVICE = "cpu" if INTERPRET else "cuda"
needs_ready = pytest.mark.skipif(
    not READY, reason="triton was imported before TRITON_INTERPRET=1 was set in this process; "
                      "test_rerun_in_fresh_process runs this file in a fresh interpreter")


def test_rerun_in_fresh_process():
    if READY:
        pytest.skip("interpreter active in this process: the tests below ran here")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def _weight(kind, shape, seed, **kw):
    from flexsparse.formats.block import BlockSparse
    from flexsparse.formats.hss import HSS, HSSPattern, select_hss
    from flexsparse.formats.nm import NM

    rng = np.random.default_rng(seed)
    A = rng.standard_normal(shape)
    if kind == "block":
        r, c = kw["block"]
        layout = rng.random((-(-shape[0] // r), -(-shape[1] // c))) < kw.get("density", 0.5)
        return BlockSparse.from_dense(A, (r, c), layout=layout)
    p = HSSPattern.parse(kw["pattern"])
    values, positions = select_hss(A, p, by="magnitude")
    if kind == "nm":
        (n, m), = p.levels
        return NM(values, positions, shape, n, m)
    return HSS(values, positions, shape, p)


def _sampled_ref(W, D):
    """Dense gradient ``D = dY^T X`` read at W's stored slots (0 on padding): the NumPy oracle."""
    M, K = W.shape
    if hasattr(W, "columns"):
        cols = W.columns()
        safe = np.minimum(cols, K - 1)
        return np.where(cols < K, D[np.arange(M)[:, None], safe], 0.0).reshape(W.values.shape)
    r, c = W.block
    gm, gk = W.grid
    padded = np.zeros((gm * r, gk * c))
    padded[:M, :K] = D
    tiles = padded.reshape(gm, r, gk, c).transpose(0, 2, 1, 3)
    return tiles[W.block_rows, W.indices]


CASES = [
    ("block", (37, 45), {"block": (16, 16), "density": 0.5}),
    ("block", (20, 33), {"block": (8, 4), "density": 0.6}),      # blocks < 16: padded tiles
    ("block", (24, 40), {"block": (32, 16), "density": 0.0}),    # no stored block
    ("block", (17, 18), {"block": (3, 5), "density": 1.0}),      # odd block, full
    ("nm", (13, 37), {"pattern": "2:4"}),
    ("hss", (9, 40), {"pattern": "3:4->2:4"}),
    ("hss", (6, 50), {"pattern": "4:6->1:4"}),
]
IDS = [f"{k}-{s[0]}x{s[1]}-{'-'.join(str(v) for v in o.values())}" for k, s, o in CASES]


@needs_ready
@pytest.mark.parametrize("kind,shape,opts", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_products_match_dense(kind, shape, opts, dtype):
    import flexsparse.gpu as gpu

    W = _weight(kind, shape, 0, **opts)
    M, K = shape
    rng = np.random.default_rng(1)
    Wd = W.todense()
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    values = torch.tensor(W.values, dtype=dtype, device=DEVICE)
    s = gpu.DeviceStructure.from_weight(W, DEVICE)
    X = torch.tensor(rng.standard_normal((K, 11)), dtype=dtype, device=DEVICE)
    out = gpu.matmul(W, X, values=values, structure=s)
    np.testing.assert_allclose(out.cpu().double().numpy(), Wd @ X.cpu().double().numpy(), atol=tol, rtol=tol)
    Xb = torch.tensor(rng.standard_normal((7, K)), dtype=dtype, device=DEVICE)
    Y = gpu.linear(W, Xb, values=values, structure=s)
    np.testing.assert_allclose(Y.cpu().double().numpy(), Xb.cpu().double().numpy() @ Wd.T, atol=tol, rtol=tol)
    dY = torch.tensor(rng.standard_normal((7, M)), dtype=dtype, device=DEVICE)
    dX = gpu.linear_grad_input(W, dY, values=values, structure=s)
    np.testing.assert_allclose(dX.cpu().double().numpy(), dY.cpu().double().numpy() @ Wd, atol=tol, rtol=tol)
    G = gpu.sampled_grad(W, dY, Xb, structure=s)
    assert tuple(G.shape) == W.values.shape
    ref = _sampled_ref(W, dY.cpu().double().numpy().T @ Xb.cpu().double().numpy())
    np.testing.assert_allclose(G.cpu().double().numpy(), ref, atol=tol, rtol=tol)


@needs_ready
def test_default_values_and_bfloat16():
    import flexsparse.gpu as gpu

    W = _weight("block", (32, 32), 2, block=(16, 16), density=0.5)
    X = torch.randn(32, 16, dtype=torch.float64, device=DEVICE)
    ref = W.todense() @ X.cpu().numpy()
    np.testing.assert_allclose(gpu.matmul(W, X).cpu().numpy(), ref, atol=1e-10)   # values from W
    Xh = X.to(torch.bfloat16)
    vh = torch.tensor(W.values, device=DEVICE).to(torch.bfloat16)
    out = gpu.matmul(W, Xh, values=vh)
    refh = W.with_values(vh.double().cpu().numpy()).todense() @ Xh.double().cpu().numpy()
    np.testing.assert_allclose(out.double().cpu().numpy(), refh, atol=0.1, rtol=2e-2)


@needs_ready
@pytest.mark.parametrize("kind,opts", [("block", {"block": (16, 16), "density": 0.6}),
                                       ("hss", {"pattern": "2:4->1:2"})])
def test_autograd_triton_backend(kind, opts):
    """The CUDA code path of sparse_linear (backend='triton'), gradchecked in float64."""
    from flexsparse.torch.functional import sparse_linear

    W = _weight(kind, (20, 24), 3, **opts)
    values = torch.tensor(W.values, device=DEVICE, requires_grad=True)
    x = torch.randn(3, 24, dtype=torch.float64, device=DEVICE, requires_grad=True)
    b = torch.randn(20, dtype=torch.float64, device=DEVICE, requires_grad=True)
    y = sparse_linear(x, W, values, b, backend="triton")
    ref = torch.nn.functional.linear(x, torch.tensor(W.todense(), device=DEVICE), b)
    torch.testing.assert_close(y, ref)
    assert torch.autograd.gradcheck(lambda x, v, b: sparse_linear(x, W, v, b, backend="triton"),
                                    (x, values, b), fast_mode=True)


@needs_ready
def test_errors():
    import flexsparse.gpu as gpu

    W = _weight("nm", (8, 16), 0, pattern="2:4")
    with pytest.raises(ValueError, match=r"matmul: X must be 2-D with 16 on axis 0"):
        gpu.matmul(W, torch.zeros(15, 3, dtype=torch.float64, device=DEVICE))
    with pytest.raises(TypeError, match="values dtype torch.float64 differs from operand dtype torch.float32"):
        gpu.linear(W, torch.zeros(2, 16, device=DEVICE))
    with pytest.raises(ValueError, match=r"values must have shape \(8, 4, 2\)"):
        gpu.linear(W, torch.zeros(2, 16, device=DEVICE), values=torch.zeros(3, device=DEVICE))
    with pytest.raises(TypeError, match="expected a BlockSparse, NM or HSS weight"):
        gpu.DeviceStructure.from_weight(np.zeros((2, 2)), DEVICE)
    with pytest.raises(ValueError, match="batch sizes differ"):
        gpu.sampled_grad(W, torch.zeros(2, 8, device=DEVICE), torch.zeros(3, 16, device=DEVICE))


def test_next_pow2():
    assert [next_pow2(n, 16) for n in (1, 8, 16, 17, 33, 128)] == [16, 16, 16, 32, 64, 128]
    assert next_pow2(0) == 1


@needs_ready
@pytest.mark.parametrize("kind, opts", [("hss", {"pattern": "2:4"}), ("block", {"block": (4, 4)})])
@pytest.mark.parametrize("spec, w_pos", [("bi,oi->bo", 1), ("oi,ib->ob", 0), ("oi,ob->ib", 0),
                                         ("bo,oi->ib", 1)])
def test_einsum_step_on_device_tensors(kind, opts, spec, w_pos):
    """The einsum step that Triton runs for a structured matrix times a CUDA tensor
    (_structured.torch_structured), here on CPU tensors through the interpreter."""
    from flexsparse.contract._structured import torch_structured
    from flexsparse.contract.plan import structured_kernel

    W = _weight(kind, (20, 24), 5, **opts)
    terms, out = spec.split("->")
    wi, ti = terms.split(",")[w_pos], terms.split(",")[1 - w_pos]
    sizes = {"o": 20, "i": 24, "b": 3}
    x = np.random.default_rng(6).standard_normal(tuple(sizes[c] for c in ti))
    kernel = structured_kernel(wi, ti, out)
    got = torch_structured(W, wi, torch.from_numpy(x).to(DEVICE), ti, out, kernel)
    ops = (W.todense(), x) if w_pos == 0 else (x, W.todense())
    np.testing.assert_allclose(got.cpu().numpy(), np.einsum(spec, *ops), rtol=1e-10, atol=1e-10)
