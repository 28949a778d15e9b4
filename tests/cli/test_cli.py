"""The typer CLI: einsum on files, info (the demo: tests/cli/test_demo.py)."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

import flexsparse as fs
from flexsparse.cli import app

runner = CliRunner()


def test_einsum_and_info_on_files(tmp_path):
    a = fs.random((30, 40), 0.1, seed=0)
    b = fs.random((40, 20), 0.1, seed=1)
    fs.save(tmp_path / "a.npz", a)
    fs.save(tmp_path / "b.mtx", b)
    res = runner.invoke(app, ["einsum", "ij,jk->ik", str(tmp_path / "a.npz"), str(tmp_path / "b.mtx"),
                              "-o", str(tmp_path / "c.npz"), "--path"])
    assert res.exit_code == 0, res.output
    c = fs.load(tmp_path / "c.npz")
    np.testing.assert_allclose(c.todense(), a.todense() @ b.todense())
    res = runner.invoke(app, ["info", str(tmp_path / "c.npz")])
    assert res.exit_code == 0, res.output
    assert "nnz" in res.output and "(30, 20)" in res.output
    text = " ".join(res.output.split())  # rich wraps long lines
    assert "flexsparse store" in text and "encoding coo" in text


def test_einsum_cli_memory_limit_report(tmp_path):
    a = fs.random((200, 200), 0.02, seed=0, distribution="powerlaw")
    fs.save(tmp_path / "a.tns", a, index_base=1)
    res = runner.invoke(app, ["einsum", "ij,jk->ik", str(tmp_path / "a.tns"), str(tmp_path / "a.tns"),
                              "--index-base", "1", "-o", str(tmp_path / "c.npz"),
                              "--memory-limit", "100kB", "--report"])
    assert res.exit_code == 0, res.output
    assert "tiles" in res.output.lower()
    c = fs.load(tmp_path / "c.npz")   # streamed tile by tile into the store
    np.testing.assert_allclose(c.todense(), a.todense() @ a.todense())
    res = runner.invoke(app, ["info", str(tmp_path / "c.npz")])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "encoding csr" in text and "(200, 200)" in text


def test_einsum_cli_bad_file(tmp_path):
    bad = tmp_path / "bad.tns"
    bad.write_text("1 1 2.0\n1 x 3.0\n")
    res = runner.invoke(app, ["einsum", "ij,jk->ik", str(bad), str(bad), "--index-base", "1",
                              "-o", str(tmp_path / "o.npz")])
    assert res.exit_code != 0
    assert "bad.tns:2" in str(res.exception)
    assert not (tmp_path / "o.npz").exists()


def test_main_reports_user_errors_without_traceback(tmp_path, capsys, monkeypatch):
    import sys

    from flexsparse.cli import main

    monkeypatch.setattr(sys, "argv", ["flexsparse", "info", str(tmp_path / "missing.npz")])
    try:
        main()
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("main() should exit with status 2 on a missing file")
    assert "error:" in capsys.readouterr().err
