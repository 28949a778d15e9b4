"""The one on-disk format (flexsparse.formats.store): written by save / einsum(out=) / tiled_spgemm(out=),
read by fs.load in the same or another process, tile by tile or whole."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

import flexsparse as fs
from flexsparse.formats.coo import COO
from flexsparse.formats.store import (
    MANIFEST,
    IncompleteResultError,
    KeyDecoder,
    MatrixLayout,
    StoredTensor,
    TileWriter,
)


def _skewed(shape, density, seed):
    return fs.random(shape, density, seed=seed, distribution="powerlaw")


def _same(a: COO, b: COO) -> None:
    a, b = a.sum_duplicates(), b.sum_duplicates()
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_allclose(a.data, b.data, rtol=1e-12)


@pytest.mark.parametrize("name", ["r", "r.npz"])
@pytest.mark.parametrize("spec, shapes", [
    ("ij,jk->ik", [(300, 200), (200, 250)]),
    ("bij,bjk->bik", [(3, 60, 50), (3, 50, 40)]),        # batch mode: dropped from the column key
    ("ijk,kjl->lji", [(40, 30, 50), (50, 30, 45)]),      # output order differs from the key order
    ("ai,ib->ab", [(10**7, 300), (300, 10**6)]),          # huge extents: key tables ("unique" ids)
])
def test_tiled_einsum_result_loads_in_a_fresh_process(tmp_path, name, spec, shapes):
    ops = []
    for k, shape in enumerate(shapes):
        if max(shape) > 10**5:
            rng = np.random.default_rng(k)
            n = 1000
            coords = np.vstack([rng.integers(0, s, n) for s in shape])
            ops.append(COO(coords, rng.random(n) + 0.5, shape).sum_duplicates())
        else:
            ops.append(_skewed(shape, 0.03, k))
    ref = fs.einsum(spec, *ops, format="coo")
    target = tmp_path / name
    limit = "1MB" if max(max(s) for s in shapes) > 10**5 else "64kB"  # few tiles: fsync per file
    handle = fs.einsum(spec, *ops, memory_limit=limit, out=target)
    assert isinstance(handle, StoredTensor)
    assert handle.shape == ref.shape and handle.nnz == ref.nnz
    _same(handle.load(), ref)
    tiles = list(handle.tiles())
    assert len(tiles) == handle.n_tiles >= 1
    cat = COO(np.concatenate([c for c, _ in tiles], axis=1), np.concatenate([v for _, v in tiles]), ref.shape)
    _same(cat, ref)
    # a fresh interpreter knows nothing but the path
    code = textwrap.dedent(f"""
        import numpy as np, flexsparse as fs
        t = fs.load({str(target)!r})
        np.save({str(tmp_path / 'coords.npy')!r}, t.coords)
        np.save({str(tmp_path / 'data.npy')!r}, t.data)
        print(t.shape)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(ref.shape)
    np.testing.assert_array_equal(np.load(tmp_path / "coords.npy"), ref.coords)
    np.testing.assert_allclose(np.load(tmp_path / "data.npy"), ref.data, rtol=1e-12)


def test_in_memory_result_with_out_is_the_same_format(tmp_path):
    a = np.arange(12.0).reshape(3, 4)   # dense: no tiled step, the result is saved whole
    h = fs.einsum("ij,kj->ik", a, a, memory_limit="1MB", out=tmp_path / "d")
    assert isinstance(h, StoredTensor) and h.encoding == "coo"
    np.testing.assert_allclose(fs.load(tmp_path / "d").todense(), a @ a.T)


@pytest.mark.parametrize("name", ["s", "s.npz"])
def test_save_writes_the_store_and_every_reader_agrees(tmp_path, name):
    t = _skewed((30, 20, 10), 0.05, 1)
    target = tmp_path / name
    fs.save(target, t, format="store" if name == "s" else None)
    assert StoredTensor(target).manifest["encoding"] == "coo"
    _same(fs.load(target), t)
    lazy = fs.load(target, lazy=True)
    assert isinstance(lazy, StoredTensor) and lazy.nnz == t.nnz and lazy.dtype == t.dtype
    if name == "s.npz":   # a zip of .npy members plus the manifest
        with zipfile.ZipFile(target) as zf:
            assert MANIFEST in zf.namelist()


def test_old_npz_layouts_still_load(tmp_path):
    t = COO([[0, 2], [1, 0]], [1.5, -2.0], shape=(3, 2))
    old = tmp_path / "old.npz"   # the first flexsparse layout (format_version 1)
    np.savez(old, format_version=np.int64(1), shape=np.array([3, 2]), data=t.data,
             coords_0=t.coords[0], coords_1=t.coords[1], canonical=np.bool_(True))
    _same(fs.load(old), t)
    scipy_file = tmp_path / "scipy.npz"
    sp.save_npz(scipy_file, sp.csr_array(t.todense()))
    _same(fs.load(scipy_file), t)


@pytest.mark.parametrize("name", ["w", "w.npz"])
def test_rewriting_a_tile_replaces_it(tmp_path, name):
    target = tmp_path / name
    with TileWriter(target, (4, 4), np.float64, "coo") as w:
        w.write_tile(0, {"coords": np.array([[0], [0]]), "values": np.array([1.0])})
        w.write_tile(1, {"coords": np.array([[1], [1]]), "values": np.array([2.0])})
        w.write_tile(0, {"coords": np.array([[0], [0]]), "values": np.array([5.0])})  # retried
        w.commit()
    s = StoredTensor(target)
    assert s.n_tiles == 2 and s.nnz == 2
    np.testing.assert_array_equal(fs.load(target).todense().diagonal(), [5.0, 2.0, 0.0, 0.0])
    if name == "w":
        assert sorted(p.name for p in target.iterdir()) == [MANIFEST, "tile-000000.npz", "tile-000001.npz"]


def test_interrupted_store_is_refused_and_manifest_is_last(tmp_path):
    target = tmp_path / "x"
    with pytest.raises(RuntimeError, match="stop"):
        with TileWriter(target, (2, 2), np.float64, "coo") as w:
            w.write_tile(0, {"coords": np.array([[0], [1]]), "values": np.array([1.0])})
            raise RuntimeError("stop")
    assert not (target / MANIFEST).exists() and not list(target.glob("tile-*"))
    with pytest.raises(IncompleteResultError, match="not a complete"):
        fs.load(target)


def test_csr_store_with_key_tables_by_hand(tmp_path):
    # a 2 x 3 matrix whose row ids are ranks of the keys (7, 1) and (9, 0) of a (10, 2) space and
    # whose column id c is tensor axis 1 directly: the manifest alone says how to decode it
    rows = KeyDecoder((0, 2), (10, 2), np.array([[7, 9], [1, 0]]))
    cols = KeyDecoder((1,), (3,))
    lay = MatrixLayout((2, 3), rows, cols)
    with TileWriter(tmp_path / "m.npz", (10, 3, 2), np.float32, "csr", layout=lay) as w:
        w.write_tile(0, {"meta": np.array([[0, 2, 0, 3, 0]]), "indptr_0": np.array([0, 1, 3]),
                         "indices_0": np.array([2, 0, 1]), "values_0": np.array([1.0, 2.0, 3.0], np.float32)})
        w.commit()
    got = fs.load(tmp_path / "m.npz")
    dense = np.zeros((10, 3, 2), np.float32)
    dense[7, 2, 1], dense[9, 0, 0], dense[9, 1, 0] = 1.0, 2.0, 3.0
    np.testing.assert_array_equal(got.todense(), dense)
    manifest = json.loads(zipfile.ZipFile(tmp_path / "m.npz").read(MANIFEST))
    assert manifest["matrix"]["rows"] == {"axes": [0, 2], "sizes": [10, 2], "table": "rows"}


def test_tiled_spgemm_out_is_a_store_fs_load_reads(tmp_path):
    a = sp.random(80, 60, density=0.1, format="csr", random_state=0)
    from flexsparse.tiling import tiled_spgemm

    lazy, _ = tiled_spgemm(a, a.T, memory_limit="8KiB", out=tmp_path / "p")
    np.testing.assert_allclose(fs.load(tmp_path / "p").todense(), (a @ a.T).toarray())
    assert type(lazy.load()).__name__ == "csr_matrix"  # LazyResult keeps the caller's family
