"""One regression test per file failure class found by fuzzing flexsparse.load/save (issue #9).

The loader contract: every error about a file is a ValueError (:class:`FileFormatError`) whose
message starts with ``path:`` (``path:line:`` for .tns/.mtx), never another library's exception.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import flexsparse as fs
from flexsparse.formats.io import FileFormatError


def _raises(path, match, **kwargs):
    with pytest.raises(FileFormatError) as exc:
        fs.load(path, **kwargs)
    msg = str(exc.value)
    assert msg.startswith(f"{path}:"), msg
    assert re.search(match, msg), msg
    return msg


# ------------------------------------------------------------ crashes
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04", b"PK\x05\x06" + b"\x00" * 5])
def test_truncated_or_empty_npz(tmp_path, content):
    p = tmp_path / "t.npz"
    p.write_bytes(content)
    _raises(p, "not a flexsparse .npz")


def test_npz_cut_in_half(tmp_path):
    p = tmp_path / "h.npz"
    fs.save(p, fs.random((20, 20), 0.3, seed=1))
    raw = p.read_bytes()
    for cut in (len(raw) // 4, len(raw) // 2, len(raw) - 10):
        p.write_bytes(raw[:cut])
        _raises(p, ".")


# ------------------------------------------------------------ messages without the file name
def _npz(p, **members):
    base = {"format_version": np.int64(1), "shape": np.array([3, 3]), "data": np.ones(2),
            "coords_0": np.array([0, 1]), "coords_1": np.array([1, 2]), "canonical": np.bool_(True)}
    base.update(members)
    np.savez(p, **{k: v for k, v in base.items() if v is not None})
    return p


@pytest.mark.parametrize("members, match", [
    ({"coords_0": np.array([0, 5])}, "out of bounds"),
    ({"coords_0": np.array([0, -1])}, "negative coordinate"),
    ({"coords_1": np.array([1])}, "coords_1 has 1 entries but data has 2"),
    ({"data": np.ones((2, 1))}, "'data' has shape"),
    ({"data": np.array([None, None], dtype=object)}, "'data' has dtype object"),
    ({"shape": np.array([2**63 - 1, 2**63 - 1])}, "."),        # huge but valid extents load
    ({"canonical": np.bool_(True), "coords_0": np.array([1, 0])}, "canonical"),
    ({"shape": np.array([3.0, 3.0])}, "'shape' has dtype float64"),
    ({"coords_0": np.array([0.0, 1.0])}, "'coords_0' has dtype float64"),
    ({"data": np.array(["a", "b"])}, "'data' has dtype <U1"),
    ({"data": np.float64(1.0)}, "'data' has shape \\(\\)"),
])
def test_npz_content_errors_name_the_file(tmp_path, members, match):
    p = _npz(tmp_path / "m.npz", **members)
    if match == ".":
        assert fs.load(p).shape == (2**63 - 1, 2**63 - 1)
        return
    _raises(p, match)


def test_renamed_npy_is_a_file_error(tmp_path):
    np.save(tmp_path / "x.npy", np.eye(3))
    os.replace(tmp_path / "x.npy", tmp_path / "x.npz")
    _raises(tmp_path / "x.npz", "single .npy array")


def test_huge_text_header_shapes_name_file_and_line(tmp_path):
    p = tmp_path / "h.tns"
    p.write_text("99999999999999999999 2\n0 0 1.0\n")
    _raises(p, r":1: .*exceeds the int64 range", header=True, index_base=0)
    m = tmp_path / "h.mtx"
    m.write_text("%%MatrixMarket matrix coordinate real general\n99999999999999999999 2 0\n")
    _raises(m, r":2: .*exceeds the int64 range")


# ------------------------------------------------------------ messages without the line
def test_malformed_tns_number_names_the_line(tmp_path):
    p = tmp_path / "n.tns"
    p.write_text("0 0 1.0\n1 1 1_000\n")
    _raises(p, r":2: cannot parse '1_000'", index_base=0)
    p.write_text("0 0 1.0\n1_0 1 2.0\n")
    _raises(p, r":2: ", index_base=0)


def test_negative_header_extent_names_the_line(tmp_path):
    p = tmp_path / "neg.tns"
    p.write_text("# shape\n2 -3\n0 0 1.0\n")
    _raises(p, r":2: shape header.*negative value -3", header=True, index_base=0)


# ------------------------------------------------------------ silent acceptance
def test_tns_indices_beyond_2_53_are_exact_integers(tmp_path):
    p = tmp_path / "big.tns"
    p.write_text("9007199254740993 0 1.0\n0 1 2.0\n")
    t = fs.load(p, index_base=0)
    assert t.shape == (9007199254740994, 2)
    assert int(t.coords[0].max()) == 9007199254740993
    p.write_text("1.5 0 1.0\n")
    _raises(p, r":1: index 1.5 in mode 0 is not an integer", index_base=0, header=False)


def test_mtx_integer_overflow_is_an_error(tmp_path):
    p = tmp_path / "o.mtx"
    p.write_text("%%MatrixMarket matrix coordinate integer general\n2 2 1\n1 1 9223372036854775808\n")
    _raises(p, r":3: value 9223372036854775808 is out of the range of int64")
    p.write_text("%%MatrixMarket matrix coordinate integer general\n2 2 1\n1 1 2.5\n")
    _raises(p, r":3: value 2.5 is not an integer")


def test_npz_scalar_data_is_refused(tmp_path):
    p = _npz(tmp_path / "s.npz", shape=np.array([], np.int64), data=np.float64(2.0), coords_0=None, coords_1=None)
    _raises(p, "'data' has shape")


# ------------------------------------------------------------ round trips
def test_int64_beyond_2_53_round_trips_through_tns(tmp_path):
    t = fs.COO([[0, 2]], np.array([2**62 + 1, -(2**53) - 1], np.int64), shape=(3,))
    p = tmp_path / "i.tns"
    fs.save(p, t)
    back = fs.load(p, index_base=1, shape=(3,), dtype="int64")
    np.testing.assert_array_equal(back.data, t.data)
    with pytest.raises(FileFormatError, match="out of the range of int8"):
        fs.load(p, index_base=1, shape=(3,), dtype="int8")


@pytest.mark.parametrize("value", [3.5, 0.0])
def test_0d_tensor_round_trips_with_header(tmp_path, value):
    t = fs.COO.from_numpy(np.array(value))
    p = tmp_path / "z.tns"
    fs.save(p, t, index_base=0, header=True)
    back = fs.load(p, header=True)
    assert back.shape == ()
    np.testing.assert_array_equal(back.todense(), t.todense())


def test_mtx_complex_infinities_round_trip(tmp_path):
    a = np.array([[complex(1, np.inf), 0], [complex(-np.inf, 2), complex(np.nan, 1)]])
    p = tmp_path / "c.mtx"
    fs.save(p, fs.COO.from_numpy(a))
    back = fs.load(p).todense()
    np.testing.assert_array_equal(back.real, a.real)
    np.testing.assert_array_equal(back.imag, a.imag)


# ------------------------------------------------------------ other file behaviour
def test_saved_file_gets_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        p = tmp_path / "m.npz"
        fs.save(p, fs.random((5, 5), 0.5, seed=0))
        assert os.stat(p).st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_save_leaves_nothing(tmp_path, sig):
    """A save killed mid-write leaves neither the final name nor a hidden temporary file."""
    # Python leaves SIGINT ignored when it starts with it ignored (a job started in the
    # background by a non-interactive shell): give the child the interactive default
    child = textwrap.dedent(f"""
        import signal, sys, numpy as np, flexsparse as fs
        from flexsparse.formats import io
        signal.signal(signal.SIGINT, signal.default_int_handler)
        real = io._save_tns
        def slow(f, t, base, header):
            f.write(b"1 1 1.0\\n")
            f.flush()
            print("writing", flush=True)
            sys.stdin.readline()          # wait here until killed
            real(f, t, base, header)
        io._save_tns = slow
        fs.save({str(tmp_path / 'k.tns')!r}, fs.COO.from_numpy(np.eye(3)))
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(sig)
    proc.wait(timeout=30)
    proc.stdin.close()
    proc.stdout.close()
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------ .mtx array format (parsed here, not by SciPy)
def test_mtx_array_with_extra_values_is_an_error_not_a_crash(tmp_path):
    # scipy.io.mmread corrupts the heap on this file (an abort a few allocations later); the
    # loader parses the array format itself and counts the values against the size line
    p = tmp_path / "s.mtx"
    p.write_text("%%MatrixMarket matrix array complex skew-symmetric\n% a comment\n1 1\n1 1\n")
    code = textwrap.dedent(f"""
        import flexsparse as fs
        for _ in range(300):
            try:
                fs.load({str(p)!r})
            except ValueError as exc:
                msg = str(exc)
            x = [bytes(k % 50 + 1) for k in range(200)]
        print(msg)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-500:]
    assert run.stdout.strip().startswith(f"{p}:3: a 1 x 1 skew-symmetric array holds 0 values")


@pytest.mark.parametrize("sym, values, want", [
    ("general", ["1", "2", "0", "4", "5", "6"], [[1, 4], [2, 5], [0, 6]]),
    ("symmetric", ["1", "2", "3", "4", "5", "6"], [[1, 2, 3], [2, 4, 5], [3, 5, 6]]),
    ("skew-symmetric", ["1", "2", "3"], [[0, -1, -2], [1, 0, -3], [2, 3, 0]]),
])
def test_mtx_array_values_are_column_major(tmp_path, sym, values, want):
    want = np.array(want, dtype=np.int64)
    p = tmp_path / "a.mtx"
    p.write_text(f"%%MatrixMarket matrix array integer {sym}\n{want.shape[0]} {want.shape[1]}\n"
                 + "\n".join(values) + "\n")
    t = fs.load(p)
    assert t.dtype == np.int64
    np.testing.assert_array_equal(t.todense(), want)


@pytest.mark.parametrize("body, match", [
    ("2 2\n1\n2\nx\n4\n", r":5: cannot parse 'x'"),
    ("2 2\n1\n2\n3\n", r":2: a 2 x 2 general array holds 4 values, but 3 lines follow"),
    ("2 3\n1\n", r":2: a symmetric matrix must be square"),
    ("2\n", r":2: size line must be rows cols"),
])
def test_mtx_array_errors_name_the_line(tmp_path, body, match):
    p = tmp_path / "e.mtx"
    sym = "symmetric" if "square" in match else "general"
    p.write_text(f"%%MatrixMarket matrix array real {sym}\n{body}")
    _raises(p, match)


def test_mtx_skew_symmetric_integer_negation_overflow(tmp_path):
    p = tmp_path / "k.mtx"
    p.write_text("%%MatrixMarket matrix coordinate integer skew-symmetric\n2 2 1\n2 1 -9223372036854775808\n")
    _raises(p, r":3: skew-symmetric value -9223372036854775808 has no negation")


# ------------------------------------------------------------ SciPy .npz members checked first
@pytest.mark.parametrize("fmt", [np.array(1.5 + 2j), np.array(3.0), np.array(True), np.array([b"csr"])])
def test_scipy_npz_with_a_non_string_format_is_a_file_error(tmp_path, fmt):
    p = tmp_path / "sp.npz"
    np.savez(p, format=fmt, shape=np.array([2, 2]), data=np.ones(1), indices=np.array([0]),
             indptr=np.array([0, 1, 1]))
    _raises(p, "member 'format' has")
