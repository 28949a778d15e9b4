"""Block layout generators: registry, determinism, densities, structure."""

from __future__ import annotations

import numpy as np
import pytest

from flexsparse.formats.block import BlockSparse
from flexsparse.formats.layouts import LAYOUTS, make_layout

NAMES = ["random", "small_world", "scale_free", "block_diagonal", "banded"]


def test_registry_names():
    assert sorted(LAYOUTS) == sorted(NAMES)
    with pytest.raises(ValueError, match="unknown layout 'torus'; valid layouts: banded, block_diagonal, "
                                         "random, scale_free, small_world"):
        make_layout("torus", (4, 4))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("grid", [(64, 64), (32, 48), (1, 5), (7, 1)])
def test_shape_dtype_and_seed(name, grid):
    a = make_layout(name, grid, density=0.2, seed=1)
    b = make_layout(name, grid, density=0.2, seed=1)
    assert a.shape == grid and a.dtype == bool
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_density_close_to_target(name):
    for target in (0.05, 0.1, 0.25):
        mask = make_layout(name, (128, 128), density=target, seed=3)
        assert abs(mask.mean() - target) <= 0.5 * target + 1 / 128, (name, target, mask.mean())


def test_random_exact_count_and_seeds_differ():
    a = make_layout("random", (40, 25), density=0.1, seed=0)
    assert a.sum() == 100
    assert not np.array_equal(a, make_layout("random", (40, 25), density=0.1, seed=1))
    assert make_layout("random", (10, 10), density=0.0).sum() == 0
    assert make_layout("random", (10, 10), density=1.0).all()


@pytest.mark.parametrize("name", ["small_world", "scale_free"])
def test_graph_layouts_have_diagonal_and_symmetry(name):
    m = make_layout(name, (64, 64), density=0.1, seed=5)
    assert m.diagonal().all()  # self-loops: no empty block row
    np.testing.assert_array_equal(m, m.T)  # undirected graph on a square grid


def test_scale_free_degrees_are_skewed_small_world_are_not():
    sf = make_layout("scale_free", (256, 256), density=0.05, seed=0).sum(axis=1)
    sw = make_layout("small_world", (256, 256), density=0.05, seed=0).sum(axis=1)
    assert sf.max() >= 4 * np.median(sf)  # hubs (power-law degrees)
    assert sw.max() <= 2 * np.median(sw)  # ring lattice: nearly regular


def test_small_world_rewire_zero_is_ring_lattice():
    m = make_layout("small_world", (16, 16), density=5 / 16, rewire=0.0)
    i, j = np.nonzero(m)
    d = np.minimum((i - j) % 16, (j - i) % 16)
    assert d.max() == 2 and m.sum() == 16 * 5
    with pytest.raises(ValueError, match="rewire probability"):
        make_layout("small_world", (4, 4), rewire=2.0)


def test_block_diagonal_and_banded_structure():
    bd = make_layout("block_diagonal", (8, 8), density=0.25)
    np.testing.assert_array_equal(bd, np.kron(np.eye(4, dtype=bool), np.ones((2, 2), bool)))
    band = make_layout("banded", (6, 6), density=0.5)
    i, j = np.indices((6, 6))
    np.testing.assert_array_equal(band, np.abs(i - j) <= 1)
    assert not make_layout("banded", (6, 6), density=0.0).any()
    assert not make_layout("block_diagonal", (6, 6), density=0.0).any()


@pytest.mark.parametrize("grid,density,match", [((4, 4), 1.5, r"density must lie in \[0, 1\]"),
                                                 ((4, 4), -0.1, r"density must lie in \[0, 1\]"),
                                                 ((-1, 4), 0.1, "non-negative")])
def test_bad_arguments(grid, density, match):
    with pytest.raises(ValueError, match=match):
        make_layout("random", grid, density=density)


def test_layout_feeds_blocksparse():
    W = np.random.default_rng(0).standard_normal((70, 90))
    mask = make_layout("small_world", (9, 12), density=0.2, seed=2)
    B = BlockSparse.from_dense(W, (8, 8), layout=mask)
    np.testing.assert_array_equal(B.block_mask(), mask)
    D = B.todense()
    np.testing.assert_array_equal(D, W * np.kron(mask, np.ones((8, 8)))[:70, :90])
