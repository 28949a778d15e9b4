"""File formats: .tns (both layouts), .mtx, .npz round trips, atomicity and error messages."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings

from flexsparse.formats import io as fio
from flexsparse.formats.coo import COO
from flexsparse.formats.io import FORMATS, load, save

from .test_coo import DTYPES, dense_arrays, make_dense


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------------- round trips
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=dense_arrays())
def test_npz_roundtrip_any_tensor(tmp_path, a):
    p = tmp_path / "t.npz"
    save(p, COO.from_numpy(a))
    t = load(p)
    assert t.shape == a.shape and t.dtype == a.dtype and t.canonical
    np.testing.assert_array_equal(t.todense(), a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("density", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 4), (2, 1, 3, 2, 2)])
def test_tns_roundtrip_both_layouts(tmp_path, dtype, density, shape):
    a = make_dense(np.random.default_rng(2), shape, density, dtype)
    t = COO.from_numpy(a)
    published = tmp_path / "pub.tns"
    save(published, t)  # FROSTT: 1-based, no header
    back = load(published, index_base=1, shape=shape, dtype=dtype)
    np.testing.assert_array_equal(back.todense(), a)
    variant = tmp_path / "var.tns"
    save(variant, t, index_base=0, header=True)
    lines = variant.read_text().splitlines()
    assert lines[0].split() == [str(s) for s in shape]
    back = load(variant, index_base=0, header=True, dtype=dtype)
    assert back.shape == shape
    np.testing.assert_array_equal(back.todense(), a)
    if t.nnz >= 2:
        # auto-detection: the header has one field fewer than data lines, and 0-based
        # indices are proven by a zero index whenever one is present
        if (t.coords == 0).any():
            np.testing.assert_array_equal(load(variant, dtype=dtype).todense(), a)


def test_published_frostt_layout_exact_text(tmp_path):
    t = COO([[0, 2], [1, 0], [3, 3]], [1.5, -2.0], shape=(3, 2, 4))
    p = tmp_path / "x.tns"
    save(p, t)
    assert p.read_text() == "1 2 4 1.5\n3 1 4 -2.0\n"
    back = load(p, index_base=1)
    assert back.shape == (3, 2, 4)  # inferred max+1 after the shift
    np.testing.assert_array_equal(back.todense(), t.todense())


def test_float_values_roundtrip_exactly(tmp_path):
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        a = (rng.standard_normal((10, 10)) * 10.0 ** rng.integers(-30, 30, (10, 10))).astype(dtype)
        p = tmp_path / "v.tns"
        save(p, COO.from_numpy(a), index_base=0, header=True)
        np.testing.assert_array_equal(load(p, index_base=0, dtype=dtype).todense(), a)


@pytest.mark.parametrize("dtype", DTYPES + [np.int32])
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_mtx_roundtrip_and_scipy_agrees(tmp_path, dtype, density):
    a = make_dense(np.random.default_rng(9), (6, 4), density, dtype)
    p = tmp_path / "m.mtx"
    save(p, COO.from_numpy(a))
    ref = scipy.io.mmread(str(p))
    np.testing.assert_allclose(ref.toarray(), a, rtol=1e-6 if dtype == np.float32 else 0)
    t = load(p, dtype=dtype)
    np.testing.assert_array_equal(t.todense(), a)
    natural = {"c": np.complex128, "i": np.int64}.get(a.dtype.kind, np.float64)
    assert load(p).dtype == natural  # the field in the banner decides the dtype
    np.testing.assert_array_equal(load(p).todense(), ref.toarray())


@pytest.mark.parametrize("symmetry", ["general", "symmetric", "skew-symmetric", "hermitian"])
@pytest.mark.parametrize("field", ["real", "integer", "complex", "pattern"])
def test_mtx_reads_what_scipy_writes(tmp_path, symmetry, field):
    rng = np.random.default_rng(1)
    a = make_dense(rng, (5, 5), 0.5, np.complex128 if field == "complex" else np.float64)
    if field == "integer":
        a = np.round(a.real * 10)
    if field == "pattern":
        a = (a != 0).astype(np.float64)
    if symmetry == "symmetric":
        a = np.triu(a) + np.triu(a, 1).T
    elif symmetry == "skew-symmetric":
        a = np.triu(a, 1) - np.triu(a, 1).T
    elif symmetry == "hermitian":
        if field != "complex":
            pytest.skip("hermitian needs a complex field")
        a = np.triu(a, 1) + np.triu(a, 1).conj().T + np.diag(np.diag(a).real)
    if field == "pattern" and symmetry == "skew-symmetric":
        pytest.skip("pattern matrices cannot be skew-symmetric")
    p = str(tmp_path / "s.mtx")
    scipy.io.mmwrite(p, sp.coo_array(a), field=field, symmetry=symmetry)
    t = load(p)
    np.testing.assert_allclose(t.todense(), scipy.io.mmread(p).toarray())


def test_mtx_array_format(tmp_path):
    a = np.arange(6.0).reshape(2, 3)
    p = str(tmp_path / "d.mtx")
    scipy.io.mmwrite(p, a)
    np.testing.assert_array_equal(load(p).todense(), a)


# ---------------------------------------------------------------------- atomicity
def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    t = COO.from_numpy(np.eye(3))

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    for ext, fn in [(".tns", "_save_tns"), (".mtx", "_save_mtx"), (".npz", "_save_npz")]:
        monkeypatch.setattr(fio, fn, boom)
        p = tmp_path / f"out{ext}"
        with pytest.raises(RuntimeError, match="disk on fire"):
            save(p, t)
        assert not p.exists()
        assert os.listdir(tmp_path) == []  # no temporary left behind either


def test_failed_save_keeps_previous_file(tmp_path):
    p = tmp_path / "keep.tns"
    save(p, COO.from_numpy(np.eye(2)))
    before = p.read_bytes()
    with pytest.raises(ValueError, match=".tns cannot store complex values"):
        save(p, COO.from_numpy(np.eye(2) * 1j))
    assert p.read_bytes() == before


# ---------------------------------------------------------------------- detection rules
def test_index_base_rules(tmp_path):
    one_based = write(tmp_path, "a.tns", "1 2 1.0\n2 1 2.0\n")
    with pytest.raises(ValueError, match="cannot tell whether indices are 0- or 1-based.*index_base=1"):
        load(one_based)
    np.testing.assert_array_equal(load(one_based, index_base=1).todense(), [[0, 1], [2, 0]])
    zero_based = write(tmp_path, "b.tns", "0 1 1.0\n1 0 2.0\n")
    np.testing.assert_array_equal(load(zero_based).todense(), [[0, 1], [2, 0]])
    with pytest.raises(ValueError, match=r"b.tns:1: index 0 in mode 0 is below index_base=1"):
        load(zero_based, index_base=1)
    header_proves_one = write(tmp_path, "c.tns", "2 2\n1 2 1.0\n2 1 2.0\n")
    np.testing.assert_array_equal(load(header_proves_one).todense(), [[0, 1], [2, 0]])
    contradictory = write(tmp_path, "d.tns", "2 2\n0 2 1.0\n")
    with pytest.raises(ValueError, match="neither 0- nor 1-based fits"):
        load(contradictory)
    with pytest.raises(ValueError, match="index_base must be 0 or 1, got 2"):
        load(zero_based, index_base=2)


def test_header_rules(tmp_path):
    single = write(tmp_path, "s.tns", "3 4\n")
    with pytest.raises(ValueError, match="a single line is ambiguous"):
        load(single)
    t = load(single, header=True)
    assert t.shape == (3, 4) and t.nnz == 0
    shaped = write(tmp_path, "h.tns", "# produced by a test\n4 5\n\n0 1 2.5\n3 4 1.0\n")
    t = load(shaped)
    assert t.shape == (4, 5)
    np.testing.assert_array_equal(t.todense()[[0, 3], [1, 4]], [2.5, 1.0])
    wider = load(shaped, shape=(6, 5))  # an explicit shape wins over the header
    assert wider.shape == (6, 5)
    with pytest.raises(ValueError, match=r"h.tns:4: expected 2 fields"):
        load(shaped, header=False)


def test_empty_file(tmp_path):
    p = write(tmp_path, "e.tns", "")
    with pytest.raises(ValueError, match="no nonzeros and no shape; pass shape="):
        load(p)
    assert load(p, shape=(2, 3)).shape == (2, 3)


# ---------------------------------------------------------------------- error messages
@pytest.mark.parametrize("text, kwargs, msg", [
    ("0 1 1.0\n1 x 2.0\n", {}, r"bad.tns:2: cannot parse 'x' as a number"),
    ("0 1 1.0\n1 2.0\n", {}, r"bad.tns:2: expected 3 fields \(2 indices and a value\), found 2"),
    ("0 1 1.0\n1 1.5 2.0\n", {}, r"bad.tns:2: index 1.5 in mode 1 is not an integer"),
    ("2 2\n0 1 1.0\n2 1 2.0\n", {"index_base": 0}, r"bad.tns:3: index 2 in mode 0 is out of bounds for extent 2"),
    ("0 1 1.0\n-1 1 2.0\n", {"index_base": 0}, r"bad.tns:2: index -1 in mode 0 is below index_base=0"),
    ("2 x\n0 1 1.0\n0 0 2.0\n", {}, r"bad.tns:1: shape header fields must be integers"),
])
def test_tns_errors(tmp_path, text, kwargs, msg):
    p = write(tmp_path, "bad.tns", text)
    with pytest.raises(ValueError, match=msg):
        load(p, **kwargs)


@pytest.mark.parametrize("text, msg", [
    ("%%MatrixMarket matrix coordinate real general\n2 2 2\n1 1 1.0\n2 q 2.0\n", r"bad.mtx:4: cannot parse 'q'"),
    ("%%MatrixMarket matrix coordinate real general\n% c\n2 2 2\n1 1 1.0\n3 1 2.0\n",
     r"bad.mtx:5: index 3 in mode 0 is out of bounds for extent 2"),
    ("%%MatrixMarket matrix coordinate real general\n2 2 3\n1 1 1.0\n", "declares 3 entries but 1 lines follow"),
    ("%%MatrixMarket matrix coordinate real general\n2 2 1\n1 1\n", r"bad.mtx:3: expected 3 fields"),
    ("%%MatrixMarket tensor coordinate real general\n", "bad.mtx:1: not a Matrix Market banner"),
    ("%%MatrixMarket matrix coordinate quaternion general\n", "unknown field 'quaternion'"),
])
def test_mtx_errors(tmp_path, text, msg):
    p = write(tmp_path, "bad.mtx", text)
    with pytest.raises(ValueError, match=msg):
        load(p)


def test_dispatch_and_format_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported file format '.csv'.*supported: .tns, .mtx, .npz"):
        load(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="Matrix Market stores 2-D matrices only, got shape"):
        save(tmp_path / "x.mtx", COO.from_numpy(np.ones((2, 2, 2))))
    p = tmp_path / "x.dat"
    save(p, COO.from_numpy(np.eye(2)), format="npz")
    np.testing.assert_array_equal(load(p, format="npz").todense(), np.eye(2))
    np.savez(tmp_path / "foreign.npz", a=np.ones(2))
    with pytest.raises(ValueError, match="not a flexsparse .npz \\(missing 'format_version'"):
        load(tmp_path / "foreign.npz")
    with pytest.raises(ValueError, match="Matrix Market indices are 1-based"):
        save(tmp_path / "y.mtx", COO.from_numpy(np.eye(2)))
        load(tmp_path / "y.mtx", index_base=0)
    assert FORMATS == (".tns", ".mtx", ".npz")


def test_npz_version_and_bounds(tmp_path):
    p = tmp_path / "v.npz"
    np.savez(p, format_version=np.int64(99), shape=np.array([2]), data=np.ones(1), coords_0=np.array([0]))
    with pytest.raises(ValueError, match="unsupported flexsparse .npz format_version 99"):
        load(p)
    np.savez(p, format_version=np.int64(1), shape=np.array([2]), data=np.ones(1), coords_0=np.array([5]))
    with pytest.raises(ValueError, match="coordinate 5 out of bounds for mode 0 with extent 2"):
        load(p)
