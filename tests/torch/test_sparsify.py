"""sparsify: replaces the selected nn.Linear layers in place; the summary counts are right."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from flexsparse.torch import SparseLinear, SparsifySummary, sparsify  # noqa: E402


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.Linear(16, 16)
        self.proj = nn.Linear(16, 32, bias=False)
        self.act = nn.GELU()
        self.out = nn.Linear(32, 16)

    def forward(self, x):
        return self.out(self.act(self.proj(self.attn(x))))


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(Block(), Block(), nn.Linear(16, 4))


def _linear_names(model, cls):
    return sorted(n for n, m in model.named_modules() if type(m) is cls)


def test_replaces_all_linears_and_counts():
    model = _model()
    x = torch.randn(3, 16)
    summary = sparsify(model, "2:4")
    assert isinstance(summary, SparsifySummary)
    assert _linear_names(model, nn.Linear) == []
    assert len(_linear_names(model, SparseLinear)) == 7
    dense_w = 2 * (16 * 16 + 16 * 32 + 32 * 16) + 16 * 4
    biases = 2 * (16 + 16) + 4
    assert summary.params_dense == dense_w + biases
    assert summary.params_kept == dense_w // 2 + biases
    assert summary.bytes_dense == (dense_w + biases) * 4
    # sparse bytes: half the values (float32) + one uint8 position per kept value
    assert summary.bytes_sparse == (dense_w // 2) * 5 + biases * 4
    assert [layer.name for layer in summary.layers] == [
        "0.attn", "0.proj", "0.out", "1.attn", "1.proj", "1.out", "2"]
    assert model(x).shape == (3, 4)


def test_include_exclude_globs_and_callables():
    model = _model()
    summary = sparsify(model, "block:8x8", density=0.5, include="*.proj", exclude=lambda n: n.startswith("1."))
    assert [layer.name for layer in summary.layers] == ["0.proj"]
    assert isinstance(model[0].proj, SparseLinear) and isinstance(model[1].proj, nn.Linear)
    assert summary.layers[0].density == pytest.approx(0.5)
    assert summary.layers[0].weight_kept == 16 * 32 // 2
    model2 = _model()
    s2 = sparsify(model2, "1:4", include=["0.*", "2"], exclude=["*.out"])
    assert [layer.name for layer in s2.layers] == ["0.attn", "0.proj", "2"]


def test_outputs_match_dense_pruned_model():
    model = _model(1)
    x = torch.randn(5, 16)
    sparsify(model, "3:4->2:4")
    dense = _model(1)
    for name, mod in model.named_modules():
        if isinstance(mod, SparseLinear):
            target = dense.get_submodule(name)
            with torch.no_grad():
                target.weight.copy_(mod.to_dense_linear().weight)
    torch.testing.assert_close(model(x), dense(x), atol=1e-5, rtol=1e-5)


def test_summary_rendering():
    summary = sparsify(_model(), "2:4", include="0.*")
    text = str(summary)
    assert "sparsify pattern='2:4'" in text
    assert "0.attn" in text and "total (3 layers)" in text
    assert f"{summary.params_kept:,}/{summary.params_dense:,}" in text
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(summary)
    assert "0.proj" in console.export_text()


def test_errors():
    with pytest.raises(ValueError, match=r"include '\*\.nothing' matches no nn.Linear layer; layers are: 0.attn"):
        sparsify(_model(), "2:4", include="*.nothing")
    with pytest.raises(TypeError, match="model is itself an nn.Linear"):
        sparsify(nn.Linear(4, 4), "2:4")
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        sparsify("model", "2:4")
    with pytest.raises(TypeError, match="include entries must be glob strings or callables"):
        sparsify(_model(), "2:4", include=[3])
    with pytest.raises(ValueError, match="pattern"):
        sparsify(_model(), "2/4")


def test_empty_selection_and_idempotence():
    model = _model()
    assert sparsify(model, "2:4", exclude="*").layers == ()
    sparsify(model, "2:4")
    again = sparsify(model, "2:4")                 # SparseLinear layers are not re-pruned
    assert again.layers == () and again.params_dense == 0
    assert "total (0 layers)" in str(again)
