"""Magnitude pruning of a 2-D weight into a structured sparse format.

``prune(weight, pattern, density=None, axis=-1)`` accepts these pattern strings:

* ``"n:m"`` (``m <= 32``) -> :class:`~flexsparse.formats.nm.NM`: in every group of ``m``
  consecutive entries along the reduction axis keep the ``n`` of largest ``|w|``.
* ``"G0:H0->G1:H1->..."`` (outer first), or one level with ``H > 32`` ->
  :class:`~flexsparse.formats.hss.HSS`: innermost level first (keep the top ``G_last`` by
  ``|w|`` in each innermost group), then each outer level keeps the ``G_i`` sub-groups of
  largest L2 norm of what survived below (the order software reproductions of HighLight
  use; fine-tune afterwards).
* ``"block:RxC"`` or ``"block:R"`` with ``density`` = fraction of blocks kept ->
  :class:`~flexsparse.formats.block.BlockSparse`: keep the ``round(density * n_blocks)``
  blocks of largest L2 norm.
* ``"dense"`` -> an :class:`~flexsparse.formats.hss.HSS` with pattern ``"1:1"``: nothing is
  pruned; its density is 1, so its products run dense BLAS through the fallback and a
  model can switch patterns without changing types.

Ties are broken deterministically: the lower index (column, group, or row-major block id)
wins (stable sorts). Orientation: ``axis`` is the reduction axis of ``weight`` (the one the
pattern groups). With ``axis=-1``/``1`` the result has ``weight``'s shape; with ``axis=0``
the pattern runs down the columns and the result represents ``weight.T`` (shape
``(K, M)`` for a ``(M, K)`` weight): ``prune(W, p, axis=0).todense().T`` is the pruned ``W``.
``prune_mask`` always returns the 0/1 mask in ``weight``'s own orientation.

Cost: ``O(M * K * L)`` for ``L`` levels plus a sort of ``H_i`` items per group; block
pruning sorts the block norms, ``O(n_blocks log n_blocks)``.

>>> import numpy as np
>>> W = np.array([[0.1, -3., 2., 0.5], [1., 1., -1., 0.]])
>>> prune(W, "2:4").todense().tolist()   # ties (1, 1, -1) go to the lower index
[[0.0, -3.0, 2.0, 0.0], [1.0, 1.0, 0.0, 0.0]]
>>> prune_mask(W, "1:2", axis=0).astype(int)   # pairs run down the columns
array([[0, 1, 1, 1],
       [1, 0, 0, 0]])
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from flexsparse.formats.block import BlockSparse, check_float_dtype
from flexsparse.formats.hss import HSS, HSSPattern, select_hss
from flexsparse.formats.nm import NM

__all__ = ["prune", "prune_mask"]

_BLOCK_RE = re.compile(r"^\s*block\s*:\s*(\d+)\s*(?:x\s*(\d+))?\s*$", re.IGNORECASE)


def _weight(weight: Any, axis: int) -> np.ndarray:
    if hasattr(weight, "detach") and hasattr(weight, "cpu"):  # a torch tensor (maybe with grad)
        weight = weight.detach().cpu().numpy()
    W = np.asarray(weight)
    if W.ndim != 2:
        raise ValueError(f"weight must be 2-D, got shape {W.shape}")
    check_float_dtype(W.dtype, "weight")
    if axis not in (-1, 0, 1, -2):
        raise ValueError(f"axis must be 0 or 1 (or -1/-2) for a 2-D weight, got {axis}")
    return np.ascontiguousarray(W.T) if axis in (0, -2) else W


def prune(weight: Any, pattern: str, density: float | None = None, axis: int = -1):
    """Magnitude-prune ``weight`` to ``pattern``; see the module docstring.

    Returns:
        :class:`NM`, :class:`HSS` or :class:`BlockSparse` (oriented as the module says).
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a string such as '2:4', '3:4->2:4', 'block:32x32' or "
                        f"'dense', not {type(pattern).__name__}")
    W = _weight(weight, axis)
    spec = pattern.strip()
    block = _BLOCK_RE.match(spec)
    if block:
        if density is None:
            raise ValueError(f"pattern {pattern!r} needs density= (the fraction of blocks to keep)")
        if not 0.0 <= float(density) <= 1.0:
            raise ValueError(f"density must lie in [0, 1], got {density}")
        r = int(block.group(1))
        c = int(block.group(2) or r)
        if not (1 <= r <= 128 and 1 <= c <= 128):
            raise ValueError(f"block size in {pattern!r} must be between 1 and 128, got {r}x{c}")
        return _prune_blocks(W, (r, c), float(density))
    if spec.lower().startswith("block"):
        raise ValueError(f"malformed block pattern {pattern!r}: expected 'block:RxC' or 'block:R'")
    if density is not None:
        raise ValueError(f"density= applies to block patterns only; {pattern!r} fixes its own density")
    if spec.lower() == "dense":
        return HSS.from_dense(W, "1:1")
    pat = HSSPattern.parse(spec)
    values, positions = select_hss(W, pat, by="magnitude")
    if pat.n_levels == 1 and pat.levels[0][1] <= 32:
        (n, m), = pat.levels
        return NM(values, positions, W.shape, n, m)
    return HSS(values, positions, W.shape, pat)


def _prune_blocks(W: np.ndarray, block: tuple[int, int], density: float) -> BlockSparse:
    r, c = block
    M, K = W.shape
    gm, gk = -(-M // r), -(-K // c)
    padded = np.zeros((gm * r, gk * c), dtype=W.dtype)
    padded[:M, :K] = W
    norms = np.square(padded, dtype=np.float64).reshape(gm, r, gk, c).sum(axis=(1, 3)).ravel()
    keep = np.argsort(-norms, kind="stable")[:round(density * gm * gk)]
    mask = np.zeros(gm * gk, dtype=bool)
    mask[keep] = True
    return BlockSparse.from_dense(W, (r, c), layout=mask.reshape(gm, gk))


def prune_mask(weight: Any, pattern: str, density: float | None = None, axis: int = -1) -> np.ndarray:
    """0/1 mask of the kept positions, same shape and dtype as ``weight``.

    Multiply a weight by it in a training loop to keep the pattern. Kept slots are the
    pattern's structural positions (a kept slot can hold a zero weight).
    """
    W = _weight(weight, -1)  # NumPy view of the weight (torch tensors detached), as given
    S = prune(W, pattern, density=density, axis=axis)
    rows, cols, _ = S._coo_parts()
    mask = np.zeros(S.shape, dtype=W.dtype)
    mask[rows, cols] = 1
    return np.ascontiguousarray(mask.T) if axis in (0, -2) else mask
