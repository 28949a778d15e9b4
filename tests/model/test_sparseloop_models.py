"""Density models, actual data from coordinates, exact joint statistics and overbooking, each
against a brute-force count."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from flexsparse.model.sparseloop import evaluate, load_spec
from flexsparse.model.sparseloop.density import HSS, ActualData, make_density

# ----------------------------------------------------------------------------- HSS


def _hss_samples(levels, length: int, rng, n: int) -> np.ndarray:
    """``n`` random rows of an HSS pattern (outer level first), uniformly random kept positions."""
    (g1, h1), (g0, h0) = levels
    out = np.zeros((n, length), dtype=int)
    for s in range(n):
        row = np.zeros(length, dtype=int)
        for top in range(0, length, h1 * h0):
            for blk in rng.choice(h1, g1, replace=False):
                base = top + blk * h0
                row[base + rng.choice(h0, g0, replace=False)] = 1
        out[s] = row
    return out


@pytest.mark.parametrize("levels", [[(4, 6), (2, 4)], [(4, 5), (1, 4)], [(4, 4), (4, 4)], [(3, 4), (2, 4)]])
@pytest.mark.parametrize("tile", [1, 2, 4, 8, 12, 24, 40])
def test_hss_tile_distribution_matches_sampling(levels, tile):
    group = levels[0][1] * levels[1][1]
    if not (group % tile == 0 or tile % group == 0) or (tile < levels[1][1] and levels[1][1] % tile):
        pytest.skip("tiles are aligned to the HSS groups (sub-groups or whole groups)")
    length = 240 * 4
    d = HSS(levels, rank=0).bind(length, (length,))
    k, p = d.distribution(tile, (tile,))
    assert p.sum() == pytest.approx(1.0)
    assert float(np.dot(k, p)) == pytest.approx(tile * d.density)
    rows = _hss_samples(levels, length, np.random.default_rng(1), 400)
    tiles = rows[:, : (length // tile) * tile].reshape(400, -1, tile).sum(axis=2)
    emp = np.bincount(tiles.ravel(), minlength=int(max(k)) + 1) / tiles.size
    model = np.zeros_like(emp)
    model[np.asarray(k, dtype=int)] = p
    assert np.abs(emp - model).max() < 0.03


def test_hss_whole_groups_are_deterministic():
    d = HSS([(4, 6), (2, 4)], rank=0).bind(240, (240,))
    k, p = d.distribution(24, (24,))
    assert list(k[p > 0]) == [8]


def test_hss_density_spec_errors():
    with pytest.raises(ValueError, match="G:H pairs"):
        HSS([(5, 4)])
    with pytest.raises(ValueError, match="needs 'levels'"):
        make_density({"distribution": "hss"}, "problem.densities.A")


# ----------------------------------------------------------------------------- actual data


def _mask_file(path, mask: np.ndarray) -> str:
    path.write_text("".join(str(int(x)) for x in mask.T.ravel()))   # first rank fastest
    return str(path)


SPARSE = """\
sparse_optimizations:
  targets:
  - name: GLB
    representation-format:
      data-spaces:
      - name: A
        ranks: [{format: UOP}, {format: CP, metadata-word-bits: 4}]
      - name: B
        ranks: [{format: UOP}, {format: CP, metadata-word-bits: 4}]
    action-optimization:
    - {type: skipping, target: A, condition-on: [B]}
    - {type: skipping, target: B, condition-on: [A]}
  - name: RF
    representation-format:
      data-spaces:
      - name: A
        ranks: [{format: CP, metadata-word-bits: 4, flattened-rankIDs: [[M, K]]}]
      - name: B
        ranks: [{format: CP, metadata-word-bits: 4, flattened-rankIDs: [[K, N]]}]
    action-optimization:
    - {type: skipping, target: Z, condition-on: [A, B]}
  - name: MAC
    compute-optimization:
    - type: skipping
"""


def _problem(sl, dens: str) -> str:
    return sl.PROBLEM.replace("instance: {M: 8, N: 8, K: 8}", "instance:\n    M: 8\n    N: 8\n    K: 8\n"
                              "    densities:\n" + dens)


def _masks(seed: int):
    rng = np.random.default_rng(seed)
    a = rng.random((8, 8)) < 0.3
    a[:, 5:] = False                                        # empty columns: correlated structure
    b = rng.random((8, 8)) < 0.4
    b[1] = True                                             # a dense row of B
    return a, b


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exact", [False, True])
def test_coordinates_and_masks_give_the_same_evaluation(tmp_path, sl, seed, exact, monkeypatch):
    a, b = _masks(seed)
    dens = (f"      A: {{distribution: actual-data, data_file_path: {_mask_file(tmp_path / 'a.txt', a)}}}\n"
            f"      B: {{distribution: actual-data, data_file_path: {_mask_file(tmp_path / 'b.txt', b)}}}\n")
    spec = load_spec(sl.write(tmp_path, problem=_problem(sl, dens), sparse=SPARSE))
    ref = evaluate(spec, exact_joint=exact)
    if exact:                      # effectual computes counted on the data
        assert ref.computes == int((a.astype(int) @ b.astype(int)).sum())
    # The same patterns as coordinates, held sparse (no dense mask): marginal contractions only.
    monkeypatch.setattr(ActualData, "DENSE_LIMIT", 0)
    spec2 = load_spec(sl.write(tmp_path, problem=sl.PROBLEM, sparse=SPARSE))
    for i, m in enumerate((a, b)):
        ds = spec2.problem.dataspaces[i]
        spec2.problem.densities[i] = ActualData.from_coords(np.stack(np.nonzero(m))).bind(
            ds.size(spec2.problem.bounds), ds.extents(spec2.problem.bounds))
        assert spec2.problem.densities[i].tensor is None
    ev = evaluate(spec2, exact_joint=exact)
    assert ev.computes == ref.computes
    assert ev.cycles == ref.cycles
    assert ev.energy_pj == pytest.approx(ref.energy_pj, rel=1e-9)
    for l1, l2 in zip(ev.levels, ref.levels):
        for ds in l2.dataspaces:
            assert l1.dataspaces[ds]["reads"] == pytest.approx(l2.dataspaces[ds]["reads"], rel=1e-9)


def test_from_coords_merges_duplicates_and_checks_bounds():
    d = ActualData.from_coords(np.array([[0, 0, 3], [1, 1, 2]]))
    assert d.coords.shape == (2, 2)
    with pytest.raises(ValueError, match="outside the tensor"):
        d.bind(9, (3, 3))
    with pytest.raises(ValueError, match="shape \\(ranks, nnz\\)"):
        ActualData.from_coords(np.array([1, 2, 3]))


def test_block_counts_match_brute_force():
    rng = np.random.default_rng(3)
    m = rng.random((13, 11)) < 0.2
    d = ActualData.from_coords(np.stack(np.nonzero(m))).bind(m.size, m.shape)
    for box in [(1, 1), (4, 3), (13, 11), (5, 1)]:
        blocks, counts, grid = d.block_counts(box)
        ref = {}
        for i, j in zip(*np.nonzero(m)):
            key = (i // box[0], j // box[1])
            ref[key] = ref.get(key, 0) + 1
        got = {tuple(blocks[:, t]): int(counts[t]) for t in range(counts.size)}
        assert got == ref
        assert grid == (-(-13 // box[0]), -(-11 // box[1]))


def test_joint_nonzero_with_block_filters_matches_brute_force():
    from types import SimpleNamespace

    from flexsparse.model.sparseloop.actual import joint_nonzero
    from flexsparse.model.sparseloop.spec import DataSpace, Problem  # noqa: F401  (types only)
    rng = np.random.default_rng(5)
    a = rng.random((8, 6)) < 0.3                                 # A[M, K]
    b = rng.random((6, 5)) < 0.4                                 # B[K, N]
    prob = SimpleNamespace(bounds=[8, 5, 6],                     # dims M, N, K
                           dataspaces=[SimpleNamespace(ranks=[[(1, 0)], [(1, 2)]]),
                                       SimpleNamespace(ranks=[[(1, 2)], [(1, 1)]])],
                           densities=[ActualData.from_coords(np.stack(np.nonzero(a))).bind(48, (8, 6)),
                                      ActualData.from_coords(np.stack(np.nonzero(b))).bind(30, (6, 5))])
    st = SimpleNamespace(problem=prob)
    # Filters: B's element nonzero, A's 4-row block (M) nonempty.
    got = joint_nonzero(st, 0, 1, [(1, [1, 1, 1]), (0, [4, 1, 1])])
    counts = {}
    for m, n, k in itertools.product(range(8), range(5), range(6)):
        if not b[k, n] or not a[(m // 4) * 4:(m // 4) * 4 + 4, k].any():
            continue
        key = (bool(a[m, k]), bool(b[k, n]))
        counts[key] = counts.get(key, 0) + 1
    total = sum(counts.values())
    for key in itertools.product((True, False), repeat=2):
        assert got[key] == pytest.approx(counts.get(key, 0) / total)


# ----------------------------------------------------------------------------- overbooking


def test_overbooking_streams_the_overflow_from_the_parent(tmp_path, sl):
    dens = "      A: {distribution: hypergeometric, density: 0.5}\n"
    small = sl.ARCH.replace("attributes: {depth: 512, width: 64, datawidth: 16, read_bandwidth: 4, write_bandwidth: 4}",
                            "attributes: {depth: 6, width: 64, datawidth: 16, read_bandwidth: 4, write_bandwidth: 4, "
                            "OVERBOOK}")
    sparse = """\
    sparse_optimizations:
      targets:
      - name: GLB
        representation-format:
          data-spaces:
          - name: A
            ranks: [{format: UOP}, {format: CP, metadata-word-bits: 4}]
    """
    mapping = sl.MAPPING.replace("{target: RF, type: temporal, factors: M=2 N=2 K=8, permutation: KNM}",
                                 "{target: RF, type: temporal, factors: M=2 N=2 K=8, permutation: KNM}\n"
                                 "- {target: GLB, type: bypass, keep: [A], bypass: [B, Z]}")
    off = evaluate(load_spec(sl.write(tmp_path, arch=small.replace(", OVERBOOK", ""), problem=_problem(sl, dens),
                                      mapping=mapping, sparse=sparse)))
    on_spec = load_spec(sl.write(tmp_path, arch=small.replace("OVERBOOK", "overbooking: true"),
                                 problem=_problem(sl, dens), mapping=mapping, sparse=sparse))
    on = evaluate(on_spec)
    assert not off.overflow
    f = on.overflow["GLB"]["A"]
    # By hand: the GLB tile of A is the whole 8 x 8 tensor, 32 nonzeros; capacity 6 x 4 = 24 words.
    k, p = on_spec.problem.densities[0].distribution(64, (8, 8))
    share = 24.0
    expected = float(np.dot(np.maximum(0.0, np.asarray(k) - share), p)) / float(np.dot(k, p))
    assert f == pytest.approx(expected)
    assert 0 < f < 1
    glb_on, glb_off = on.levels[1].dataspaces["A"], off.levels[1].dataspaces["A"]
    dram_on, dram_off = on.levels[2].dataspaces["A"], off.levels[2].dataspaces["A"]
    assert glb_on["reads"]["actual"] == pytest.approx(glb_off["reads"]["actual"] * (1 - f), rel=1e-6, abs=1)
    moved = glb_off["reads"]["actual"] * f
    assert dram_on["reads"]["actual"] == pytest.approx(dram_off["reads"]["actual"] + moved, rel=1e-6, abs=1)
