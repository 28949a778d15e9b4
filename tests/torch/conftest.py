"""Shared builders for the torch-layer tests: random structured weights with ragged edges."""

from __future__ import annotations

import numpy as np
import pytest


def make_weight(kind: str, shape: tuple[int, int], *, dtype=np.float64, seed: int = 0,
                block=(4, 4), density: float = 0.5, pattern: str = "2:4"):
    """A random BlockSparse / NM / HSS of logical ``shape`` (padding slots hold 0)."""
    from flexsparse.formats.block import BlockSparse
    from flexsparse.formats.hss import HSS, HSSPattern, select_hss
    from flexsparse.formats.nm import NM

    rng = np.random.default_rng(seed)
    A = rng.standard_normal(shape).astype(dtype)
    if kind == "block":
        r, c = block
        grid = (-(-shape[0] // r), -(-shape[1] // c))
        layout = rng.random(grid) < density
        return BlockSparse.from_dense(A, block, layout=layout)
    p = HSSPattern.parse(pattern)
    values, positions = select_hss(A, p, by="magnitude")
    if kind == "nm":
        (n, m), = p.levels
        return NM(values.astype(dtype), positions, shape, n, m)
    return HSS(values.astype(dtype), positions, shape, p)


@pytest.fixture
def weight_factory():
    return make_weight
