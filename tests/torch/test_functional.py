"""sparse_linear autograd: forward against F.linear on the dense weight, gradcheck in float64."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from flexsparse.torch.functional import padding_mask, resolve_backend, sparse_linear  # noqa: E402

# (kind, shape, options): ragged edges everywhere (shapes not multiples of blocks/groups)
CASES = [
    ("block", (7, 10), {"block": (4, 4), "density": 0.5}),
    ("block", (9, 6), {"block": (2, 3), "density": 0.7}),
    ("block", (5, 11), {"block": (8, 16), "density": 1.0}),
    ("nm", (5, 11), {"pattern": "2:4"}),
    ("nm", (4, 7), {"pattern": "1:3"}),
    ("hss", (5, 19), {"pattern": "3:4->2:4"}),
    ("hss", (3, 26), {"pattern": "4:6->1:4"}),
]
IDS = [f"{k}-{s[0]}x{s[1]}-{'-'.join(str(v) for v in o.values())}" for k, s, o in CASES]


def _dense(W, dtype):
    return torch.tensor(W.todense(), dtype=dtype)


@pytest.mark.parametrize("kind,shape,opts", CASES, ids=IDS)
def test_gradcheck_float64(weight_factory, kind, shape, opts):
    W = weight_factory(kind, shape, seed=1, **opts)
    values = torch.tensor(W.values, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.randn(shape[0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, v, b: sparse_linear(x, W, v, b), (x, values, b))


@pytest.mark.parametrize("kind,shape,opts", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_matches_dense_linear(weight_factory, kind, shape, opts, dtype):
    np_dt = np.float32 if dtype == torch.float32 else np.float64
    W = weight_factory(kind, shape, seed=2, dtype=np_dt, **opts)
    x = torch.randn(2, 3, shape[1], dtype=dtype)            # leading batch dims [..., K]
    b = torch.randn(shape[0], dtype=dtype)
    y = sparse_linear(x, W, bias=b)
    ref = F.linear(x, _dense(W, dtype), b)
    assert y.shape == (2, 3, shape[0]) and y.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(y, ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("kind,shape,opts", CASES[::2], ids=IDS[::2])
def test_gradients_match_dense_masked(weight_factory, kind, shape, opts):
    """Input/bias gradients equal dense autograd; values gradient equals the dense weight
    gradient read at the kept positions (and pruned positions get nothing)."""
    W = weight_factory(kind, shape, seed=3, **opts)
    x = torch.randn(5, shape[1], dtype=torch.float64, requires_grad=True)
    values = torch.tensor(W.values, requires_grad=True)
    b = torch.randn(shape[0], dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, shape[0], dtype=torch.float64)
    sparse_linear(x, W, values, b).backward(g)
    xd = x.detach().clone().requires_grad_()
    Wd = _dense(W, torch.float64).requires_grad_()
    bd = b.detach().clone().requires_grad_()
    F.linear(xd, Wd, bd).backward(g)
    torch.testing.assert_close(x.grad, xd.grad)
    torch.testing.assert_close(b.grad, bd.grad)
    # scatter the values gradient back to dense through the format itself
    dense_from_values = W.with_values(values.grad.numpy()).todense()
    mask = W.with_values(np.ones_like(W.values) * ~padding_mask_or_false(W)).todense() != 0
    np.testing.assert_allclose(dense_from_values, np.where(mask, Wd.grad.numpy(), 0), atol=1e-12)


def padding_mask_or_false(W):
    pad = padding_mask(W)
    return np.zeros(W.values.shape, dtype=bool) if pad is None else pad


def test_non_contiguous_and_half_inputs(weight_factory):
    W = weight_factory("nm", (6, 12), dtype=np.float32, pattern="2:4")
    x = torch.randn(12, 4).t()                      # [4, 12] transposed view
    assert not x.is_contiguous()
    torch.testing.assert_close(sparse_linear(x, W), F.linear(x, _dense(W, torch.float32)))
    xh = torch.randn(3, 12).to(torch.bfloat16)
    vh = torch.tensor(W.values).to(torch.bfloat16)
    y = sparse_linear(xh, W, vh)
    assert y.dtype == torch.bfloat16
    ref = F.linear(xh.float(), torch.tensor(W.with_values(vh.float().numpy()).todense()))
    torch.testing.assert_close(y.float(), ref, atol=2e-2, rtol=2e-2)


def test_empty_batch_and_no_blocks(weight_factory):
    W = weight_factory("block", (8, 8), block=(4, 4), density=0.0)
    assert W.n_blocks == 0
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    y = sparse_linear(x, W, torch.tensor(W.values, requires_grad=True))
    assert torch.count_nonzero(y) == 0
    y.sum().backward()
    assert torch.count_nonzero(x.grad) == 0
    W2 = weight_factory("nm", (4, 8), pattern="2:4")
    out = sparse_linear(torch.zeros(0, 8, dtype=torch.float64), W2)
    assert out.shape == (0, 4)


def test_padding_values_are_ignored(weight_factory):
    W = weight_factory("nm", (3, 5), pattern="2:4")     # group 2 covers columns 4..7
    pad = padding_mask(W)
    assert pad is not None and pad.any()
    v = torch.tensor(W.values)
    v[torch.from_numpy(pad)] = 123.0
    x = torch.randn(2, 5, dtype=torch.float64)
    torch.testing.assert_close(sparse_linear(x, W, v), F.linear(x, _dense(W, torch.float64)))


def test_errors(weight_factory):
    W = weight_factory("hss", (4, 16), pattern="3:4->2:4")
    with pytest.raises(ValueError, match=r"input has 15 features .* in_features=16"):
        sparse_linear(torch.randn(2, 15, dtype=torch.float64), W)
    with pytest.raises(TypeError, match="input dtype torch.float32 does not match .* torch.float64"):
        sparse_linear(torch.randn(2, 16), W)
    with pytest.raises(ValueError, match="values must have shape"):
        sparse_linear(torch.randn(2, 16, dtype=torch.float64), W, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        sparse_linear(torch.randn(2, 16, dtype=torch.float64), W, bias=torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown backend 'gpu'; valid backends: auto, numba, triton"):
        sparse_linear(torch.randn(2, 16, dtype=torch.float64), W, backend="gpu")
    with pytest.raises(TypeError, match="weight must be a BlockSparse, NM or HSS"):
        sparse_linear(torch.randn(2, 16), np.zeros((4, 16)))
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        sparse_linear(np.zeros((2, 16)), W)


def test_resolve_backend():
    assert resolve_backend("auto", torch.device("cpu")) == "numba"
    assert resolve_backend("auto", torch.device("cuda")) == "triton"
    with pytest.raises(ValueError, match="backend 'numba' runs on CPU tensors"):
        resolve_backend("numba", torch.device("cuda"))


@pytest.mark.jitless
def test_jitless_tiny_forward_backward(weight_factory):
    """Tiny case through the numba kernels (also run with NUMBA_DISABLE_JIT=1)."""
    for kind, opts in (("block", {"block": (2, 2), "density": 0.6}), ("hss", {"pattern": "2:4->1:2"})):
        W = weight_factory(kind, (3, 6), seed=4, **opts)
        W.backend = "sparse"                      # force the numba kernels, not dense BLAS
        values = torch.tensor(W.values, requires_grad=True)
        x = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
        y = sparse_linear(x, W, values)
        torch.testing.assert_close(y, F.linear(x, _dense(W, torch.float64)))
        y.sum().backward()
        torch.testing.assert_close(x.grad, torch.ones(2, 3, dtype=torch.float64) @ _dense(W, torch.float64))


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # the fixture is a pure builder
@given(M=st.integers(1, 9), K=st.integers(1, 23), B=st.integers(0, 4),
       pattern=st.sampled_from(["1:2", "2:4", "3:4->2:4", "2:3->1:2"]), seed=st.integers(0, 2**16))
def test_hypothesis_forward_and_input_grad_match_dense(weight_factory, M, K, B, pattern, seed):
    """Invariant: for any shape (ragged K included), forward = F.linear on todense() and the
    input gradient = dY @ W_dense."""
    kind = "hss" if "->" in pattern else "nm"
    W = weight_factory(kind, (M, K), seed=seed, pattern=pattern)
    x = torch.randn(B, K, dtype=torch.float64, requires_grad=True)
    y = sparse_linear(x, W)
    Wd = _dense(W, torch.float64)
    torch.testing.assert_close(y, F.linear(x.detach(), Wd))
    g = torch.randn(B, M, dtype=torch.float64)
    y.backward(g)
    torch.testing.assert_close(x.grad, g @ Wd)
