"""A damaged flexsparse store is a FileFormatError naming it, on every way of reading it.

``fs.load``, the lazy handle (``fs.load(path, lazy=True)`` / ``einsum(out=...)``: ``tiles()``,
``load()``, ``nnz``) and ``flexsparse info`` all read the store through
:class:`~flexsparse.formats.store.StoredTensor`, which validates the manifest's schema, each
tile member's header and each tile's consistency (lengths, row pointers, bounds) before use.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

import flexsparse as fs
from flexsparse.formats.io import FileFormatError
from flexsparse.formats.store import MANIFEST


def _every_reader_refuses(path, match):
    """fs.load, and the lazy handle's tiles()/load(), raise FileFormatError('path: ...')."""
    readers = [lambda: fs.load(path)]
    try:
        handle = fs.load(path, lazy=True)
    except FileFormatError as exc:
        assert str(exc).startswith(f"{path}:"), exc
        handle = None
    if handle is not None:
        readers += [lambda: list(handle.tiles()), handle.load]
    for read in readers:
        with pytest.raises(FileFormatError, match=match) as exc:
            read()
        assert str(exc.value).startswith(f"{path}:"), exc.value


def _coo_store(tmp_path, name="s"):
    path = tmp_path / name
    fs.save(path, fs.COO.from_numpy(np.arange(12.0).reshape(3, 4)), format=None if name.endswith(".npz")
            else "store")
    return path


def _csr_store(tmp_path, name="c"):
    a = fs.random((40, 40), 0.2, seed=0)
    return fs.einsum("ij,jk->ik", a, a, memory_limit="16kB", out=tmp_path / name).path


def _edit_manifest(path, edit):
    if path.suffix == ".npz":
        with zipfile.ZipFile(path) as z:
            members = {n: z.read(n) for n in z.namelist()}
        m = json.loads(members[MANIFEST])
        edit(m)
        members[MANIFEST] = json.dumps(m).encode()
        with zipfile.ZipFile(path, "w") as z:
            for n, v in members.items():
                z.writestr(n, v)
    else:
        m = json.loads((path / MANIFEST).read_text())
        edit(m)
        (path / MANIFEST).write_text(json.dumps(m))


@pytest.mark.parametrize("field, value, match", [
    ("shape", "x", "'shape'"), ("shape", [-1, 4], "'shape'"), ("shape", [2**70, 1], "'shape'"),
    ("dtype", "object", "'dtype'"), ("dtype", 5, "'dtype'"), ("index_dtype", "<f8", "'index_dtype'"),
    ("encoding", "zip", "'encoding'"), ("stored", -1, "'stored'"), ("canonical", "yes", "'canonical'"),
    ("tiles", 1.5, "'tiles'"), ("tiles", [{"id": 0, "name": "../../x", "nnz": 1, "pieces": 1}], "tile entry"),
    ("version", "2", "'version'"), ("version", 99, "newer"),
])
@pytest.mark.parametrize("name", ["s", "s.npz"])
def test_manifest_fields_are_validated(tmp_path, field, value, match, name):
    path = _coo_store(tmp_path, name)
    _edit_manifest(path, lambda m: m.__setitem__(field, value))
    _every_reader_refuses(path, match)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m["matrix"].__setitem__("shape", [1]), "'matrix'"),
    (lambda m: m["matrix"]["rows"].__setitem__("axes", [5]), "decoder"),
    (lambda m: m["matrix"]["rows"].__setitem__("table", "x"), "decoder"),
    (lambda m: m["matrix"]["cols"].__setitem__("axes", [0]), "exactly once"),
    (lambda m: m["matrix"]["rows"].__setitem__("sizes", [10**6]), "exceeds the extent"),
])
def test_csr_matrix_layout_is_validated(tmp_path, edit, match):
    path = _csr_store(tmp_path)
    _edit_manifest(path, edit)
    _every_reader_refuses(path, match)


def _rewrite_tile(path, mutate):
    """Apply ``mutate(arrays)`` to the first tile (a directory store) and write it back."""
    f = sorted(path.glob("tile-*.npz"))[0]
    with np.load(f) as z:
        arrays = dict(z)
    mutate(arrays)
    np.savez(f, **arrays)


@pytest.mark.parametrize("mutate, match", [
    (lambda a: a.pop("values"), "lacks values"),
    (lambda a: a.__setitem__("coords", a["coords"].astype(float)), "has dtype float64"),
    (lambda a: a.__setitem__("coords", a["coords"][:, :-1]), "do not match"),
    (lambda a: a.__setitem__("values", a["values"].reshape(1, -1)), "expected a 1-D"),
    (lambda a: a.__setitem__("coords", a["coords"] + 10), "out of bounds"),
    (lambda a: a.__setitem__("extra", np.ones(2)), "unexpected member"),
])
def test_coo_tile_contents_are_validated(tmp_path, mutate, match):
    path = _coo_store(tmp_path)
    _rewrite_tile(path, mutate)
    _every_reader_refuses(path, match)


@pytest.mark.parametrize("mutate, match", [
    (lambda a: a.pop("indptr_0"), "lacks its indptr"),
    (lambda a: a.__setitem__("indptr_0", a["indptr_0"][::-1].copy()), "inconsistent row pointers"),
    (lambda a: a.__setitem__("indices_0", a["indices_0"] + 10**6), "column id outside"),
    (lambda a: a.__setitem__("meta", a["meta"] + 10**6), "outside the"),
    (lambda a: a.__setitem__("meta", a["meta"][:, :3].copy()), "meta has shape"),
])
def test_csr_tile_contents_are_validated(tmp_path, mutate, match):
    path = _csr_store(tmp_path)
    _rewrite_tile(path, mutate)
    _every_reader_refuses(path, match)


def test_damaged_tile_container_is_a_file_error(tmp_path):
    path = _csr_store(tmp_path)
    sorted(path.glob("tile-*.npz"))[0].write_bytes(b"junk")
    _every_reader_refuses(path, "BadZipFile")
    zpath = _coo_store(tmp_path, "z.npz")
    raw = bytearray(zpath.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as z:
        info = z.getinfo(next(n for n in z.namelist() if n.endswith("values.npy")))
    raw[info.header_offset + 30 + len(info.filename) + 130] ^= 0xFF  # a data byte: bad CRC
    zpath.write_bytes(bytes(raw))
    _every_reader_refuses(zpath, "CRC")


def test_cli_info_on_a_damaged_store_is_one_error_line(tmp_path, capsys, monkeypatch):
    import sys

    from flexsparse.cli import main

    path = _csr_store(tmp_path)
    sorted(path.glob("tile-*.npz"))[0].write_bytes(b"junk")
    for target in (path, _coo_store(tmp_path, "bad")):
        if target.name == "bad":
            _edit_manifest(target, lambda m: m.__setitem__("shape", "x"))
        monkeypatch.setattr(sys, "argv", ["flexsparse", "info", str(target)])
        with pytest.raises(SystemExit) as exc:
            main()
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {target}:"), err


def test_a_store_is_never_written_into_a_foreign_directory(tmp_path):
    # save/einsum(out=) into an existing non-empty directory that is not a store mixed the
    # manifest and tiles with the user's files (the CLI's "convert a.mtx ''" wrote into the cwd)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    t = fs.COO.from_numpy(np.eye(3))
    with pytest.raises(ValueError, match="not a flexsparse store"):
        fs.save(foreign, t)
    with pytest.raises(ValueError, match="not a flexsparse store"):
        fs.einsum("ij,jk->ik", t, t, memory_limit="1MB", out=foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    with pytest.raises(ValueError, match="empty"):
        fs.save("", t)
    store = tmp_path / "store"
    fs.save(store, t, format="store")
    fs.save(store, 2 * t)  # an existing store is replaced
    np.testing.assert_array_equal(fs.load(store).todense(), 2 * np.eye(3))
    (tmp_path / "empty").mkdir()
    fs.save(tmp_path / "empty", t)
    np.testing.assert_array_equal(fs.load(tmp_path / "empty").todense(), np.eye(3))
