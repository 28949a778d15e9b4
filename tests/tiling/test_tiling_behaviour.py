"""Tailors overbooking, report figures against hand computations, errors, on-disk results."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from flexsparse.tiling import (
    STRATEGIES,
    IncompleteResultError,
    LazyResult,
    MemoryLimitError,
    TilePlan,
    TileStatistics,
    TilingRefusedError,
    TilingReport,
    get_strategy,
    tiled_spgemm,
)
from flexsparse.tiling import outfile as outfile_mod
from flexsparse.tiling.engine import as_operand
from flexsparse.tiling.workingset import (
    ByteModel,
    dense_tile_bytes,
    fixed_bytes,
    minimum_limit,
    tile_bytes,
)


def skewed(m, n, seed=0, power=6):
    """Power-law rows: a few very heavy rows, many light ones."""
    rng = np.random.default_rng(seed)
    lens = np.minimum(n, (n * rng.random(m) ** power).astype(int) + 1)
    rows = np.repeat(np.arange(m), lens)
    cols = np.concatenate([rng.choice(n, size=ln, replace=False) for ln in lens])
    return sp.csr_matrix((rng.random(rows.size) + 0.5, (rows, cols)), shape=(m, n))


def exact(c, ref):
    ref = ref.tocsr()
    ref.sort_indices()
    np.testing.assert_array_equal(c.indptr, ref.indptr)
    np.testing.assert_array_equal(c.indices, ref.indices)
    np.testing.assert_allclose(c.data, ref.data, rtol=1e-12)


# --------------------------------------------------------------------------- Tailors
def test_overbooked_tiles_occur_and_are_absorbed():
    a = skewed(400, 120, 1)
    b = skewed(120, 150, 2)
    c, rep = tiled_spgemm(a, b, memory_limit="24KiB", tiling="overbook", overbook=0.9)
    exact(c, a @ b)
    assert rep.overbooked_tiles > 0
    assert rep.passes >= 2
    assert rep.bumped_bytes > 0
    assert rep.tiles > rep.planned_tiles
    assert rep.peak_ws_bytes <= rep.limit


def test_single_row_too_big_is_split_not_fatal():
    # one dense row whose output alone exceeds the limit: split into column halves
    a = sp.csr_matrix(np.vstack([np.ones((1, 30)), np.eye(30)[:5]]))
    b = sp.csr_matrix(np.ones((30, 200)))
    c, rep = tiled_spgemm(a, b, memory_limit=3000, tiling="prescient")
    exact(c, a @ b)
    assert rep.overbooked_tiles > 0
    assert rep.peak_ws_bytes <= 3000


def test_prescient_and_conservative_never_overbook():
    a = skewed(300, 100, 3)
    b = skewed(100, 90, 4)
    for name in ("prescient", "conservative"):
        c, rep = tiled_spgemm(a, b, memory_limit="64KiB", tiling=name)
        exact(c, a @ b)
        assert rep.overbooked_tiles == 0 and rep.passes == 1 and rep.bumped_bytes == 0
        assert rep.tiles == rep.planned_tiles


def test_overbook_uses_fewer_tiles_and_more_buffer_than_conservative():
    from flexsparse.tiling.cli import load_matrix
    a = load_matrix("powerlaw", n=2000, nnz=8000, seed=5)     # power-law graph, A @ A
    b = a
    _, ob = tiled_spgemm(a, b, memory_limit="1MiB", tiling="overbook")
    _, co = tiled_spgemm(a, b, memory_limit="1MiB", tiling="conservative")
    assert ob.tiles * 3 <= co.tiles
    assert ob.mean_utilisation >= 2 * co.mean_utilisation
    assert ob.sampled_rows < 2000
    # under 128 KiB its dense-sized tiles number ~20K (about 60x overbook's time): refused up front
    with pytest.raises(TilingRefusedError, match=r"declines .* more than 20x"):
        tiled_spgemm(a, b, memory_limit="128KiB", tiling="conservative")


# --------------------------------------------------------------------------- hand-computed
BM = ByteModel(value_bytes=8, index_bytes=4)   # float64 values, int32 column ids
ROW = 2 * 8 + 3 * 12 + 8                       # diagonal row: 2 ptrs, A/B/C entry, 1 B row


def diag(m):
    return sp.csr_matrix(sp.diags(np.arange(1.0, m + 1)))


def test_diagonal_working_set_formula_by_hand():
    # 2-row diagonal tile, 3 columns, 3 ids: acc = 3*(8+8) + 3*8 = 72, + 3 ptrs = 96
    assert fixed_bytes(BM, 3, 3) == 96
    assert tile_bytes(BM, 2, 3, 3, 2, 2, 2, 2) == 96 + 2 * ROW
    assert dense_tile_bytes(BM, 2, 3, 3) == 96 + 2 * 16 + (6 + 9 + 6) * 12 + 3 * 8
    assert minimum_limit(BM) == fixed_bytes(BM, 1, 1) + 2 * 8 + 3 * 12 + 8


def test_diagonal_single_tile_report_by_hand():
    m = 64
    a = diag(m)
    limit = 10**6
    c, rep = tiled_spgemm(a, sp.identity(m, format="csr"), memory_limit=limit, tiling="prescient")
    exact(c, a)
    ws = fixed_bytes(BM, m, m) + m * ROW
    assert (rep.tiles, rep.passes, rep.overbooked_tiles) == (1, 1, 0)
    assert rep.peak_ws_bytes == ws
    assert rep.mean_utilisation == pytest.approx(ws / limit)


def test_diagonal_tailors_passes_by_hand(monkeypatch):
    """A plan of one 64-row tile under a limit that holds 20 rows: 4 passes of 20/20/20/4."""
    m = 64
    fixed = fixed_bytes(BM, m, m)
    limit = fixed + 20 * ROW + 10

    def one_tile(stats, lim, *, overbook, seed):
        return TilePlan("one-tile", stats.shape, lim, m, m, m)

    monkeypatch.setitem(STRATEGIES, "one-tile", one_tile)
    c, rep = tiled_spgemm(diag(m), sp.identity(m, format="csr"), memory_limit=limit,
                          tiling="one-tile")
    exact(c, diag(m))
    full, last = fixed + 20 * ROW, fixed + 4 * ROW
    assert rep.planned_tiles == 1
    assert (rep.tiles, rep.passes, rep.overbooked_tiles) == (4, 4, 3)
    assert rep.peak_ws_bytes == full
    assert rep.bumped_bytes == (20 + 20 + 4) * ROW
    assert rep.mean_utilisation == pytest.approx((3 * full + last) / 4 / limit)


def test_prescient_plan_predicts_the_executed_working_sets():
    a = skewed(200, 80, 6)
    b = skewed(80, 70, 7)
    A, B = as_operand(a, "a"), as_operand(b, "b")
    stats = TileStatistics(A, B, BM)
    plan = get_strategy("prescient")(stats, 20_000, overbook=0.1, seed=0)
    assert plan.predicted_all and len(plan.predicted_ws) == plan.n_tiles
    assert max(plan.predicted_ws) <= 20_000
    _, rep = tiled_spgemm(a, b, memory_limit=20_000, tiling="prescient")
    assert rep.peak_ws_bytes == max(plan.predicted_ws)
    assert rep.mean_utilisation == pytest.approx(np.mean(plan.predicted_ws) / 20_000)


def test_plans_are_frozen_and_report_is_a_table():
    a = skewed(50, 40, 8)
    stats = TileStatistics(as_operand(a, "a"), as_operand(a.T, "b"), BM)
    plan = get_strategy("overbook")(stats, 8000, overbook=0.1, seed=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.row_size = 3
    assert plan.sampling_seconds > 0 and plan.sampled_rows > 0
    _, rep = tiled_spgemm(a, a.T, memory_limit=8000, trace_memory=True)
    assert isinstance(rep, TilingReport)
    text = str(rep)
    for label in ("tiles (planned/executed)", "overbooked tiles", "bumped bytes", "passes",
                  "mean buffer utilisation", "peak working set (estimated)",
                  "RSS high-water growth (measured)", "tracemalloc peak (measured)"):
        assert label in text
    assert rep.traced_peak_bytes is not None and rep.traced_peak_bytes > 0
    assert 0 <= rep.sampling_fraction < 1


# --------------------------------------------------------------------------- errors
def test_too_small_limit_states_minimum():
    a = diag(5)
    with pytest.raises(MemoryLimitError, match=f"minimum workable limit is {minimum_limit(BM)} bytes"):
        tiled_spgemm(a, a, memory_limit=minimum_limit(BM) - 1)
    assert issubclass(MemoryLimitError, MemoryError)
    c, _ = tiled_spgemm(a, a, memory_limit=minimum_limit(BM))  # the minimum itself works
    exact(c, a @ a)


@pytest.mark.parametrize("bad, exc, msg", [
    ("lots", ValueError, "malformed size 'lots'"),
    ("12 parsecs", ValueError, "malformed size"),
    (-5, ValueError, "positive"),
    (3.5, TypeError, "size must be an int or a string"),
])
def test_malformed_limits(bad, exc, msg):
    with pytest.raises(exc, match=msg):
        tiled_spgemm(diag(3), diag(3), memory_limit=bad)


def test_bad_arguments():
    a = diag(4)
    with pytest.raises(ValueError, match="unknown tiling strategy 'fast'; valid names: "
                                         "conservative, overbook, prescient"):
        tiled_spgemm(a, a, memory_limit="1MiB", tiling="fast")
    with pytest.raises(ValueError, match=r"overbook must be a fraction in \[0, 1\), got 1.5"):
        tiled_spgemm(a, a, memory_limit="1MiB", overbook=1.5)
    with pytest.raises(ValueError, match="a is 4x4 .* but b is 3x3"):
        tiled_spgemm(a, diag(3), memory_limit="1MiB")
    with pytest.raises(TypeError, match=r"b must be a 2-D flexsparse format \(CSR, CSC, COO, ...\) or a SciPy "
                                        r"sparse matrix, got ndarray"):
        tiled_spgemm(a, np.eye(4), memory_limit="1MiB")
    with pytest.raises(TypeError, match="tiling must be a strategy name"):
        tiled_spgemm(a, a, memory_limit="1MiB", tiling=3)


def _forbid_planning(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("planning started before the output check")
    for name in list(STRATEGIES):
        monkeypatch.setitem(STRATEGIES, name, boom)


def test_read_only_output_directory_fails_before_work(tmp_path, monkeypatch):
    target = tmp_path / "ro"
    target.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == target else real_access(p, mode))
    _forbid_planning(monkeypatch)
    with pytest.raises(PermissionError, match="is not writable"):
        tiled_spgemm(diag(5), diag(5), memory_limit="1MiB", out=target / "c")
    assert not (target / "c").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores chmod")
def test_read_only_directory_by_chmod(tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    target.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="is not writable"):
            tiled_spgemm(diag(5), diag(5), memory_limit="1MiB", out=target / "c.npz")
    finally:
        target.chmod(0o755)


def test_full_disk_fails_before_work(tmp_path, monkeypatch):
    class Usage:
        free = 10
    monkeypatch.setattr(outfile_mod.shutil, "disk_usage", lambda p: Usage())
    _forbid_planning(monkeypatch)
    with pytest.raises(OSError, match="not enough space") as info:
        tiled_spgemm(diag(50), diag(50), memory_limit="1MiB", out=tmp_path / "c.npz")
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_out_naming_a_plain_file_is_refused(tmp_path):
    f = tmp_path / "plain.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match="neither a directory nor a .npz file"):
        tiled_spgemm(diag(3), diag(3), memory_limit="1MiB", out=f)


# --------------------------------------------------------------------------- on disk
@pytest.mark.parametrize("name", ["c", "c.npz"])
@pytest.mark.parametrize("tiling", ["overbook", "conservative"])
def test_disk_results_load_equal(tmp_path, name, tiling):
    a = skewed(120, 60, 9)
    b = skewed(60, 70, 10)
    lazy, rep = tiled_spgemm(a, b, memory_limit="6KiB", tiling=tiling, out=tmp_path / name)
    assert isinstance(lazy, LazyResult)
    ref = (a @ b).tocsr()
    assert lazy.shape == ref.shape and lazy.nnz == ref.nnz and lazy.dtype == np.float64
    exact(lazy.load(), ref)
    again = LazyResult(tmp_path / name)      # reopened from the path alone
    exact(again.load(), ref)
    assert "LazyResult(" in repr(again)
    assert not list(tmp_path.rglob("*.partial"))


def test_partial_sums_on_disk(tmp_path):
    a = sp.random(8, 12, density=0.6, format="csr", random_state=1)
    b = sp.random(12, 5, density=0.6, format="csr", random_state=2)
    lazy, rep = tiled_spgemm(a, b, memory_limit=260, tiling="conservative", out=tmp_path / "p")
    assert rep.k_size < 12
    exact(lazy.load(), a @ b)
    assert lazy.nnz == (a @ b).nnz


@pytest.mark.parametrize("name", ["c", "c.npz"])
def test_interrupted_write_leaves_nothing_complete(tmp_path, name, monkeypatch):
    a = skewed(200, 80, 11)
    target = tmp_path / name
    if name == "c":   # a complete earlier result must not survive a failed rewrite as "complete"
        tiled_spgemm(a, a.T, memory_limit="1MiB", out=target)
        LazyResult(target)
    calls = {"n": 0}
    real_add = outfile_mod.DiskSink.add

    def failing_add(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated interruption")
        return real_add(self, *args)

    monkeypatch.setattr(outfile_mod.DiskSink, "add", failing_add)
    with pytest.raises(KeyboardInterrupt):
        tiled_spgemm(a, a.T, memory_limit="4KiB", out=target)
    assert calls["n"] == 3
    if name == "c.npz":
        assert not target.exists()
        assert list(tmp_path.iterdir()) == []
    else:
        assert not (target / "manifest.json").exists()
        assert not list(target.glob("tile-*.npz"))
    with pytest.raises(IncompleteResultError, match="not a complete tiled result"):
        LazyResult(target)
