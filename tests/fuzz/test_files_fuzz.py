"""Fuzz: the loader contract on corrupt files, and save/load round trips.

* a corrupted ``.tns``/``.mtx``/``.npz`` (truncated, bytes flipped or inserted, lines
  shuffled, odd tokens: ``1_000``, huge integers, NUL bytes...) either loads or raises a
  ValueError whose message starts with ``path:`` -- ``path:line:`` for the text formats;
* a ``.npz`` whose members break the schema (0-d or 2-D data, strings, float shapes or
  coordinates, out-of-bounds, negative or short coordinates, huge shapes, pickled objects,
  a lying canonical flag, a renamed ``.npy``, an empty file) is refused the same way;
* every tensor saved in every format it fits loads back equal, dtype included when given.
"""

from __future__ import annotations

import os
import re
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import flexsparse as fs
from flexsparse.formats.io import FileFormatError

from ._strategies import fuzz_settings, make_values

FUZZ = fuzz_settings()
TOKENS = [b" x ", b" 1_000 ", b" -1 ", b" 99999999999999999999999 ", b"\n", b" 1.5 ", b" nan ", b"\x00",
          b" 1e400 ", b"...", b"#", b"%", b" 0 ", b" 9007199254740993 ", b"\xff\xfe", b" 0x10 ", b"\t"]


def _tensor(seed, ndim, dtype):
    shape = tuple(int(s) for s in np.random.default_rng(seed).integers(1, 5, ndim))
    return fs.COO.from_numpy(make_values(seed, shape, dtype, 0.5, False))


@st.composite
def _mutations(draw, data: bytes) -> bytes:
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.integers(0, 5))
        n = len(data)
        if op == 0:
            data = data[: draw(st.integers(0, n))]
        elif op == 1 and n:
            i = draw(st.integers(0, n - 1))
            data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
        elif op == 2:
            i = draw(st.integers(0, n))
            data = data[:i] + draw(st.sampled_from(TOKENS)) + data[i:]
        elif op == 3 and n:
            i = draw(st.integers(0, n - 1))
            data = data[:i] + data[i + draw(st.integers(1, 10)):]
        elif op == 4:
            lines = data.split(b"\n")
            data = b"\n".join(draw(st.permutations(lines)))
        else:
            data += draw(st.sampled_from([b"1 2 3\n", b"garbage\n", b"1 1 1 1 1\n", b"-5 2 1.0\n"]))
    return data


def _assert_contract(path, kwargs, text_format):
    try:
        fs.load(path, **kwargs)
    except ValueError as exc:  # FileFormatError, or a bad-argument ValueError naming the file
        msg = str(exc)
        assert msg.startswith(f"{path}:"), msg
        if text_format and isinstance(exc, FileFormatError):
            assert re.match(re.escape(str(path)) + r":\d+: ", msg), msg


@FUZZ
@given(seed=st.integers(0, 2**31), ndim=st.integers(0, 3), fmt=st.sampled_from([".tns", ".mtx", ".npz"]),
       header=st.booleans(), data=st.data(),
       dtype=st.sampled_from([np.float64, np.float32, np.int64, np.int32, np.bool_, np.complex128]))
def test_corrupt_files_raise_file_errors(tmp_path_factory, seed, ndim, fmt, header, data, dtype):
    if fmt == ".mtx":
        ndim = 2
    if fmt == ".tns" and np.dtype(dtype).kind == "c":
        dtype = np.float64
    t = _tensor(seed, ndim, dtype)
    path = tmp_path_factory.mktemp("corrupt") / f"t{fmt}"
    fs.save(path, t, **({"index_base": 0, "header": True} if fmt == ".tns" and header else {}))
    path.write_bytes(data.draw(_mutations(path.read_bytes())))
    kwargs = {}
    if fmt == ".tns":
        kwargs = {"index_base": data.draw(st.sampled_from([0, 1, None])),
                  "header": data.draw(st.sampled_from([True, False, None]))}
    if fmt != ".npz" and data.draw(st.booleans()):
        kwargs["dtype"] = data.draw(st.sampled_from([np.int64, np.int8, np.uint64, np.float32]))
    _assert_contract(path, kwargs, fmt != ".npz")


def _members(t):
    m = {"format_version": np.int64(1), "shape": np.asarray(t.shape, np.int64), "data": t.data,
         "canonical": np.bool_(t.canonical)}
    m.update({f"coords_{k}": t.coords[k].astype(np.int64) for k in range(t.ndim)})
    return m


_BREAKS = {
    "0-d data": lambda m: m.update(data=np.asarray(m["data"][0] if m["data"].size else 1.0)),
    "2-D data": lambda m: m.update(data=np.ones((2, 2))),
    "string data": lambda m: m.update(data=m["data"].astype(str)),
    "object data": lambda m: m.update(data=np.array([None] * max(1, m["data"].size), dtype=object)),
    "float shape": lambda m: m.update(shape=m["shape"] + 0.5),
    "negative shape": lambda m: m.update(shape=-m["shape"] - 1),
    "huge shape": lambda m: m.update(shape=np.full(max(1, m["shape"].size), 2**62, np.int64)),
    "string version": lambda m: m.update(format_version=np.array("1")),
    "missing shape": lambda m: m.pop("shape"),
    "lying canonical": lambda m: m.update(canonical=np.bool_(True),
                                          **{k: v[::-1].copy() for k, v in m.items() if k.startswith("coords_")}),
    "coords out of bounds": lambda m: m.update({k: v + 7 for k, v in m.items() if k.startswith("coords_")}),
    "negative coords": lambda m: m.update({k: -v - 1 for k, v in m.items() if k.startswith("coords_")}),
    "short coords": lambda m: m.update({k: v[:-1] for k, v in m.items() if k.startswith("coords_")}),
    "float coords": lambda m: m.update({k: v + 0.5 for k, v in m.items() if k.startswith("coords_")}),
    "extra member": lambda m: m.update(junk=np.ones(3)),
}


@FUZZ
@given(seed=st.integers(0, 2**31), ndim=st.integers(0, 3), brk=st.sampled_from(sorted(_BREAKS)),
       truncate=st.integers(0, 3))
def test_npz_schema_violations_raise_file_errors(tmp_path_factory, seed, ndim, brk, truncate):
    t = _tensor(seed, ndim, np.float64)
    path = tmp_path_factory.mktemp("npz") / "t.npz"
    members = _members(t)
    _BREAKS[brk](members)
    np.savez(path, **members)
    if truncate:
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) * (truncate - 1) // 3])
    _assert_contract(path, {}, False)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", b"\x93NUMPY\x01\x00", b"\x80\x04\x95pickle"])
def test_npz_that_is_not_an_archive(tmp_path, content):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(FileFormatError, match=rf"^{re.escape(str(path))}: "):
        fs.load(path)


def test_renamed_npy_and_pickle(tmp_path):
    p = tmp_path / "a.npz"
    np.save(tmp_path / "a.npy", np.eye(2))
    os.replace(tmp_path / "a.npy", p)
    with pytest.raises(FileFormatError, match="single .npy array"):
        fs.load(p)
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("data.pkl", b"\x80\x04K\x01.")
    with pytest.raises(FileFormatError, match="unexpected member 'data.pkl'"):
        fs.load(p)


@FUZZ
@given(seed=st.integers(0, 2**31), ndim=st.integers(0, 3), fmt=st.sampled_from([".tns", ".mtx", ".npz"]),
       header=st.booleans(), index_base=st.sampled_from([0, 1]),
       dtype=st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.int32, np.int8, np.uint64,
                              np.bool_, np.complex128]),
       big=st.booleans())
def test_round_trips(tmp_path_factory, seed, ndim, fmt, header, index_base, dtype, big):
    if fmt == ".mtx":
        ndim = 2
    if fmt == ".tns" and np.dtype(dtype).kind == "c":
        dtype = np.float64
    arr = make_values(seed, tuple(int(s) for s in np.random.default_rng(seed).integers(1, 5, ndim)), dtype,
                      0.6, np.dtype(dtype).kind in "fc")
    if big and np.dtype(dtype) in (np.int64, np.uint64):  # integers beyond float64's exact range
        arr = np.where(arr != 0, arr + np.array(2**62 - 1, dtype=dtype), arr).astype(dtype)
    t = fs.COO.from_numpy(arr)
    path = tmp_path_factory.mktemp("rt") / f"t{fmt}"
    opts = {"index_base": index_base, "header": header} if fmt == ".tns" else {}
    fs.save(path, t, **opts)
    if fmt == ".tns":
        back = fs.load(path, index_base=index_base, header=header, shape=None if header else t.shape, dtype=dtype)
    else:
        back = fs.load(path, dtype=dtype)
    assert back.shape == t.shape and back.dtype == t.dtype
    np.testing.assert_array_equal(back.todense(), t.todense())


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        for ext in (".tns", ".mtx", ".npz"):
            p = tmp_path / f"u{umask:o}{ext}"
            fs.save(p, fs.COO.from_numpy(np.eye(2)))
            assert os.stat(p).st_mode & 0o777 == 0o666 & ~umask
    finally:
        os.umask(old)
