"""SparseLinear: drop-in behaviour, pruning, training on kept values, state_dict round trip."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = nn.functional

from flexsparse.torch import SparseLinear  # noqa: E402

PATTERNS = [("2:4", None), ("1:4", None), ("3:4->2:4", None), ("4:6->1:4", None),
            ("block:4x4", 0.5), ("block:8x2", 0.25)]
PIDS = [p if d is None else f"{p}@{d}" for p, d in PATTERNS]


def _linear(in_f, out_f, bias=True, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(in_f, out_f, bias=bias, dtype=dtype)


def _expected_density(pattern, density):
    if pattern.startswith("block"):
        return None
    from flexsparse.formats.hss import HSSPattern

    return HSSPattern.parse(pattern).density


@pytest.mark.parametrize("pattern,density", PATTERNS, ids=PIDS)
def test_from_linear_matches_pruned_dense(pattern, density):
    lin = _linear(48, 24)                          # 48 = multiple of 4, 6*4=24 and 8
    layer = SparseLinear.from_linear(lin, pattern, density)
    dense = layer.to_dense_linear()
    Wd = dense.weight.detach()
    # kept entries are the original weights; the rest are zero
    kept = Wd != 0
    torch.testing.assert_close(Wd[kept], lin.weight.detach()[kept])
    want = _expected_density(pattern, density)
    if want is not None:
        assert layer.density == pytest.approx(want)
        assert int(kept.sum()) == pytest.approx(want * Wd.numel())
    else:
        assert layer.density == pytest.approx(density, abs=0.13)
    x = torch.randn(2, 5, 48)
    torch.testing.assert_close(layer(x), F.linear(x, Wd, lin.bias), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dense(x), layer(x), atol=1e-5, rtol=1e-5)
    assert layer.in_features == 48 and layer.out_features == 24
    r = repr(layer)
    assert f"pattern='{pattern}'" in r and f"density={layer.density:.3f}" in r


def test_nm_pattern_respected_and_magnitude_pruning():
    lin = _linear(16, 8, seed=3)
    layer = SparseLinear.from_linear(lin, "2:4")
    W = layer.to_dense_linear().weight.detach().numpy()
    orig = lin.weight.detach().numpy()
    groups = W.reshape(8, 4, 4)
    assert np.all((groups != 0).sum(-1) <= 2)
    # the two largest magnitudes of each group survive
    og = np.abs(orig.reshape(8, 4, 4))
    top2 = np.sort(og, axis=-1)[..., 2:]
    np.testing.assert_allclose(np.sort(np.abs(groups), axis=-1)[..., 2:], top2, rtol=1e-6)


@pytest.mark.parametrize("pattern,density", [("2:4", None), ("3:4->2:4", None), ("block:4x4", 0.5)])
def test_training_step_updates_only_kept_values(pattern, density):
    lin = _linear(32, 12, dtype=torch.float64)
    layer = SparseLinear.from_linear(lin, pattern, density)
    mask = layer.to_dense_linear().weight.detach() != 0
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x, target = torch.randn(16, 32, dtype=torch.float64), torch.randn(16, 12, dtype=torch.float64)
    before = layer.to_dense_linear().weight.detach().clone()
    loss = F.mse_loss(layer(x), target)
    loss.backward()
    # reference: the dense masked gradient
    Wd = before.clone().requires_grad_()
    F.mse_loss(F.linear(x, Wd, layer.bias.detach()), target).backward()
    opt.step()
    after = layer.to_dense_linear().weight.detach()
    torch.testing.assert_close(after, before - 0.1 * Wd.grad * mask)
    assert torch.all(after[~mask] == 0)
    assert F.mse_loss(layer(x), target) < loss               # the step helped


@pytest.mark.parametrize("pattern,density", [("2:4", None), ("4:6->1:4", None), ("block:4x8", 0.5)])
def test_state_dict_round_trip(pattern, density):
    lin = _linear(48, 20)
    src = SparseLinear.from_linear(lin, pattern, density)
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    # load into a layer of a DIFFERENT pattern: structure, values and description follow
    dst = SparseLinear(48, 20, pattern="block:2x2", density=0.9)
    dst.load_state_dict(torch.load(buf, weights_only=False))
    x = torch.randn(3, 48)
    torch.testing.assert_close(dst(x), src(x))
    assert dst.pattern == pattern and repr(dst) == repr(src)
    with pytest.raises(RuntimeError, match="size mismatch"):
        SparseLinear(47, 20, pattern="2:4").load_state_dict(src.state_dict())


def test_constructor_like_nn_linear():
    torch.manual_seed(0)
    layer = SparseLinear(32, 16, bias=False, pattern="1:4")
    assert layer.bias is None and layer.values.requires_grad
    assert layer.density == pytest.approx(0.25)
    bound = 1 / np.sqrt(32)                                 # kaiming_uniform(a=sqrt(5)) bound
    assert layer.values.abs().max() <= bound + 1e-6
    assert layer(torch.randn(4, 32)).shape == (4, 16)
    assert layer(torch.randn(32)).shape == (16,)            # un-batched input, like nn.Linear


def test_ragged_shapes_and_dtypes():
    lin = _linear(13, 7, dtype=torch.float64)               # 13: not a multiple of 4 nor 8
    for pattern, density in (("2:4", None), ("block:8x8", 0.6), ("3:4->2:4", None)):
        layer = SparseLinear.from_linear(lin, pattern, density)
        assert layer.values.dtype == torch.float64
        x = torch.randn(5, 13, dtype=torch.float64)
        torch.testing.assert_close(layer(x), F.linear(x, layer.to_dense_linear().weight, lin.bias))


@pytest.mark.parametrize("dispatch", ["sparse", "dense"])
def test_dispatch_choices_agree(dispatch):
    lin = _linear(32, 16)
    a = SparseLinear.from_linear(lin, "2:4", dispatch=dispatch)
    b = SparseLinear.from_linear(lin, "2:4")
    x = torch.randn(4, 32)
    torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=1e-5)


def test_density_extremes():
    lin = _linear(16, 8)
    full = SparseLinear.from_linear(lin, "4:4")             # keeps everything
    torch.testing.assert_close(full.to_dense_linear().weight, lin.weight)
    empty = SparseLinear.from_linear(lin, "block:4x4", density=0.0)
    assert empty.nnz == 0
    x = torch.randn(2, 16)
    torch.testing.assert_close(empty(x), lin.bias.detach().expand(2, 8))


def test_errors():
    lin = _linear(16, 8)
    with pytest.raises(ValueError, match="pattern"):
        SparseLinear.from_linear(lin, "2-4")
    with pytest.raises(TypeError, match="from_linear expects an nn.Linear"):
        SparseLinear.from_linear(nn.Conv1d(1, 1, 1), "2:4")
    layer = SparseLinear.from_linear(lin, "2:4")
    with pytest.raises(ValueError, match=r"input has 15 features .* in_features=16"):
        layer(torch.randn(3, 15))
    with pytest.raises(ValueError, match="unknown backend 'cuda'; valid backends: auto, numba, triton"):
        SparseLinear(16, 8, pattern="2:4", backend="cuda")
    with pytest.raises(ValueError, match="unknown dispatch 'fast'; valid dispatches: auto, sparse, dense"):
        SparseLinear(16, 8, pattern="2:4", dispatch="fast")
    with pytest.raises(ValueError, match="SparseLinear needs a pattern"):
        SparseLinear(16, 8)


def test_sparse_nbytes_counts_values_and_metadata():
    layer = SparseLinear.from_linear(_linear(64, 32), "2:4")
    # values float32 [32, 16, 2] + positions uint8 [32, 16, 2]
    assert layer.sparse_nbytes == 32 * 16 * 2 * 4 + 32 * 16 * 2
    blk = SparseLinear.from_linear(_linear(64, 32), "block:16x16", density=0.5)
    nb = blk.values.shape[0]
    assert blk.sparse_nbytes == nb * 256 * 4 + (32 // 16 + 1) * 8 + nb * 4


@pytest.mark.parametrize("pattern,density", [("2:4", None), ("block:8x8", 0.9)])
def test_inference_dense_fallback_matches_and_keeps_input_grad(pattern, density):
    """Above the crossover density, inference uses torch GEMM on the cached dense copy."""
    lin = _linear(32, 16)
    layer = SparseLinear.from_linear(lin, pattern, density, dispatch="dense")
    x = torch.randn(4, 32)
    ref = F.linear(x, layer.to_dense_linear().weight, lin.bias)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref)
    layer.values.requires_grad_(False)
    xg = x.clone().requires_grad_()
    layer(xg).sum().backward()
    torch.testing.assert_close(xg.grad, torch.ones(4, 16) @ layer.to_dense_linear().weight.detach())
    with torch.no_grad():                      # in-place update of the values is seen
        layer.values.mul_(2)
        torch.testing.assert_close(layer(x), 2 * (ref - lin.bias) + lin.bias)


@pytest.mark.parametrize("pattern", ["1:4", "4:6->1:4"])
@pytest.mark.parametrize("threads", [1, 2])
def test_large_batch_forward_and_backward_match_dense(pattern, threads):
    """A MiniLM-like call (many tokens through a narrow layer: the lane kernel's direct
    store and batch split) equals the pruned dense layer, forward and backward, serial and
    threaded."""
    import numba

    torch.manual_seed(0)
    lin = nn.Linear(256, 96)
    layer = SparseLinear.from_linear(lin, pattern, dispatch="sparse")
    ref = layer.to_dense_linear()
    x = torch.randn(16, 160, 256)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        with torch.no_grad():
            torch.testing.assert_close(layer(x), ref(x), rtol=1e-4, atol=1e-4)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        dy = torch.randn(16, 160, 96)
        (layer(xa) * dy).sum().backward()
        (ref(xb) * dy).sum().backward()
    finally:
        numba.set_num_threads(old)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-3)
    dense_grad = ref.weight.grad.numpy()
    cols = layer.sparse_weight().columns()
    kept = np.where(cols < 256, np.take_along_axis(dense_grad, np.minimum(cols, 255), axis=1), 0)
    np.testing.assert_allclose(layer.values.grad.numpy().reshape(96, -1), kept, rtol=1e-3, atol=1e-3)
