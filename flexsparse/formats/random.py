"""Random sparse tensors with distinct coordinates, uniform or FROSTT-like power-law skew.

``random(shape, density)`` returns a canonical COO with exactly
``nnz = round(density * prod(shape))`` distinct coordinates where possible, without ever
materialising the dense index space when it is large.

Algorithms (registered by name in :data:`DISTRIBUTIONS`):

* small index spaces (``prod(shape) <= 2**22`` cells) -- exact weighted sampling
  without replacement (Efraimidis-Spirakis: keys ``log(u) / w``, keep the ``nnz``
  largest): O(prod(shape)) time and memory, always exactly ``nnz`` entries.
* large index spaces (e.g. FROSTT Flickr, 1.05e22 cells) -- sample per-mode coordinates
  independently, deduplicate with a lexicographic sort (no linear key), top up with
  more samples until ``nnz`` distinct coordinates exist, then keep a random subset of
  exactly ``nnz``: O(rounds * nnz log nnz) time, O(nnz) memory. When the skew makes
  distinct coordinates too rare (a heavily-skewed space asked to be dense), the top-up
  gives up (after ``_MAX_ROUNDS`` rounds, or 3 rounds where < 0.1% of draws were new) and
  returns fewer entries with a RuntimeWarning saying how many.

Distributions: ``"uniform"`` (every coordinate equally likely) and ``"powerlaw"``
(each mode independently: the coordinate of popularity rank ``r`` is drawn with
probability proportional to ``(r + 1) ** -alpha``; ranks are mapped to coordinates by a
random bijection, so heavy slices are scattered -- slice nnz counts are heavy-tailed
as in FROSTT tensors). Values are drawn in (0, 1] (floats, complex: both parts) or
1..9 (integers), so no explicit zeros are stored.

>>> t = random((30, 40, 50), 0.01, seed=0)
>>> t.nnz, t.canonical
(600, True)
>>> random((3, 3), 0.5, distribution="normal")
Traceback (most recent call last):
...
ValueError: unknown distribution 'normal'; valid distributions: powerlaw, uniform
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from flexsparse._limits import INT64_MAX
from flexsparse._util import check_numeric_dtype, index_dtype_for
from flexsparse.formats import _sort
from flexsparse.formats.coo import COO, normalize_shape

__all__ = ["random", "register_distribution", "DISTRIBUTIONS", "Distribution"]

_SMALL_SPACE = 2**22
_MAX_ROUNDS = 60


@dataclass(frozen=True)
class Distribution:
    """A coordinate distribution that factorises over modes.

    ``sample(rng, extent, size, **params) -> int64 [size]`` draws coordinates of one mode;
    ``weights(rng, extent, **params) -> float64 [extent]`` gives (unnormalised) per-mode
    probabilities for the exact small-space path.
    """

    name: str
    sample: Callable[..., np.ndarray]
    weights: Callable[..., np.ndarray]


DISTRIBUTIONS: dict[str, Distribution] = {}


def register_distribution(name: str, sample: Callable[..., np.ndarray], weights: Callable[..., np.ndarray]) -> None:
    """Register a per-mode coordinate distribution under ``name`` (see :class:`Distribution`)."""
    DISTRIBUTIONS[name] = Distribution(name, sample, weights)


# ---------------------------------------------------------------------- uniform
def _uniform_sample(rng, extent, size, **_):
    return rng.integers(0, extent, size=size, dtype=np.int64)


def _uniform_weights(rng, extent, **_):
    return np.ones(extent)


# ---------------------------------------------------------------------- power law
def _random_bijection(rng, extent: int):
    """``r -> (a * r + b) mod extent`` with gcd(a, extent) = 1: a permutation in O(1) memory."""
    a_max = min(extent - 1, INT64_MAX // max(extent, 1))  # keep a * r inside int64
    a = 1
    if a_max > 1:
        for _ in range(64):
            cand = int(rng.integers(1, a_max + 1))
            if math.gcd(cand, extent) == 1:
                a = cand
                break
    b = int(rng.integers(0, extent))
    return a, b


def _check_alpha(alpha) -> float:
    if not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite real >= 0, got {alpha!r}")
    return float(alpha)


def _powerlaw_sample(rng, extent, size, alpha=1.0, **_):
    alpha = _check_alpha(alpha)
    u = rng.random(size)
    # inverse CDF of the continuous density x**-alpha on [1, extent + 1); rank = floor(x) - 1
    if abs(alpha - 1.0) < 1e-12:
        x = np.exp(u * math.log(extent + 1.0))
    else:
        e = 1.0 - alpha
        x = (1.0 + u * ((extent + 1.0) ** e - 1.0)) ** (1.0 / e)
    rank = np.clip(np.floor(x).astype(np.int64) - 1, 0, extent - 1)
    a, b = _random_bijection(rng, extent)
    return (rank * np.int64(a) + np.int64(b)) % np.int64(extent)


def _powerlaw_weights(rng, extent, alpha=1.0, **_):
    alpha = _check_alpha(alpha)
    w = np.arange(1, extent + 1, dtype=np.float64) ** -alpha
    return w[rng.permutation(extent)]


register_distribution("uniform", _uniform_sample, _uniform_weights)
register_distribution("powerlaw", _powerlaw_sample, _powerlaw_weights)


# ---------------------------------------------------------------------- values
def _values(rng, n: int, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "b":
        return np.ones(n, dtype=bool)
    if dtype.kind in "iu":
        return rng.integers(1, 10, size=n).astype(dtype)
    if dtype.kind == "c":
        return (1.0 - rng.random(n) + 1j * (1.0 - rng.random(n))).astype(dtype)
    return (1.0 - rng.random(n)).astype(dtype)  # (0, 1]: never an explicit zero


# ---------------------------------------------------------------------- samplers
def _exact_small(rng, shape, nnz, dist: Distribution, params) -> np.ndarray:
    """Weighted sampling of ``nnz`` distinct linear indices (Efraimidis-Spirakis)."""
    size = math.prod(shape)
    w = np.ones(1)
    for extent in shape:
        w = np.multiply.outer(w, dist.weights(rng, extent, **params)).ravel()
    if nnz == size:
        lin = np.arange(size, dtype=np.int64)
    else:
        with np.errstate(divide="ignore"):
            keys = np.log(1.0 - rng.random(size)) / w  # larger key = chosen; w == 0 -> -inf
        lin = np.sort(np.argpartition(keys, size - nnz)[size - nnz:]).astype(np.int64)
    return np.vstack(np.unravel_index(lin, shape)) if shape else np.zeros((0, nnz), dtype=np.int64)


def _sample_large(rng, shape, nnz, dist: Distribution, params) -> np.ndarray:
    """Per-mode sampling with dedupe and top-up; returns ``[ndim, <= nnz]`` sorted coords.

    Each round draws ``need * factor`` candidates (``factor`` doubles after a round with
    many duplicates, capped at ``4 * nnz`` candidates so memory stays O(nnz)); the loop
    stops after ``_MAX_ROUNDS`` rounds or 3 rounds in which < 0.1% of the draws were new.
    """
    coords = np.zeros((len(shape), 0), dtype=np.int64)
    factor = 1.05
    cap = max(4 * nnz, 1024)
    stalled = 0
    for _ in range(_MAX_ROUNDS):
        need = nnz - coords.shape[1]
        batch = min(max(int(need * factor) + 16, 16), cap)
        fresh = np.vstack([dist.sample(rng, extent, batch, **params) for extent in shape])
        before = coords.shape[1]
        coords = np.concatenate([coords, fresh], axis=1)
        order = _sort.lex_order(coords, shape)
        coords = coords[:, order]
        coords = coords[:, _sort.group_starts(coords)]
        if coords.shape[1] >= nnz:
            keep = np.sort(rng.choice(coords.shape[1], size=nnz, replace=False))
            return coords[:, keep]
        gained = coords.shape[1] - before
        stalled = stalled + 1 if gained * 1000 < batch else 0  # < 0.1% of draws were new
        if stalled >= 3:
            break
        if gained < 0.5 * batch:
            factor *= 2.0  # duplicates were frequent: ask for more next round
    warnings.warn(f"random: only {coords.shape[1]} distinct coordinates of the requested {nnz} were "
                  f"found (the distribution is too concentrated to find more by sampling)",
                  RuntimeWarning, stacklevel=3)
    return coords


def random(shape, density: float | None = None, seed=None, distribution: str = "uniform",
           dtype=np.float64, *, nnz: int | None = None, **params) -> COO:
    """Random canonical COO with distinct coordinates.

    Args:
        shape: extents (any ndim, including 0-D; any size, e.g. FROSTT Flickr's).
        density: fraction of nonzeros in [0, 1]; ``nnz = round(density * prod(shape))``.
        seed: ``None``, an int, or a ``np.random.Generator``.
        distribution: a name in :data:`DISTRIBUTIONS` (``"uniform"``, ``"powerlaw"``).
        dtype: value dtype (bool, int, float, complex).
        nnz: exact number of nonzeros instead of ``density``.
        **params: distribution parameters, e.g. ``alpha=1.2`` for ``"powerlaw"``.

    Raises:
        ValueError: unknown distribution, density outside [0, 1], nnz outside [0, prod(shape)].
    """
    shape = normalize_shape(shape)
    dtype = check_numeric_dtype(dtype, "dtype")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; valid distributions: "
                         f"{', '.join(sorted(DISTRIBUTIONS))}")
    dist = DISTRIBUTIONS[distribution]
    size = math.prod(shape)
    if (density is None) == (nnz is None):
        raise ValueError("pass exactly one of density= and nnz=")
    if density is not None:
        if not isinstance(density, numbers.Real) or not 0.0 <= float(density) <= 1.0:
            raise ValueError(f"density must be a real number in [0, 1], got {density!r}")
        nnz = min(round(float(density) * size), size)
    elif isinstance(nnz, bool) or not isinstance(nnz, (numbers.Integral, np.integer)) or not 0 <= nnz <= size:
        raise ValueError(f"nnz must be an int in [0, prod(shape) = {size}], got {nnz!r}")
    nnz = int(nnz)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if nnz == 0:
        coords = np.zeros((len(shape), 0), dtype=np.int64)
    elif size <= _SMALL_SPACE:
        coords = _exact_small(rng, shape, nnz, dist, params)
    else:
        coords = _sample_large(rng, shape, nnz, dist, params)
    coords = coords.astype(index_dtype_for(shape), copy=False)
    return COO(coords, _values(rng, coords.shape[1], dtype), shape, canonical=True)
