"""N:M structured sparsity along the reduction axis: the one-level case of HSS.

Every group of ``m`` consecutive columns of a row keeps at most ``n`` entries
(``1 <= n <= m <= 32``; NVIDIA's 2:4 is ``n=2, m=4``). Layout (identical to a one-level
:class:`~flexsparse.formats.hss.HSS`, whose code and kernels it reuses):

* ``values:    [M_rows, ceil(K/m), n]`` float32/float64;
* ``positions: [M_rows, ceil(K/m), n]`` uint8, strictly increasing, ``< m``.

Column of ``values[r, g, j]`` is ``g*m + positions[r, g, j]``; ``K`` is padded with zeros to
whole groups (the padding is never visible). Products cost ``O(nnz * N)`` through the
lane-select kernels of :mod:`flexsparse.kernels.cpu.lanes` (the gather kernels of
:mod:`flexsparse.kernels.cpu.hss` without AVX-512), exactly as for HSS.

>>> import numpy as np
>>> W = np.array([[1., 0., 0., 2., 0., 3.]], dtype=np.float32)
>>> A = NM.from_dense(W, 2, 4)
>>> A
<NM shape=(1, 6) nnz=4 density=66.7% dtype=float32 n=2 m=4>
>>> A.positions.tolist()
[[[0, 3], [0, 1]]]
>>> np.array_equal(A.todense(), W)
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flexsparse.formats.hss import HSS, HSSPattern

__all__ = ["NM"]


def _check_nm(n: Any, m: Any) -> tuple[int, int]:
    if isinstance(n, bool) or isinstance(m, bool) or not (
            isinstance(n, (int, np.integer)) and isinstance(m, (int, np.integer))):
        raise TypeError(f"n and m must be ints, got n={n!r}, m={m!r}")
    n, m = int(n), int(m)
    if not (1 <= n <= m <= 32):
        raise ValueError(f"N:M needs 1 <= n <= m <= 32, got n={n}, m={m}")
    return n, m


class NM(HSS):
    """N:M sparse matrix (one-level HSS ``"n:m"``).

    Args:
        values: ``[M_rows, ceil(K/m), n]`` float32/float64.
        positions: ``[M_rows, ceil(K/m), n]`` uint8 (a 1-tuple of it is accepted too).
        shape: logical ``(M_rows, K)``.
        n, m: keep ``n`` of every ``m``.
    """

    format = "nm"

    def __init__(self, values: Any, positions: Any, shape: tuple[int, int], n: int, m: int):
        self.n, self.m = _check_nm(n, m)
        if not isinstance(positions, (tuple, list)):
            positions = (positions,)
        super().__init__(values, positions, shape, HSSPattern(((self.n, self.m),)))

    @property
    def positions(self) -> np.ndarray:  # type: ignore[override]
        """``[M_rows, ceil(K/m), n]`` uint8 (the single level of the HSS layout)."""
        return self._positions[0]

    @classmethod
    def from_dense(cls, W: Any, n: int, m: int) -> NM:  # type: ignore[override]
        """Build from a dense matrix whose every ``m``-group holds at most ``n`` nonzeros."""
        n, m = _check_nm(n, m)
        h = HSS.from_dense(W, HSSPattern(((n, m),)))
        return cls(h.values, h._positions, h.shape, n, m)

    @classmethod
    def _build(cls, values, positions, shape, pattern):
        (n, m), = pattern.levels
        return cls(values, positions, shape, n, m)

    def _repr_extra(self) -> str:
        return f"n={self.n} m={self.m}"

    @classmethod
    def from_coo(cls, coo, n: int = 1, m: int = 1) -> NM:  # type: ignore[override]
        """Build from a 2-D COO whose every ``m``-group holds at most ``n`` nonzeros."""
        return cls.from_dense(coo.todense(), n, m)
