"""Sparse features: formats, gating vs skipping, compute classification, actual-data exactness."""

from __future__ import annotations

import numpy as np
import pytest

from flexsparse.model.sparseloop import evaluate, load_spec
from flexsparse.model.sparseloop.formats import RankFormat


def _with(sl, densities: str) -> str:
    return sl.PROBLEM.replace("instance: {M: 8, N: 8, K: 8}", "instance:\n    M: 8\n    N: 8\n    K: 8\n"
                           "    densities:\n" + densities)


SKIP_COMPRESSED = """\
sparse_optimizations:
  targets:
  - name: RF
    representation-format:
      data-spaces:
      - name: A
        ranks:
        - {format: CP, metadata-word-bits: 4, flattened-rankIDs: [[M, K]]}
  - name: MAC
    compute-optimization:
    - type: skipping
"""
GATE_DENSE = """\
sparse_optimizations:
  targets:
  - name: MAC
    compute-optimization:
    - type: gating
"""


def test_gating_saves_energy_skipping_saves_time(tmp_path, sl):
    dens = "      A: {distribution: fixed-structured, density: 0.5}\n"
    dense = evaluate(load_spec(sl.write(tmp_path, problem=_with(sl, dens))))
    gated = evaluate(load_spec(sl.write(tmp_path, problem=_with(sl, dens), sparse=GATE_DENSE)))
    skipped = evaluate(load_spec(sl.write(tmp_path, problem=_with(sl, dens), sparse=SKIP_COMPRESSED)))
    assert dense.computes == 512
    assert gated.gated_computes == 256 and gated.computes == 256
    assert gated.cycles == dense.cycles                          # gated computes still take a cycle
    assert gated.compute_energy_pj == pytest.approx(256 * 2 + 256 * 0.2)
    assert skipped.skipped_computes == 256 and skipped.computes == 256
    assert skipped.compute_cycles == dense.compute_cycles // 2   # skipped computes take no cycle
    assert skipped.energy_pj < dense.energy_pj


def test_storage_skipping_reduces_reads_and_computes(tmp_path, sl):
    sparse = """\
    sparse_optimizations:
      targets:
      - name: RF
        action-optimization:
        - {type: skipping, target: B, condition-on: [A]}
    """
    dens = "      A: {distribution: fixed-structured, density: 0.25}\n"
    base = evaluate(load_spec(sl.write(tmp_path, problem=_with(sl, dens))))
    ev = evaluate(load_spec(sl.write(tmp_path, problem=_with(sl, dens), sparse=sparse)))
    rf_b = ev.levels[0].dataspaces["B"]["reads"]
    assert rf_b["algorithmic"] == base.levels[0].dataspaces["B"]["reads"]["actual"]
    assert rf_b["skipped"] == pytest.approx(0.75 * rf_b["algorithmic"], abs=1)
    assert rf_b["actual"] + rf_b["skipped"] == rf_b["algorithmic"]
    assert ev.computes == 128


@pytest.mark.parametrize("fmt, md_bits", [("UOP", 0), ("B", 1), ("CP", 3), ("RLE", 3)])
def test_format_units_follow_their_definition(fmt, md_bits):
    rank = RankFormat(fmt, md_bits, 4, [])
    fibers, shape = np.array([4.0]), 8
    p_fiber_empty, p_elem_empty = np.array([0.25]), np.array([0.5])
    md, pl = rank.units(fibers, shape, p_fiber_empty, p_elem_empty)
    nonempty = 4 * 0.75
    expected = {"UOP": (0, nonempty * 9), "B": (nonempty * 8, nonempty * 4), "CP": (nonempty * 4, nonempty * 4),
                "RLE": (nonempty * 4, nonempty * 4)}[fmt]
    assert (md[0], pl[0]) == pytest.approx(expected)


def _mask_file(path, mask: np.ndarray) -> str:
    # Actual-data masks list the first rank fastest.
    path.write_text("".join(str(int(x)) for x in mask.T.ravel()))
    return str(path)


@pytest.mark.parametrize("density", [0.0, 0.15, 0.6, 1.0])
def test_actual_data_effectual_computes_are_exact(tmp_path, sl, density):
    rng = np.random.default_rng(int(density * 100))
    a = rng.random((8, 8)) < density                        # A[M, K]
    a[:, :2] &= rng.random((8, 2)) < 0.2                    # correlated structure (sparser columns)
    b = rng.random((8, 8)) < max(density, 0.3)              # B[K, N]
    dens = (f"      A: {{distribution: actual-data, data_file_path: {_mask_file(tmp_path / 'a.txt', a)}}}\n"
            f"      B: {{distribution: actual-data, data_file_path: {_mask_file(tmp_path / 'b.txt', b)}}}\n")
    sparse = """\
    sparse_optimizations:
      targets:
      - name: RF
        representation-format:
          data-spaces:
          - name: A
            ranks:
            - {format: CP, metadata-word-bits: 4, flattened-rankIDs: [[M, K]]}
          - name: B
            ranks:
            - {format: CP, metadata-word-bits: 4, flattened-rankIDs: [[K, N]]}
      - name: MAC
        compute-optimization:
        - type: skipping
    """
    ev = evaluate(load_spec(sl.write(tmp_path, problem=_with(sl, dens), sparse=sparse)))
    effectual = int((a.astype(int) @ b.astype(int)).sum())
    assert ev.computes == effectual
    assert ev.computes + ev.skipped_computes <= ev.algorithmic_computes
