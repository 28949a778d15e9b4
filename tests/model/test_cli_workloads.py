"""``flexsparse model`` runs on every shipped workload, with and without ``--activations``."""

from __future__ import annotations

import json

import pytest

from flexsparse.model import list_workloads

# The design each shipped workload is meant for: GEMM designs for DNN layers, FLAASH for contractions.
_DESIGNS = {"tcl": ("flaash", "flaash-cb", "generic"), "resnet50": ("dense", "stc", "dstc", "generic"),
            "transformer": ("dense", "stc", "dstc", "generic")}


def _main():
    from flexsparse.cli import app
    return app


def test_every_shipped_workload_has_a_design():
    assert set(list_workloads()) <= set(_DESIGNS), "a new shipped workload needs an entry in _DESIGNS"


@pytest.mark.parametrize("workload", sorted(_DESIGNS))
@pytest.mark.parametrize("activations", [None, "0.5", "0.3"])
def test_model_cli_runs_on_workload(workload, activations, tmp_path):
    from typer.testing import CliRunner
    runner = CliRunner()
    results = {}
    for design in _DESIGNS[workload]:
        args = ["model", "--design", design, "--workload", workload, "--out", str(tmp_path)]
        if activations is not None:
            args += ["--activations", activations]
        res = runner.invoke(_main(), args)
        assert res.exit_code == 0, res.output
        assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
        files = list(tmp_path.glob(f"{design}-*.json"))
        assert len(files) == 1, files
        results[design] = json.loads(files[0].read_text())
        assert results[design]["cycles"] > 0 and results[design]["energy_uJ"] > 0
    if activations is not None:
        # Sparse activations never make a design slower than dense (density 1.0) activations.
        for design, row in results.items():
            dense = runner.invoke(_main(), ["model", "--design", design, "--workload", workload,
                                            "--activations", "1.0", "--out", str(tmp_path / "dense")])
            assert dense.exit_code == 0, dense.output
            ref = json.loads(next((tmp_path / "dense").glob(f"{design}-*.json")).read_text())
            assert row["cycles"] <= ref["cycles"] * (1 + 1e-9), (design, row["cycles"], ref["cycles"])
