"""Fuzz: CLI misuse never prints a traceback.

Random command lines from a vocabulary of commands, good and corrupt files, missing paths,
bad option values and unknown options run through :func:`flexsparse.cli.main`. Every run
exits 0 or 2; a failing run prints exactly one line, ``error: ...``, on stderr.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import flexsparse as fs
from flexsparse.cli import main

from ._strategies import fuzz_settings

FUZZ = fuzz_settings()
COMMANDS = ["info", "convert", "einsum", "model", "bogus"]
SPECS = ["ij->ij", "ij,jk->ik", "ij,jk", "i.", "..i->", "ij->", "ii", "ij,jk->iq", "a-b"]
OPTIONS = [["--threads", "0"], ["--threads", "-3"], ["--threads", "x"], ["--threads", "1"],
           ["--index-base", "5"], ["--index-base", "1"], ["--header"], ["--no-header"],
           ["--memory-limit", "lots"], ["--memory-limit", "64KB"], ["--tiling", "greedy"],
           ["--limit", "lots"], ["--matrix", "missing.npz"], ["--bogus"], ["-o"], ["--help"]]


def _make_files(d):
    a = fs.random((6, 5), 0.4, seed=0)
    fs.save(d / "good.npz", a)
    fs.save(d / "good.tns", a, index_base=0, header=True)
    fs.save(d / "good.mtx", a)
    (d / "empty.npz").write_bytes(b"")
    raw = (d / "good.npz").read_bytes()
    (d / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (d / "bad.tns").write_text("2 2\n0 1 1_000\n")
    (d / "bad.mtx").write_text("%%MatrixMarket matrix coordinate integer general\n2 2 1\n1 1 99999999999999999999\n")
    (d / "sub").mkdir()
    names = ["good.npz", "good.tns", "good.mtx", "empty.npz", "truncated.npz", "bad.tns", "bad.mtx",
             "missing.tns", "sub", "out.npz", "out.xyz"]
    return d, names


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Shared by the fuzz examples (a ``convert`` may overwrite any of them)."""
    return _make_files(tmp_path_factory.mktemp("cli"))


@pytest.fixture
def fresh_files(tmp_path):
    """The same files, made for one test: the corrupt ones are still corrupt."""
    return _make_files(tmp_path)


@FUZZ
@given(cmd=st.sampled_from(COMMANDS), spec=st.sampled_from(SPECS),
       paths=st.lists(st.integers(0, 10), max_size=3), opts=st.lists(st.sampled_from(OPTIONS), max_size=3),
       out=st.sampled_from([0, 1, 2, 7, 8, 9, 10]), data=st.data())
def test_cli_misuse_is_one_line_and_status_2(files, capsys, cmd, spec, paths, opts, out, data):
    d, names = files
    argv = [cmd] + ([spec] if cmd == "einsum" else [])
    argv += [str(d / names[p]) for p in paths]
    if cmd == "einsum" and data.draw(st.booleans()):
        argv += ["-o", str(d / names[out])]
    for o in opts:
        argv += o
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert code in (0, 2), (argv, code, captured.err)
    if code:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, captured.err)


@pytest.mark.parametrize("argv, message", [
    (["info", "{d}/empty.npz"], "empty.npz: not a flexsparse .npz"),
    (["info", "{d}/truncated.npz"], "truncated.npz:"),
    (["convert", "{d}/truncated.npz", "{d}/x.tns"], "truncated.npz:"),
    (["einsum", "ij->ij", "{d}/good.npz", "-o", "{d}/o.npz", "--threads", "0"], "--threads"),
    (["einsum", "ij->ij", "{d}/good.npz", "-o", "{d}/o.npz", "--threads", "-3"], "--threads"),
    (["info", "{d}/bad.tns", "--index-base", "0"], "bad.tns:2:"),
    (["info", "{d}/bad.mtx"], "bad.mtx:3: value 99999999999999999999 is out of the range of int64"),
    (["tile-bench", "--limit", "lots"], "malformed size 'lots'"),
    (["tile-bench", "--tiling", "greedy"], "unknown tiling strategy 'greedy'"),
    (["einsum", "i.", "{d}/good.npz", "-o", "{d}/o.npz"], "not part of an ellipsis"),
    (["einsum", "ij->ij", "{d}/good.npz", "-o", "{d}/o.xyz"], "unsupported file format '.xyz'"),
    (["bogus"], "No such command 'bogus'"),
])
def test_cli_errors_name_the_problem(fresh_files, capsys, argv, message):
    d, _ = fresh_files
    with pytest.raises(SystemExit) as exc:
        main([a.format(d=d) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
