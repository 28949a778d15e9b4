"""``flexsparse model run`` / ``artifact``: stats.json contents, mapper fallback, one-line errors."""

from __future__ import annotations

import json

import pytest


def _app():
    from flexsparse.cli import app
    return app


def test_run_writes_stats_json(tmp_path, sl):
    from typer.testing import CliRunner
    files = [str(p) for p in sl.write(tmp_path)]
    res = CliRunner().invoke(_app(), ["model", "run", *files, "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "out" / "stats.json").read_text())
    for key in ("cycles", "energy_uJ", "computes", "utilization", "levels"):
        assert key in data
    assert set(data["levels"]) == {"RF", "GLB", "DRAM"}
    rf = data["levels"]["RF"]
    assert rf["pJ_per_compute"] > 0
    for act in ("reads", "fills", "updates"):
        assert set(rf["dataspaces"]["A"][act]) == {"algorithmic", "actual", "gated", "skipped"}
    total = data["compute"]["pJ_per_compute"] + sum(v["pJ_per_compute"] for v in data["levels"].values())
    assert total == pytest.approx(data["pJ_per_compute_total"])
    assert "GLB" in res.output and "total" in res.output and "…" not in res.output   # table not truncated


def test_run_without_mapping_uses_the_mapper(tmp_path, sl):
    from typer.testing import CliRunner
    files = [str(p) for p in sl.write(tmp_path, mapping=None)]
    res = CliRunner().invoke(_app(), ["model", "run", *files, "--trials", "20", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "stats.json").read_text())
    assert data["computes"] == 512 and data["mapper"]["valid"] >= 20
    assert "mapper: best of" in res.output


def test_errors_are_one_line(tmp_path, sl, capsys):
    import sys

    from flexsparse.cli import main
    files = [str(p) for p in sl.write(tmp_path, mapping=sl.MAPPING.replace("target: RF", "target: L9"))]
    old = sys.argv
    sys.argv = ["flexsparse", "model", "run", *files]
    try:
        with pytest.raises(SystemExit) as exc:
            main()
    finally:
        sys.argv = old
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown storage level 'L9'" in err and "mapping.yaml:" in err


def test_artifact_command_explains_a_missing_checkout(tmp_path):
    from flexsparse.model.cli import artifact_cmd
    with pytest.raises(ValueError, match="Sparseloop artifact not found"):
        artifact_cmd(root=tmp_path, setup="table7", out=None)
