"""Density models of a tensor: how many nonzeros a tile of a given shape holds.

Three models, as in Sparseloop:

* ``fixed-structured`` (also a bare number): every tile of ``n`` elements holds ``n * d``
  nonzeros, split between ``floor`` and ``ceil`` with the fractional part as probability.
* ``hypergeometric``: ``r = ceil(d * N)`` nonzeros placed uniformly at random among the
  tensor's ``N`` elements; a tile of ``n`` elements holds ``k`` with probability
  ``C(r, k) C(N - r, n - k) / C(N, n)``.
* ``actual-data`` (``real-data``): a 0/1 mask of the tensor read from a file; the occupancy
  distribution of a tile shape is the histogram over all aligned tiles of that shape, so tile
  shape (not only size) matters, and tails of sparse power-law data are kept.

A tile is described by its shape (elements) and, optionally, its box (extent per rank of the
tensor, innermost rank last) and a *constraint*: the (shape, occupancy) of an enclosing tile
it is drawn from, which turns the hypergeometric draw into one from the enclosing tile and the
fixed density into ``occupancy / shape``. Cost: ``O(n)`` per distribution query, memoised; an
actual-data query costs one reshape-and-sum of the mask per distinct box.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
from scipy.special import gammaln

__all__ = ["ActualData", "Density", "FixedStructured", "HSS", "Hypergeometric", "make_density"]

Constraint = Optional[tuple[int, int]]  # (enclosing tile shape, its occupancy)


class Density:
    """Interface shared by the density models."""

    kind = "?"
    density = 1.0
    tensor_size = 1

    def bind(self, tensor_size: int, rank_extents: tuple[int, ...]) -> Density:
        """Fix the whole tensor's size and box (known once the problem is parsed)."""
        self.tensor_size = int(tensor_size)
        self.rank_extents = tuple(int(e) for e in rank_extents)
        return self

    def distribution(self, shape: int, box: tuple[int, ...] | None = None,
                     constraint: Constraint = None) -> tuple[np.ndarray, np.ndarray]:
        """(occupancies, probabilities) with nonzero probability for a tile of ``shape`` elements."""
        raise NotImplementedError

    def prob(self, shape: int, occ: int, box: tuple[int, ...] | None = None, constraint: Constraint = None) -> float:
        """Probability that a tile of ``shape`` elements holds exactly ``occ`` nonzeros."""
        k, p = self.distribution(shape, box, constraint)
        hit = np.nonzero(k == occ)[0]
        return float(p[hit[0]]) if hit.size else 0.0

    def prob_empty(self, shape: int, box: tuple[int, ...] | None = None, constraint: Constraint = None) -> float:
        """Probability that a tile holds no nonzero (0 for an empty shape)."""
        if shape <= 0:
            return 0.0
        return self.prob(shape, 0, box, constraint)

    def expected_occupancy(self, shape: int, box: tuple[int, ...] | None = None,
                           constraint: Constraint = None) -> float:
        """Mean nonzeros of a tile."""
        k, p = self.distribution(shape, box, constraint)
        return float(np.dot(k, p))

    def max_occupancy(self, shape: int, box: tuple[int, ...] | None = None) -> int:
        """Largest occupancy a tile can reach (confidence 1)."""
        k, _ = self.distribution(shape, box)
        return int(k.max()) if k.size else 0

    def min_occupancy(self, shape: int, box: tuple[int, ...] | None = None) -> int:
        """Smallest occupancy a tile can reach."""
        k, _ = self.distribution(shape, box)
        return int(k.min()) if k.size else 0

    def describe(self) -> str:
        """Name shown in stats (``Tile density distribution``)."""
        return self.kind


class FixedStructured(Density):
    """Every tile holds ``shape * density`` nonzeros (floor/ceil by the fractional part)."""

    kind = "fixed-structured"

    def __init__(self, density: float) -> None:
        self.density = float(density)

    def distribution(self, shape, box=None, constraint=None):
        d = self.density if constraint is None else (constraint[1] / constraint[0] if constraint[0] else 0.0)
        exact = shape * d
        lo = math.floor(exact)
        frac = exact - lo
        if frac == 0:
            return np.array([lo]), np.array([1.0])
        return np.array([lo, lo + 1]), np.array([1.0 - frac, frac])

    def expected_occupancy(self, shape, box=None, constraint=None):
        d = self.density if constraint is None else (constraint[1] / constraint[0] if constraint[0] else 0.0)
        return shape * d


class Hypergeometric(Density):
    """``ceil(d * N)`` nonzeros uniformly at random among the tensor's ``N`` elements."""

    kind = "hypergeometric"

    def __init__(self, density: float) -> None:
        self.density = float(density)

    @property
    def nnz(self) -> int:
        """Nonzeros of the whole tensor."""
        return int(math.ceil(self.density * self.tensor_size - 1e-9))

    def distribution(self, shape, box=None, constraint=None):
        total, r = (self.tensor_size, self.nnz) if constraint is None else constraint
        return _hypergeom(int(total), int(r), int(shape))

    def expected_occupancy(self, shape, box=None, constraint=None):
        total, r = (self.tensor_size, self.nnz) if constraint is None else constraint
        return shape * r / total if total else 0.0

    def min_occupancy(self, shape, box=None):
        return max(0, int(shape) + self.nnz - self.tensor_size)


@lru_cache(maxsize=4096)
def _hypergeom(total: int, r: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    n = min(n, total)
    lo, hi = max(0, n + r - total), min(n, r)
    if hi - lo > 2000:
        # Beyond 40 standard deviations the probability underflows to 0 in double precision.
        mean = n * r / total
        sd = math.sqrt(max(n * r / total * (1 - r / total) * (total - n) / max(total - 1, 1), 1e-12))
        lo, hi = max(lo, int(mean - 40 * sd) - 1), min(hi, int(mean + 40 * sd) + 1)
    k = np.arange(lo, hi + 1)
    logp = (_lnc(r, k) + _lnc(total - r, n - k) - _lnc(total, n))
    p = np.exp(logp)
    keep = p > 0
    return k[keep], p[keep]


def _lnc(a, b):
    """log C(a, b) (vectorised)."""
    return gammaln(np.asarray(a, dtype=float) + 1) - gammaln(np.asarray(b, dtype=float) + 1) - \
        gammaln(np.asarray(a, dtype=float) - np.asarray(b, dtype=float) + 1)


class HSS(Density):
    """Hierarchical structured sparsity along one rank: ``levels`` = [(G, H), ...], outer first.

    Level 0 (innermost) keeps ``G0`` of every ``H0`` consecutive elements; level ``i`` keeps
    ``Gi`` of every ``Hi`` consecutive level-``i-1`` groups. A tile's extent along the rank picks
    whole groups: ``b`` groups of level ``j`` inside one level-``j+1`` group hold a hypergeometric
    number of kept groups (``Hj+1`` groups, ``Gj+1`` kept), each with ``prod G`` nonzeros below;
    a piece of a level-0 group holds a hypergeometric share of its ``G0``. The other ranks are
    independent rows with the same pattern, so a tile's occupancy is their convolution.
    """

    kind = "hss"

    def __init__(self, levels: list[tuple[int, int]], rank: int = -1, shared_rows: int = 1) -> None:
        self.levels = [(int(g), int(h)) for g, h in levels]
        if not self.levels or any(not 0 <= g <= h or h < 1 for g, h in self.levels):
            raise ValueError(f"HSS levels must be G:H pairs with 0 <= G <= H, got {levels}")
        if shared_rows < 1:
            raise ValueError(f"HSS shared_rows must be >= 1, got {shared_rows}")
        self.rank = int(rank)
        self.shared_rows = int(shared_rows)
        self.density = math.prod(g / h for g, h in self.levels)
        self._cache: dict = {}

    def _row(self, e: int) -> np.ndarray:
        """Occupancy pmf (index = nonzeros) of ``e`` aligned elements of one row along the rank."""
        inner = self.levels[::-1]                                   # level 0 first
        unit = [inner[0][1]]
        for _g, h in inner[1:]:
            unit.append(unit[-1] * h)                               # elements per group of each level
        full = [inner[0][0]]
        for g, _h in inner[1:]:
            full.append(full[-1] * g)                               # nonzeros of a kept group
        top = len(inner) - 1
        q, r = divmod(int(e), unit[top])
        pmf = self._partial(r, top, inner, unit, full)
        return np.concatenate((np.zeros(q * full[top]), pmf)) if q else pmf

    def _shared(self, e: int, rows: int) -> np.ndarray:
        """pmf of ``rows`` rows that share the upper levels' pattern (level 0 per row)."""
        inner = self.levels[::-1]
        g0, h0 = inner[0]
        if len(inner) == 1 or e < h0:
            k, p = _hypergeom(h0, g0, min(e, h0))
            one = np.zeros(int(k.max()) + 1)
            one[k.astype(int)] = p
            per = _power(one, rows)
            keep = math.prod(g / h for g, h in inner[1:])
            per = per * keep
            per[0] += 1 - keep
            return per
        upper = HSS([lv for lv in self.levels[:-1]], self.rank)
        groups = upper._row(e // h0)                                # pmf of kept level-0 groups
        out = np.zeros((groups.size - 1) * g0 * rows + 1)
        out[np.arange(groups.size) * g0 * rows] = groups
        return out

    def _partial(self, r: int, i: int, inner, unit, full) -> np.ndarray:
        """pmf of the first ``r`` elements of a kept level-``i`` group."""
        g, h = inner[i]
        if r == 0:
            return np.array([1.0])
        if i == 0:
            k, p = _hypergeom(h, g, r)
            out = np.zeros(int(k.max()) + 1)
            out[k.astype(int)] = p
            return out
        b, rem = divmod(r, unit[i - 1])
        out = np.array([1.0])
        if b:
            k, p = _hypergeom(h, g, b)                              # kept children among the first b
            out = np.zeros(int(k.max()) * full[i - 1] + 1)
            out[(k * full[i - 1]).astype(int)] = p
        if rem:
            part = self._partial(rem, i - 1, inner, unit, full)
            keep = g / h                                            # the next child is kept
            mix = part * keep
            mix[0] += 1 - keep
            out = np.convolve(out, mix)
        return out

    def distribution(self, shape, box=None, constraint=None):
        if constraint is not None:
            return _hypergeom(int(constraint[0]), int(constraint[1]), int(shape))
        ext = tuple(box) if box is not None and math.prod(box) == shape else None
        r = self.rank % len(self.rank_extents)
        if ext is None:
            e = min(int(shape), self.rank_extents[r])
            rows = max(1, int(shape) // e)
        else:
            e, rows = ext[r], math.prod(x for i, x in enumerate(ext) if i != r)
        key = (e, rows)
        g0 = self.shared_rows if self.shared_rows > 1 else 1
        one0 = self._shared(e, g0) if g0 > 1 else self._row(e)
        nz = np.nonzero(one0)[0]
        if key not in self._cache and nz.size == 1:
            self._cache[key] = (np.array([int(nz[0]) * rows // g0]), np.array([1.0]))
        if key not in self._cache and (rows > 64 or rows * one0.size > 20000):
            # Many independent row groups: the sum is normal to within double-precision noise
            # for the quantities used (means, tails); keep exact emptiness and bounds.
            g = self.shared_rows if self.shared_rows > 1 else 1
            one = self._shared(e, g) if g > 1 else self._row(e)
            reps = rows / g
            ks1 = np.arange(one.size)
            mu1, var1 = float(np.dot(ks1, one)), float(np.dot(ks1 ** 2, one)) - float(np.dot(ks1, one)) ** 2
            mu, sd = mu1 * reps, math.sqrt(max(var1 * reps, 1e-12))
            lo, hi = 0, int((one.size - 1) * reps)
            ks = np.arange(max(lo, int(mu - 8 * sd)), min(hi, int(mu + 8 * sd) + 1) + 1)
            pdf = np.exp(-0.5 * ((ks - mu) / sd) ** 2)
            p0 = float(one[0]) ** reps
            if ks.size == 0 or pdf.sum() == 0:
                ks, pdf = np.array([int(round(mu))]), np.array([1.0])
            pdf = pdf / pdf.sum() * (1 - p0)
            if p0 > 0:
                if ks[0] == 0:
                    pdf[0] += p0
                else:
                    ks, pdf = np.concatenate(([0], ks)), np.concatenate(([p0], pdf))
            self._cache[key] = (ks, pdf)
        if key not in self._cache:
            if self.shared_rows > 1:
                groups, left = divmod(rows, self.shared_rows)
                out = _power(self._shared(e, self.shared_rows), groups)
                if left:
                    out = np.convolve(out, self._shared(e, left))
            else:
                out = _power(self._row(e), rows)
            ks = np.nonzero(out > 1e-300)[0]
            self._cache[key] = (ks, out[ks] / out[ks].sum())
        return self._cache[key]

    def describe(self) -> str:
        return "hss " + " -> ".join(f"{g}:{h}" for g, h in self.levels)


def _power(pmf: np.ndarray, n: int) -> np.ndarray:
    """n-fold convolution of a pmf with itself (by squaring)."""
    out, base = np.array([1.0]), pmf
    while n:
        if n & 1:
            out = np.convolve(out, base)
        n >>= 1
        if n:
            base = np.convolve(base, base)
    return out


class ActualData(Density):
    """The nonzero pattern of the actual tensor; tiles are aligned boxes, occupancies their exact
    histogram.

    From a mask file: one character per element ('0'/'1', whitespace ignored), the first rank of
    the data-space's projection varying fastest (Timeloop's point order). From coordinates
    (``ActualData.from_coords``): the nonzeros' indices per rank, for tensors too large to hold
    as a dense mask (graphs with millions of rows); tile histograms then come from the tile ids of
    the nonzeros and the count of empty tiles.
    """

    kind = "actual-data"
    DENSE_LIMIT = 1 << 24          # masks above this many elements are kept as coordinates
    BINCOUNT_LIMIT = 1 << 24       # tile grids up to this many tiles are counted with bincount
    BLOCK_CACHE_LIMIT = 1 << 21    # nonempty-tile lists up to this length are kept for reuse (~50 MB)

    def __init__(self, path: str | Path, mask: np.ndarray | None = None) -> None:
        self.path = str(path)
        self._mask = mask
        self._coords: np.ndarray | None = None
        self._tensor: np.ndarray | None = None
        self._cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_coords(cls, coords: np.ndarray, name: str = "<coordinates>", assume_unique: bool = False) -> ActualData:
        """Pattern given by nonzero coordinates, shape (ranks, nnz); duplicates are merged unless
        the caller guarantees there are none (``assume_unique``, e.g. a canonical SciPy matrix)."""
        d = cls(name)
        c = np.asarray(coords, dtype=np.int64)
        if c.ndim != 2:
            raise ValueError(f"actual-data coordinates must have shape (ranks, nnz), got {c.shape}")
        if c.size and not assume_unique:
            ext = c.max(axis=1) + 1
            if math.prod(int(e) for e in ext) < 1 << 62:       # sort one int64 key, not rows
                key = np.zeros(c.shape[1], dtype=np.int64)
                for r, e in enumerate(ext):
                    key = key * int(e) + c[r]
                c = np.stack(np.unravel_index(np.unique(key), tuple(int(e) for e in ext))).astype(np.int64)
            else:
                c = np.unique(c, axis=1)
        d._coords = c
        return d

    def bind(self, tensor_size, rank_extents):
        if tuple(getattr(self, "rank_extents", ()) or ()) != tuple(rank_extents):
            self._cache.clear()                  # tile histograms depend on the tensor's extents
            if self._tensor is not None and self._tensor.shape != tuple(rank_extents):
                self._tensor = None
        super().bind(tensor_size, rank_extents)
        if self._coords is not None:
            if self._coords.shape[0] != len(self.rank_extents):
                raise ValueError(f"actual-data {self.path}: coordinates have {self._coords.shape[0]} ranks, "
                                 f"the tensor {len(self.rank_extents)}")
            if self._coords.size and (self._coords.min() < 0 or
                                      np.any(self._coords.max(axis=1) >= np.asarray(self.rank_extents))):
                raise ValueError(f"actual-data {self.path}: coordinates outside the tensor "
                                 f"{' x '.join(map(str, self.rank_extents))}")
            self.density = self._coords.shape[1] / self.tensor_size if self.tensor_size else 0.0
            if self.tensor_size <= self.DENSE_LIMIT and self._tensor is None:
                t = np.zeros(self.rank_extents, dtype=np.int8)
                t[tuple(self._coords)] = 1
                self._tensor = t
            return self
        if self._mask is None:
            p = Path(self.path)
            if not p.is_file():
                raise ValueError(f"actual-data mask file {self.path!r} does not exist")
            text = "".join(p.read_text().split())
            if set(text) - {"0", "1"}:
                raise ValueError(f"actual-data mask {self.path!r}: expected only '0' and '1' characters")
            self._mask = np.frombuffer(text.encode(), dtype=np.uint8) - ord("0")
        if self._mask.size != self.tensor_size:
            raise ValueError(f"actual-data mask {self.path!r} has {self._mask.size} elements, "
                             f"the tensor {self.tensor_size} ({' x '.join(map(str, self.rank_extents))})")
        # The mask lists elements with the first rank varying fastest (Timeloop's point order).
        n = len(self.rank_extents)
        self._tensor = self._mask.reshape(tuple(reversed(self.rank_extents))).transpose(
            tuple(range(n - 1, -1, -1))).astype(np.int8)
        self._coords = np.stack(np.nonzero(self._tensor)).astype(np.int64)
        self.density = float(self._mask.mean()) if self._mask.size else 0.0
        return self

    @property
    def tensor(self) -> np.ndarray | None:
        """The 0/1 tensor indexed by rank (None for a large tensor given by coordinates)."""
        return self._tensor

    @property
    def coords(self) -> np.ndarray:
        """Nonzero coordinates, shape (ranks, nnz)."""
        return self._coords

    def block_counts(self, box: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
        """(block index per rank of nonempty blocks, their nonzero counts, block grid shape)."""
        box = tuple(max(1, min(int(b), e)) for b, e in zip(box, self.rank_extents))
        grid = tuple(-(-e // b) for e, b in zip(self.rank_extents, box))
        if self._coords.size == 0:
            return np.zeros((len(box), 0), dtype=np.int64), np.zeros(0, dtype=np.int64), grid
        ck = ("blocks", box)
        if ck in self._cache:
            return self._cache[ck]
        key = self._block_keys(box, grid)
        if key is None:
            blocks = self._coords // np.asarray(box, dtype=np.int64)[:, None]
            uniq, counts = np.unique(blocks, axis=1, return_counts=True)
            out = (uniq, counts, grid)
        else:
            if math.prod(grid) <= self.BINCOUNT_LIMIT:           # counting beats sorting
                full = np.bincount(key, minlength=math.prod(grid))
                ukey = np.flatnonzero(full)
                counts = full[ukey]
            else:
                ukey, counts = np.unique(key, return_counts=True)
            out = (np.stack(np.unravel_index(ukey, grid)).astype(np.int64), counts, grid)
        if out[1].size <= self.BLOCK_CACHE_LIMIT:
            self._cache[ck] = out
        return out

    def _block_keys(self, box: tuple[int, ...], grid: tuple[int, ...]) -> np.ndarray | None:
        """Row-major block id of every nonzero (None when the grid overflows int64)."""
        if math.prod(grid) >= 1 << 62:
            return None
        key = np.zeros(self._coords.shape[1], dtype=np.int64)
        for r, (b, g) in enumerate(zip(box, grid)):
            key = key * g + self._coords[r] // b
        return key

    def _tile_counts(self, box: tuple[int, ...]) -> tuple[np.ndarray, int]:
        """(nonzeros of each nonempty tile, number of empty tiles)."""
        if self._tensor is not None:
            t = self._tensor
            box = tuple(max(1, min(int(b), e)) for b, e in zip(box, t.shape))
            pad = [(0, (-e) % b) for b, e in zip(box, t.shape)]
            if any(p[1] for p in pad):
                t = np.pad(t, pad)
            shp = []
            for e, b in zip(t.shape, box):
                shp += [e // b, b]
            counts = t.reshape(shp).sum(axis=tuple(range(1, 2 * len(box), 2)), dtype=np.int64).ravel()
            return counts[counts > 0], int((counts == 0).sum())
        _blocks, counts, grid = self.block_counts(box)
        return counts, math.prod(grid) - counts.size

    def distribution(self, shape, box=None, constraint=None):
        if box is None or len(box) != len(self.rank_extents) or math.prod(box) != shape:
            box = _box_for(shape, self.rank_extents)
        key = (tuple(box), constraint)
        if key not in self._cache:
            counts, empty = self._tile_counts(tuple(box))
            if constraint is not None and constraint[0] > 0:
                # Tiles drawn from an enclosing tile of known occupancy: scale the histogram's mean.
                total = counts.size + empty
                counts, empty = np.full(total, int(round(shape * constraint[1] / constraint[0]))), 0
            k, c = np.unique(counts, return_counts=True)
            if empty:
                k, c = np.concatenate(([0], k)), np.concatenate(([empty], c))
            self._cache[key] = (k, c / c.sum())
        return self._cache[key]


def _box_for(shape: int, extents: tuple[int, ...]) -> tuple[int, ...]:
    """A box of ``shape`` elements filled innermost rank first (used when only a size is known)."""
    box, left = [1] * len(extents), int(shape)
    for i in range(len(extents) - 1, -1, -1):
        take = math.gcd(left, extents[i]) if left % extents[i] else extents[i]
        take = min(take, left)
        box[i], left = take, left // take
    return tuple(box)


def make_density(spec, where: str, base_dir: Path | None = None) -> Density:
    """A density model from a problem's ``densities`` entry (number or mapping)."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return _checked(FixedStructured(float(spec)), where)
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: a density is a number or a mapping with 'distribution'")
    allowed = {"distribution", "density", "data_file_path", "workload_tensor_size", "levels", "rank", "shared_rows",
               "!"}
    for k in spec:
        if k not in allowed:
            raise ValueError(f"{where}: unknown key {k!r} in a density; valid keys: "
                             f"{', '.join(sorted(allowed - {'!'}))}")
    dist = str(spec.get("distribution", "fixed-structured"))
    if dist in ("fixed", "fixed-structured"):
        return _checked(FixedStructured(float(spec.get("density", 1.0))), where)
    if dist == "hypergeometric":
        return _checked(Hypergeometric(float(spec["density"])) if "density" in spec else _missing(where), where)
    if dist in ("hss", "hierarchical-structured"):
        levels = spec.get("levels")
        if not isinstance(levels, list) or not levels:
            raise ValueError(f"{where}: an hss density needs 'levels': [[G1, H1], [G0, H0]] (outer first)")
        return HSS([tuple(x) for x in levels], int(spec.get("rank", -1)), int(spec.get("shared_rows", 1)))
    if dist in ("real-data", "actual-data", "actual_data"):
        if "data_file_path" not in spec:
            raise ValueError(f"{where}: a {dist} density needs 'data_file_path'")
        path = Path(str(spec["data_file_path"]))
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return ActualData(path)
    raise ValueError(f"{where}: unsupported density distribution {dist!r}; "
                     "valid: fixed-structured, hypergeometric, hss, actual-data")


def _missing(where: str):
    raise ValueError(f"{where}: a hypergeometric density needs 'density'")


def _checked(d: Density, where: str) -> Density:
    if not 0.0 <= d.density <= 1.0:
        raise ValueError(f"{where}: density must be in [0, 1], got {d.density}")
    return d
