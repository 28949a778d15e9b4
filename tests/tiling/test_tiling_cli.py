"""The ``tile-bench`` command function (registered by flexsparse.cli as ``flexsparse tile-bench``)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import typer
from typer.testing import CliRunner

from flexsparse.tiling.cli import load_matrix, tile_bench


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("tile-bench")(tile_bench)
    app.command("noop")(lambda: None)   # two commands so typer keeps the sub-command name
    return app


def test_tile_bench_prints_report_and_checks(tmp_path):
    res = CliRunner().invoke(_app(), ["tile-bench", "--n", "300", "--nnz", "1500", "--limit",
                                      "16KiB", "--tiling", "prescient", "--check"])
    assert res.exit_code == 0, res.output
    assert "tiling report (prescient)" in res.output
    assert "check against the untiled product: OK" in res.output


def test_tile_bench_npz_input_and_disk_output(tmp_path):
    m = load_matrix("powerlaw", n=200, nnz=900, seed=3)
    path = tmp_path / "m.npz"
    sp.save_npz(path, m)
    res = CliRunner().invoke(_app(), ["tile-bench", "--matrix", str(path), "--limit", "8KiB",
                                      "--out", str(tmp_path / "c.npz"), "--check"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c.npz").exists()
    assert "OK" in res.output
    import flexsparse as fs  # the product is a flexsparse store: fs.load reads it
    np.testing.assert_allclose(fs.load(tmp_path / "c.npz").todense(), (m @ m).toarray())


def test_tile_bench_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="neither 'powerlaw' nor an existing file"):
        load_matrix(str(tmp_path / "missing.mat"))
    (tmp_path / "m.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match=r"must be a \.mat \(SuiteSparse\), \.npz, \.mtx or \.tns file"):
        load_matrix(str(tmp_path / "m.txt"))
    res = CliRunner().invoke(_app(), ["tile-bench", "--n", "50", "--nnz", "100", "--limit", "lots"])
    assert res.exit_code != 0
    assert "malformed size 'lots'" in str(res.exception)
