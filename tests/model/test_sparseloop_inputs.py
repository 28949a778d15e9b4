"""Sparseloop input parsing: merged files, architecture trees, ERT, densities, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from flexsparse.model.sparseloop import SpecError, evaluate, load_spec
from flexsparse.model.sparseloop.density import ActualData, FixedStructured, Hypergeometric
from flexsparse.model.sparseloop.spec import parse_arch


def test_merged_files_evaluate_and_ert_rules(tmp_path, sl):
    spec = load_spec(sl.write(tmp_path))
    assert [lv.name for lv in spec.arch.storage] == ["RF", "GLB", "DRAM"]
    rf, glb, dram = spec.arch.storage
    assert (rf.instances, rf.mesh_x, rf.mesh_y, spec.arch.compute.instances) == (4, 4, 1, 4)
    assert glb.block_size == 4 and glb.size == 512 * 4 and dram.block_size == 4
    assert glb.energy["random_read"] == 10            # largest over argument variants
    assert rf.energy["gated_read"] == 0.1             # gated_read -> idle (Timeloop's priority list)
    assert glb.energy["gated_read"] == 10             # ... -> read when there is no idle
    ev = evaluate(spec)
    assert ev.algorithmic_computes == 512 and ev.computes == 512
    assert ev.compute_energy_pj == pytest.approx(512 * 2)
    assert ev.cycles >= 512 / 4


def test_later_file_overrides_a_top_level_key(tmp_path, sl):
    paths = sl.write(tmp_path)
    other = tmp_path / "problem2.yaml"
    other.write_text(sl.PROBLEM.replace("M: 8, N: 8, K: 8", "M: 8, N: 8, K: 16"))
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(sl.MAPPING.replace("K=8", "K=16"))
    spec = load_spec(paths + [other])
    assert spec.problem.bounds == [8, 8, 16]


@pytest.mark.parametrize("part, old, new, fragment", [
    ("problem", "", "bogus: 1\n", "unknown top-level key 'bogus'"),
    ("mapping", "permutation: KNM}", "permutation: KNM, colour: red}", "unknown key 'colour'"),
    ("mapping", "M=2 N=2 K=8", "M=2 N=2 K=4", "factors of dimension K multiply to 4"),
    ("mapping", "target: RF", "target: L9", "unknown storage level 'L9'"),
    ("problem", "{M: 8, N: 8, K: 8}", "{M: 8, N: 8, K: 8, Q: 3}", "unknown key 'Q'"),
    ("arch", "class: regfile", "class: teapot", "neither storage"),
    ("problem", "[[[K]], [[N]]]", "[[[K]], [[X]]]", "unknown dimension 'X'"),
])
def test_errors_name_the_key_and_the_file(tmp_path, sl, part, old, new, fragment):
    base = getattr(sl, part.upper())
    text = base + new if not old else base.replace(old, new, 1)
    paths = sl.write(tmp_path, **{part: text})
    with pytest.raises(SpecError) as exc:
        load_spec(paths)
    msg = str(exc.value)
    assert fragment in msg
    if "multiply" not in fragment:
        assert f"{part}.yaml:" in msg, msg      # file and line


def test_sparse_optimization_errors(tmp_path, sl):
    bad = """\
    sparse_optimizations:
      targets:
      - name: GLB
        representation-format:
          data-spaces:
          - name: A
            ranks:
            - {format: ZIP}
    """
    with pytest.raises(SpecError, match=r"sparse\.yaml:\d+: unknown rank format 'ZIP'"):
        load_spec(sl.write(tmp_path, sparse=bad))
    bad = """\
    sparse_optimizations:
      targets:
      - name: GLB
        action-optimization:
        - {type: teleporting, target: A, condition-on: [B]}
    """
    with pytest.raises(SpecError, match="unknown action optimization 'teleporting'"):
        load_spec(sl.write(tmp_path, sparse=bad))


def test_missing_input_and_invalid_yaml(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec([tmp_path / "nope.yaml"])
    p = tmp_path / "broken.yaml"
    p.write_text("architecture: [1, 2\n")
    with pytest.raises(SpecError, match=r"broken\.yaml:\d+: invalid YAML"):
        load_spec([p])


def test_v04_node_list_matches_v03_tree():
    v04 = {"version": 0.4, "nodes": [
        {"!": "Component", "name": "DRAM", "class": "DRAM", "attributes": {"width": 64, "datawidth": 16}},
        {"!": "Component", "name": "GLB", "class": "SRAM", "attributes": {"depth": 512, "width": 64, "datawidth": 16}},
        {"!": "Container", "name": "PE", "spatial": {"meshX": 4}},
        {"!": "Component", "name": "RF", "class": "regfile", "attributes": {"depth": 64, "width": 16, "datawidth": 16}},
        {"!": "Component", "name": "MAC", "class": "intmac", "attributes": {"datawidth": 16}}]}
    a = parse_arch(v04)
    assert [(s.name, s.instances, s.mesh_x) for s in a.storage] == [("RF", 4, 4), ("GLB", 1, 1), ("DRAM", 1, 1)]
    assert a.compute.instances == 4


@pytest.mark.parametrize("n", [1, 7, 64, 300])
@pytest.mark.parametrize("d", [0.0, 0.13, 0.5, 1.0])
def test_density_models(n, d):
    fixed = FixedStructured(d).bind(1000, (1000,))
    k, p = fixed.distribution(n)
    assert p.sum() == pytest.approx(1.0) and np.dot(k, p) == pytest.approx(n * d)
    hyp = Hypergeometric(d).bind(1000, (1000,))
    k, p = hyp.distribution(n)
    assert p.sum() == pytest.approx(1.0)
    r = int(np.ceil(d * 1000 - 1e-9))
    assert np.dot(k, p) == pytest.approx(n * r / 1000)
    assert hyp.prob_empty(n) == pytest.approx(stats.hypergeom.pmf(0, 1000, r, n), rel=1e-9, abs=1e-15)


def test_actual_data_tiles_count_the_mask(tmp_path):
    rng = np.random.default_rng(0)
    mask = (rng.random((6, 4)) < 0.4).astype(int)          # tensor [r0=6, r1=4], r0 fastest in the file
    (tmp_path / "m.txt").write_text("".join(str(x) for x in mask.T.ravel()))
    d = ActualData(tmp_path / "m.txt").bind(24, (6, 4))
    assert np.array_equal(d.tensor, mask)
    k, p = d.distribution(6, (3, 2))
    blocks = mask.reshape(2, 3, 2, 2).sum(axis=(1, 3)).ravel()
    want = np.bincount(blocks) / blocks.size
    assert np.allclose([want[int(x)] for x in k], p)
    with pytest.raises(ValueError, match="has 24 elements, the tensor 30"):
        ActualData(tmp_path / "m.txt").bind(30, (6, 5))
