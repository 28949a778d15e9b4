"""finetune: masks hold, gradients reach only kept weights, schedules, losses, summary, registry."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from flexsparse import prune_mask  # noqa: E402
from flexsparse.torch import SparseLinear  # noqa: E402
from flexsparse.torch.finetune import LOSSES, FinetuneSummary, finetune  # noqa: E402
from flexsparse.torch.finetune_init import pattern_span, token_rows  # noqa: E402
from flexsparse.torch.finetune_methods import (  # noqa: E402
    BDWP,
    METHODS,
    SRSTE,
    Masked,
    MaskedLinear,
    StraightThroughLinear,
    resolve_method,
)

PATTERNS = [("2:4", None, 0.5), ("4:6->1:4", None, 1 / 6), ("block:4x4", 0.5, 0.5)]


class Net(nn.Module):
    def __init__(self, d=48, h=96, out=24):
        super().__init__()
        self.fc1 = nn.Linear(d, h)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(h, out)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def _setup(seed=0, n_batches=4, d=48):
    torch.manual_seed(seed)
    model = Net(d=d)
    gen = torch.Generator().manual_seed(seed + 1)
    data = [torch.randn(16, d, generator=gen) for _ in range(n_batches)]
    return model, data


def _dense_weights(model):
    return {n: m.to_dense_linear().weight.detach().clone() if isinstance(m, SparseLinear) else m.weight.detach().clone()
            for n, m in model.named_modules() if isinstance(m, (nn.Linear, SparseLinear))}


class Recorder(SRSTE):
    """SR-STE that records, after every step, each layer's kept count and masked zeros."""

    name = "srste"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.log = []

    def after_step(self, layers, step, progress):
        changed = super().after_step(layers, step, progress)
        self.log.append([(int(layer.mask.sum()), layer.mask.numel(),
                          bool(torch.all(layer.masked_weight()[layer.mask == 0] == 0))) for layer in layers])
        return changed


@pytest.mark.parametrize("pattern,density,frac", PATTERNS)
@pytest.mark.parametrize("method", ["masked", "srste", "bdwp"])
def test_masks_hold_during_and_after(pattern, density, frac, method):
    model, data = _setup()
    if method == "srste":
        meth = Recorder(interval=1, until=0.6)
    else:
        meth = resolve_method(method)
    summary = finetune(model, pattern, data, density=density, steps=8, method=meth, lr=1e-2, progress=False)
    for layer in summary.layers:
        assert layer.weight_kept == round(frac * layer.weight_total)
    if method == "srste":
        assert len(meth.log) == 8
        for row in meth.log:
            for kept, total, zeros in row:
                assert kept == round(frac * total) and zeros
    for name in ("fc1", "fc2"):
        mod = getattr(model, name)
        assert isinstance(mod, SparseLinear)
        W = mod.to_dense_linear().weight.detach().numpy()
        # the final weight is a valid instance of the pattern: pruning it changes nothing
        mask = prune_mask(W, pattern, density=density)
        np.testing.assert_array_equal(W * mask, W)
        assert mod.nnz == round(frac * W.size)


def test_masked_gradients_reach_only_kept_weights():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    ml = MaskedLinear(lin, "2:4", None, Masked())
    assert ml.weight is lin.weight  # shares the parameters
    ml.set_mask(torch.from_numpy(prune_mask(lin.weight, "2:4")), zero_pruned=False)
    ml.method.init_layer(ml)
    x = torch.randn(5, 16)
    ml(x).pow(2).sum().backward()
    g = ml.weight.grad
    assert torch.all(g[ml.mask == 0] == 0)
    assert torch.count_nonzero(g[ml.mask == 1]) == int(ml.mask.sum())
    assert torch.all(ml.weight[ml.mask == 0] == 0)   # pruned weights zeroed by init
    ref = nn.functional.linear(x, lin.weight.detach() * ml.mask, lin.bias.detach())
    torch.testing.assert_close(ml(x), ref)


def test_fixed_mask_never_moves_pruned_weights():
    model, data = _setup()
    finetune(model, "2:4", data, steps=6, method="masked", lr=5e-2, result="dense", progress=False)
    for mod in (model.fc1, model.fc2):
        assert type(mod) is nn.Linear
        W = mod.weight.detach()
        assert int((W != 0).sum()) == W.numel() // 2


def test_straight_through_gradcheck_float64():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(6, 8, dtype=torch.float64, generator=gen)
    b = torch.randn(6, dtype=torch.float64, generator=gen, requires_grad=True)
    mask = torch.from_numpy(prune_mask(w.numpy(), "2:4"))
    # the input and bias gradients are exact when the backward mask is the forward one
    assert torch.autograd.gradcheck(lambda x, b: StraightThroughLinear.apply(x, w, b, mask, mask, 0.0), (x, b))
    assert torch.autograd.gradgradcheck is not None


def test_straight_through_weight_and_bdwp_gradients():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(6, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    mask = torch.from_numpy(prune_mask(w.detach().numpy(), "2:4"))
    mask_b = torch.from_numpy(prune_mask(w.detach().numpy(), "2:4", axis=0))
    assert not torch.equal(mask, mask_b)
    gy = torch.randn(5, 6, dtype=torch.float64, generator=gen)
    y = StraightThroughLinear.apply(x, w, None, mask, mask_b, 0.5)
    torch.testing.assert_close(y, x @ (w * mask).T)
    y.backward(gy)
    # dense straight-through weight gradient plus the decay of the pruned weights
    torch.testing.assert_close(w.grad, gy.T @ x + 0.5 * (1 - mask) * w)
    # BDWP: the input gradient uses the backward mask (sparse along the output dim)
    torch.testing.assert_close(x.grad, gy @ (w * mask_b))
    assert not torch.allclose(x.grad, gy @ (w * mask))


def test_srste_and_bdwp_rechoose_masks_on_schedule():
    torch.manual_seed(0)
    for cls in (SRSTE, BDWP):
        lin = nn.Linear(8, 4)
        meth = cls(interval=3, until=1.0)
        ml = MaskedLinear(lin, "2:4", None, meth)
        ml.set_mask(torch.from_numpy(prune_mask(lin.weight, "2:4")), zero_pruned=False)
        meth.init_layer(ml)
        if cls is BDWP:
            np.testing.assert_array_equal(ml.mask_bwd.numpy(), prune_mask(lin.weight, "2:4", axis=0))
        old = ml.mask.clone()
        with torch.no_grad():   # make the pruned weights the largest
            ml.weight.copy_(torch.where(old == 1, 0.01, 1.0) * torch.sign(ml.weight + 1e-3))
        assert not meth.after_step([ml], 1, 0.1) and torch.equal(ml.mask, old)
        assert not meth.after_step([ml], 2, 0.2)
        assert meth.after_step([ml], 3, 0.3)
        torch.testing.assert_close(ml.mask, 1 - old)
        if cls is BDWP:
            np.testing.assert_array_equal(ml.mask_bwd.numpy(), prune_mask(ml.weight, "2:4", axis=0))
        assert meth.refreshes == 1


def test_masks_freeze_after_until():
    torch.manual_seed(0)
    meth = SRSTE(interval=1, until=0.5)
    ml = MaskedLinear(nn.Linear(8, 4), "2:4", None, meth)
    ml.set_mask(torch.from_numpy(prune_mask(ml.weight, "2:4")), zero_pruned=False)
    assert meth.after_step([ml], 1, 0.25)
    assert not meth.after_step([ml], 2, 0.5) and meth.frozen
    assert int((ml.weight != 0).sum()) == 16  # pruned weights zeroed at the freeze
    x = torch.randn(3, 8)
    ml(x).sum().backward()                     # exact masked gradient from now on
    assert torch.all(ml.weight.grad[ml.mask == 0] == 0)


@pytest.mark.parametrize("method", list(METHODS))
def test_loss_decreases(method):
    model, data = _setup(n_batches=2)
    teacher_out = [Net()(x) for x in data]  # noqa: F841  (a different random net, unused)
    summary = finetune(model, "2:4", data, steps=40, method=method, lr=1e-2, progress=False)
    assert summary.loss_end < 0.5 * summary.loss_start


def test_sparsegpt_init_beats_magnitude_one_shot():
    torch.manual_seed(0)
    errs = {}
    for init in ("magnitude", "sparsegpt"):
        torch.manual_seed(0)
        model = Net(d=48, h=96)  # multiples of the 24 columns of a 4:6->1:4 group
        teacher = Net(d=48, h=96)
        teacher.load_state_dict(model.state_dict())
        gen = torch.Generator().manual_seed(5)
        # correlated inputs: the least-squares compensation has something to exploit
        mix = torch.randn(48, 48, generator=gen)
        data = [torch.randn(64, 48, generator=gen) @ mix for _ in range(4)]
        finetune(model, "4:6->1:4", data, steps=0, init=init, calibration=4, teacher=teacher, progress=False)
        with torch.no_grad():
            errs[init] = float(sum((model(x) - teacher(x)).pow(2).mean() for x in data))
        for mod in (model.fc1, model.fc2):
            assert mod.nnz == round(mod.in_features * mod.out_features / 6)
    assert errs["sparsegpt"] < 0.5 * errs["magnitude"]


def test_sparsegpt_reconstructs_on_one_thread_and_restores_threads(monkeypatch):
    from flexsparse.torch import finetune_init

    seen = []
    real = finetune_init._reconstruct

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune_init, "_reconstruct", spy)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model, data = _setup()
        finetune(model, "2:4", data, steps=0, init="sparsegpt", calibration=2, progress=False)
        assert seen == [finetune_init.RECONSTRUCT_THREADS] * 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)


def test_sparsegpt_init_block_pattern_and_local_target():
    model, data = _setup()
    from flexsparse.torch.finetune_init import init_masks
    layers = {}
    for name in ("fc1", "fc2"):
        ml = MaskedLinear(getattr(model, name), "block:8x8", 0.25, Masked())
        setattr(model, name, ml)
        layers[name] = ml
    init_masks("sparsegpt", model, None, layers, data, target="local")
    for ml in layers.values():
        assert int(ml.mask.sum()) == round(0.25 * ml.mask.numel())
        np.testing.assert_array_equal(ml.mask.numpy(), prune_mask(ml.masked_weight().detach().abs() + ml.mask,
                                                                  "block:8x8", density=0.25))


class Blocks(nn.Module):
    """Residual blocks taking (h, scale) like transformer layers take (hidden, attention mask)."""

    class Block(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.q, self.k = nn.Linear(d, d), nn.Linear(d, d)
            self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

        def forward(self, h, scale, gain=1.0):
            a = torch.tanh(self.q(h) * self.k(h)) * scale
            return (h + gain * self.down(torch.relu(self.up(h + a)))), a

    def __init__(self, d=24, n=3):
        super().__init__()
        self.inp = nn.Linear(d, d)
        self.layers = nn.ModuleList(self.Block(d) for _ in range(n))
        self.head = nn.Linear(d, 8)

    def forward(self, x):
        h = self.inp(x)
        scale = torch.full((1,), 0.5)
        for layer in self.layers:
            h = layer(h, scale, gain=0.7)[0]
        return self.head(h)


@pytest.mark.parametrize("pattern,density", [("2:4", None), ("block:4x4", 0.5)])
def test_sparsegpt_blocks_match_whole_model_runs(pattern, density):
    from flexsparse.torch.finetune_init import init_masks
    gen = torch.Generator().manual_seed(2)
    data = [torch.randn(40, 24, generator=gen) for _ in range(3)]
    results = []
    for blocks in ([], ["layers.0", "layers.1", "layers.2"]):
        torch.manual_seed(0)
        model = Blocks()
        teacher = Blocks()
        teacher.load_state_dict(model.state_dict())
        layers = {}
        for name, lin in [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]:
            ml = MaskedLinear(lin, pattern, density, Masked())
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, ml)
            layers[name] = ml
        init_masks("sparsegpt", model, teacher, layers, data, blocks=blocks)
        results.append({n: (ml.weight.detach().clone(), ml.bias.detach().clone(), ml.mask.clone())
                        for n, ml in layers.items()})
        with torch.no_grad():
            err = sum(float((model(x) - teacher(x)).pow(2).mean()) for x in data)
        results[-1]["err"] = err
    for n in results[0]:
        if n == "err":
            continue
        for a, b in zip(results[0][n], results[1][n]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert results[1]["err"] == pytest.approx(results[0]["err"], rel=1e-3)


def test_refit_is_exact_least_squares_on_the_mask():
    from flexsparse.torch.finetune_init import _refit
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(200, 9, dtype=torch.float64, generator=gen)
    X[:, -1] = 1
    Y = torch.randn(200, 5, dtype=torch.float64, generator=gen)
    mask = (torch.rand(5, 9, generator=gen) < 0.5).double()
    mask[:, -1] = 1
    mask[1] = mask[0]           # rows sharing a support share one factorisation
    W = _refit(Y.T @ X, X.T @ X, mask)
    for i in range(5):
        S = torch.nonzero(mask[i]).flatten()
        torch.testing.assert_close(W[i, S], torch.linalg.lstsq(X[:, S], Y[:, i]).solution)
        assert torch.all(W[i][mask[i] == 0] == 0)


@pytest.mark.parametrize("pattern, density", [("block:8x8", 0.25), ("2:4", None)])
def test_refit_runs_only_when_rows_share_kept_sets(monkeypatch, pattern, density):
    from flexsparse.torch import finetune_init
    refit_rows = []
    real = finetune_init._refit
    monkeypatch.setattr(finetune_init, "_refit", lambda *a: refit_rows.append(a[2].shape[0]) or real(*a))
    model, data = _setup()
    layers = {}
    for name in ("fc1", "fc2"):
        ml = MaskedLinear(getattr(model, name), pattern, density, Masked())
        setattr(model, name, ml)
        layers[name] = ml
    finetune_init.init_masks("sparsegpt", model, None, layers, data, target="local")
    for ml in layers.values():   # fc1 has 96 rows, fc2 24: rows tell the layers apart
        sets = torch.unique(ml.mask.to(torch.bool), dim=0).shape[0]
        assert (ml.mask.shape[0] in refit_rows) == (sets <= finetune_init.REFIT_MAX_SUPPORTS)
    if pattern == "2:4":         # 96 rows of 2:4 over 48 columns: nearly every row its own set
        assert 96 not in refit_rows


def test_deterministic_with_seed():
    results = []
    for _ in range(2):
        model, data = _setup()
        finetune(model, "2:4", data, steps=5, method="srste", lr=1e-2, seed=3, dropout=True, progress=False)
        results.append(_dense_weights(model))
    for k in results[0]:
        assert torch.equal(results[0][k], results[1][k])


def test_max_time_and_data_stops():
    model, data = _setup()
    ticks = iter(range(10_000))
    summary = finetune(model, "2:4", data, max_time=5, clock=lambda: float(next(ticks)), progress=False)
    assert summary.stopped_by == "time" and 0 < summary.steps < 5
    model, data = _setup()
    summary = finetune(model, "2:4", iter(data), steps=100, progress=False)  # an iterator: one pass
    assert summary.stopped_by == "data" and summary.steps == len(data)
    model, data = _setup()
    summary = finetune(model, "2:4", data, progress=False)                 # no budget: one epoch
    assert summary.stopped_by == "steps" and summary.steps == len(data) and summary.epochs == pytest.approx(1.0)


def test_summary_fields_and_rendering():
    model, data = _setup()
    summary = finetune(model, "2:4", data, steps=6, method="bdwp", progress=False)
    assert isinstance(summary, FinetuneSummary)
    assert summary.steps == 6 and len(summary.losses) == 6 and summary.stopped_by == "steps"
    assert summary.method == "bdwp" and summary.init == "magnitude" and summary.result == "sparse"
    assert summary.epochs == pytest.approx(1.5)
    assert [layer.name for layer in summary.layers] == ["fc1", "fc2"]
    assert summary.kept_fraction == 0.5
    assert summary.weights_total == 48 * 96 + 96 * 24
    assert summary.bytes_dense == (48 * 96 + 96 + 96 * 24 + 24) * 4
    assert summary.bytes_sparse < summary.bytes_dense
    assert summary.seconds > 0 and summary.cpu_seconds > 0 and summary.init_seconds >= 0
    assert 0 <= summary.init_cpu_seconds <= summary.cpu_seconds
    assert summary.train_cpu_per_step == pytest.approx(
        (summary.cpu_seconds - summary.init_cpu_seconds) / 6)
    assert summary.loss_start == pytest.approx(np.mean(summary.losses[:6]))
    with pytest.raises(AttributeError):
        summary.steps = 3  # frozen
    text = str(summary)
    assert "2:4" in text and "bdwp" in text and "6 (1.50 epochs" in text
    assert "CPU-s per training step" in text
    from rich.console import Console
    console = Console(record=True, width=160)
    console.print(summary)
    assert "bytes sparse / dense" in console.export_text()


def test_progress_bar_runs(capsys):
    model, data = _setup()
    summary = finetune(model, "2:4", data, steps=2, progress=True)
    assert summary.steps == 2
    assert "fine-tuning" in capsys.readouterr().out


def test_include_exclude_and_freeze():
    model, data = _setup()
    before = model.fc1.bias.detach().clone()
    summary = finetune(model, "2:4", data, steps=3, exclude="fc2", freeze="fc1.bias", lr=1e-2, progress=False)
    assert [layer.name for layer in summary.layers] == ["fc1"]
    assert isinstance(model.fc1, SparseLinear) and type(model.fc2) is nn.Linear
    torch.testing.assert_close(model.fc1.bias.detach(), before)
    model, data = _setup()
    with pytest.raises(ValueError, match="no nn.Linear layer selected"):
        finetune(model, "2:4", data, include="nope*", progress=False)


def test_registry_and_argument_errors():
    model, data = _setup()
    with pytest.raises(ValueError, match="valid methods: masked, srste, bdwp"):
        finetune(model, "2:4", data, method="rigl", progress=False)
    with pytest.raises(ValueError, match="valid inits: magnitude, sparsegpt"):
        finetune(model, "2:4", data, init="random", progress=False)
    with pytest.raises(ValueError, match="valid losses: distill, cosine, mse"):
        finetune(model, "2:4", data, loss="kl", progress=False)
    with pytest.raises(ValueError, match="valid results: sparse, dense"):
        finetune(model, "2:4", data, result="csr", progress=False)
    with pytest.raises(ValueError, match="valid schedules"):
        finetune(model, "2:4", data, schedule="step", progress=False)
    with pytest.raises(ValueError, match="needs density"):
        finetune(model, "block:4x4", data, progress=False)
    with pytest.raises(TypeError, match="nn.Module"):
        finetune("model", "2:4", data, progress=False)
    with pytest.raises(ValueError, match="max_time"):
        finetune(model, "2:4", data, max_time=0, progress=False)
    with pytest.raises(ValueError, match="interval"):
        SRSTE(interval=-1)
    with pytest.raises(ValueError, match="until"):
        BDWP(until=2.0)
    assert type(model.fc1) is nn.Linear  # nothing was swapped by the failed calls
    assert set(LOSSES) == {"distill", "cosine", "mse"}


class DictNet(nn.Module):
    """Takes a mapping (like tokenizer features) and returns a mapping of outputs."""

    def __init__(self, vocab=50, d=32):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.block = nn.Sequential(nn.Linear(d, 64), nn.GELU(), nn.Linear(64, d))
        self.head = nn.Linear(d, d)

    def forward(self, feats):
        h = self.block(self.emb(feats["input_ids"]))
        am = feats["attention_mask"].unsqueeze(-1).float()
        pooled = self.head((h * am).sum(1) / am.sum(1))
        return {"token_embeddings": h, "sentence_embedding": pooled}


def test_mapping_batches_hidden_losses_and_padding():
    torch.manual_seed(0)
    model = DictNet()
    gen = torch.Generator().manual_seed(0)
    data = []
    for _ in range(3):
        ids = torch.randint(0, 50, (8, 10), generator=gen)
        am = (torch.arange(10)[None, :] < torch.randint(3, 11, (8, 1), generator=gen)).long()
        data.append({"input_ids": ids, "attention_mask": am})
    summary = finetune(model, "2:4", data, steps=30, hidden="block", init="sparsegpt", calibration=2,
                       output="sentence_embedding", lr=5e-3, freeze="emb.*", progress=False)
    assert summary.loss_end < summary.loss_start
    assert len(summary.layers) == 3
    # padded tokens are dropped from token-level rows
    t = torch.arange(2 * 10 * 3, dtype=torch.float32).reshape(2, 10, 3)
    rows = token_rows(data[0], torch.cat([t] * 4))
    assert rows.shape == (int(data[0]["attention_mask"].sum()), 3)


def test_pattern_span():
    assert pattern_span("1:4") == 4 and pattern_span("3:4->2:4") == 16
    assert pattern_span("block:8") is None and pattern_span("dense") is None

