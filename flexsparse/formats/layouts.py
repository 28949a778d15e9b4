"""Block layouts: seeded generators of bool block masks for :class:`BlockSparse`.

Each generator takes the block grid ``(gm, gk) = (ceil(M/r), ceil(K/c))``, a target
``density`` (fraction of blocks kept) and a ``seed``, and returns ``bool[gm, gk]``. They are
registered by name (``LAYOUTS``); :func:`make_layout` looks a name up and lists the valid
names on an unknown one. Graph layouts (the ones OpenAI's blocksparse benchmarks used) build
an undirected graph on ``n = max(gm, gk)`` nodes, add self-loops (every block row keeps its
diagonal block, so no output row is empty) and map node ``i`` to block row
``floor(i * gm / n)`` and block column ``floor(i * gk / n)``.

* ``random``: exactly ``round(density * gm * gk)`` blocks, uniformly without replacement.
* ``small_world``: Watts-Strogatz ring lattice, each node linked to ``k`` nearest neighbours
  (``k`` from the density), each edge rewired with probability ``rewire`` (default 0.1).
* ``scale_free``: Barabasi-Albert preferential attachment, ``m_edges`` (from the density)
  edges per new node; degrees follow a power law, so some block rows are much denser.
* ``block_diagonal``: ``g = round(1/density)`` diagonal super-blocks.
* ``banded``: ``|col - row| <= h`` in block units (diagonal scaled for non-square grids).

Cost: ``O(gm * gk)`` memory for the mask; graph construction ``O(n * degree)``.

>>> make_layout("banded", (4, 4), density=0.5).astype(int)
array([[1, 1, 0, 0],
       [1, 1, 1, 0],
       [0, 1, 1, 1],
       [0, 0, 1, 1]])
>>> make_layout("grid", (2, 2))
Traceback (most recent call last):
...
ValueError: unknown layout 'grid'; valid layouts: banded, block_diagonal, random, scale_free, small_world
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["LAYOUTS", "make_layout", "register_layout"]

LAYOUTS: dict[str, Callable[..., np.ndarray]] = {}


def register_layout(name: str):
    """Decorator registering a layout generator ``fn(grid, density, seed, **options)``."""
    def deco(fn):
        LAYOUTS[name] = fn
        return fn
    return deco


def make_layout(name: str, grid: tuple[int, int], density: float = 0.1, seed: int = 0,
                **options) -> np.ndarray:
    """Bool block mask ``[gm, gk]`` from the layout registered as ``name``."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; valid layouts: {', '.join(sorted(LAYOUTS))}")
    gm, gk = (int(g) for g in grid)
    if gm < 0 or gk < 0:
        raise ValueError(f"grid must be two non-negative ints, got {grid}")
    if not 0.0 <= float(density) <= 1.0:
        raise ValueError(f"density must lie in [0, 1], got {density}")
    mask = LAYOUTS[name]((gm, gk), float(density), int(seed), **options)
    return np.ascontiguousarray(mask, dtype=bool)


def _graph_to_mask(edges_i: np.ndarray, edges_j: np.ndarray, n: int, grid) -> np.ndarray:
    """Symmetric adjacency (plus self-loops) on ``n`` nodes, mapped onto the block grid."""
    gm, gk = grid
    mask = np.zeros((gm, gk), dtype=bool)
    nodes = np.arange(n)
    ii = np.concatenate([edges_i, edges_j, nodes])
    jj = np.concatenate([edges_j, edges_i, nodes])
    mask[ii * gm // n, jj * gk // n] = True
    return mask


@register_layout("random")
def random_layout(grid, density, seed):
    gm, gk = grid
    total = gm * gk
    mask = np.zeros(total, dtype=bool)
    mask[np.random.default_rng(seed).permutation(total)[:round(density * total)]] = True
    return mask.reshape(gm, gk)


@register_layout("small_world")
def small_world_layout(grid, density, seed, rewire: float = 0.1):
    if not 0.0 <= rewire <= 1.0:
        raise ValueError(f"rewire probability must lie in [0, 1], got {rewire}")
    n = max(grid)
    if n == 0:
        return np.zeros(grid, dtype=bool)
    rng = np.random.default_rng(seed)
    half = max(0, min((n - 1) // 2, round((density * n - 1) / 2)))  # k/2 neighbours per side
    src = np.repeat(np.arange(n), half)
    dst = (src + np.tile(np.arange(1, half + 1), n)) % n
    flip = rng.random(src.shape[0]) < rewire
    dst[flip] = rng.integers(0, n, int(flip.sum()))  # Watts-Strogatz rewiring
    return _graph_to_mask(src, dst, n, grid)


@register_layout("scale_free")
def scale_free_layout(grid, density, seed):
    n = max(grid)
    if n == 0:
        return np.zeros(grid, dtype=bool)
    rng = np.random.default_rng(seed)
    m_edges = max(1, min(n - 1, round(density * n / 2))) if n > 1 else 0
    src, dst = [], []
    targets = list(range(m_edges))  # initial fully connected-ish seed nodes
    repeated: list[int] = []       # node list with multiplicity = degree
    for new in range(m_edges, n):
        for t in set(targets):
            src.append(new)
            dst.append(t)
            repeated.extend((new, t))
        picks: set[int] = set()
        while len(picks) < m_edges:  # preferential attachment: prob ~ degree
            picks.add(repeated[int(rng.integers(len(repeated)))])
        targets = sorted(picks)
    return _graph_to_mask(np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64), n, grid)


@register_layout("block_diagonal")
def block_diagonal_layout(grid, density, seed):
    gm, gk = grid
    g = max(1, round(1 / density)) if density > 0 else max(gm, gk, 1)
    rows = np.arange(gm) * g // max(gm, 1)
    cols = np.arange(gk) * g // max(gk, 1)
    mask = rows[:, None] == cols[None, :]
    if density == 0:
        mask[:] = False
    return mask


@register_layout("banded")
def banded_layout(grid, density, seed):
    gm, gk = grid
    h = max(0, int((density * gk - 1) / 2 + 0.5))  # half-width; rounds .5 up
    centre = np.arange(gm) * gk / max(gm, 1)
    mask = np.abs(np.arange(gk)[None, :] - np.floor(centre)[:, None]) <= h
    if density == 0:
        mask[:] = False
    return mask
