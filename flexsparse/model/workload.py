"""Workloads for the accelerator model: operand density models and problem shapes.

A workload is one or more matrix products ``Z[m, n] = sum_k A[m, k] * B[k, n]`` (SpMSpM, or
SpMM with structured weights A and activations B) or a sparse tensor contraction over the
last mode of two tensors (FLAASH). Each operand is described by a density model:

* :class:`Uniform` (i.i.d. nonzeros, hypergeometric/binomial counts), :class:`Structured`
  (fixed G:H along the reduction dimension), :class:`HSS` (hierarchical G:H, outer level
  first), :class:`Banded` and :class:`PowerLaw` (Chung-Lu style, skewed row/column degrees);
* :class:`Actual`: real data (a ``flexsparse.formats.coo.COO``, a SciPy sparse matrix or a
  NumPy array); counts then come from the data, tile by tile.

Statistical models answer closed-form expectations and can draw a matching random matrix
(``sample``, O(nnz) time) for the tiled designs, which need per-tile occupancies.

>>> w = MatmulWorkload("golden", 8, 8, 8, Structured(2, 8), Structured(4, 8))
>>> w.algorithmic_macs, w.effectual_macs()
(512, 64.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Union

import numpy as np
import yaml

from flexsparse._limits import fits_int64

__all__ = [
    "Uniform", "Structured", "HSS", "Banded", "PowerLaw", "Actual", "DensityModel",
    "MatmulWorkload", "ContractionWorkload", "Workload", "as_actual", "operand_model",
    "load_workload", "list_workloads", "with_operands",
]


def _check_density(d: float, what: str) -> float:
    if isinstance(d, bool) or not isinstance(d, (int, float, np.floating, np.integer)):
        raise TypeError(f"{what} must be a number in [0, 1], got {type(d).__name__}")
    if not 0.0 <= float(d) <= 1.0:
        raise ValueError(f"{what} must be in [0, 1], got {d}")
    return float(d)


@dataclass(frozen=True)
class Uniform:
    """I.i.d. nonzeros of probability ``density``."""

    density: float = 1.0
    kind = "uniform"

    def __post_init__(self) -> None:
        _check_density(self.density, "Uniform.density")

    def sample(self, shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Random (rows, cols) with the model's statistics."""
        total = shape[0] * shape[1]
        nnz = int(round(self.density * total))
        lin = rng.choice(total, size=nnz, replace=False) if nnz < total else np.arange(total)
        return (lin // shape[1]).astype(np.int64), (lin % shape[1]).astype(np.int64)


@dataclass(frozen=True)
class Structured:
    """Fixed-structured ``g:h``: every group of ``h`` consecutive reduction-dim elements keeps ``g``."""

    g: int
    h: int
    kind = "structured"

    def __post_init__(self) -> None:
        ints = isinstance(self.g, (int, np.integer)) and isinstance(self.h, (int, np.integer))
        if not ints or not 0 <= self.g <= self.h or self.h < 1:
            raise ValueError(f"Structured needs integers 0 <= g <= h, h >= 1; got g={self.g}, h={self.h}")

    @property
    def density(self) -> float:
        """Fraction of nonzeros, g / h."""
        return self.g / self.h

    @property
    def levels(self) -> tuple[tuple[int, int], ...]:
        """HSS view: one level."""
        return ((self.g, self.h),)

    def sample(self, shape: tuple[int, int], rng: np.random.Generator, axis: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Random (rows, cols) keeping ``g`` of every ``h`` along ``axis``."""
        return HSS(((self.g, self.h),)).sample(shape, rng, axis)


@dataclass(frozen=True)
class HSS:
    """Hierarchical structured sparsity, ``levels`` outer first, e.g. ``((4, 6), (2, 4))`` = 4:6 -> 2:4."""

    levels: tuple[tuple[int, int], ...]
    kind = "hss"

    def __post_init__(self) -> None:
        lv = tuple(tuple(int(x) for x in p) for p in self.levels)
        if not lv or any(len(p) != 2 or not 0 <= p[0] <= p[1] or p[1] < 1 for p in lv):
            raise ValueError(f"HSS levels must be non-empty (G, H) pairs with 0 <= G <= H; got {self.levels!r}")
        object.__setattr__(self, "levels", lv)

    @property
    def density(self) -> float:
        """Product of G_i / H_i."""
        return float(np.prod([g / h for g, h in self.levels]))

    @property
    def block(self) -> int:
        """Elements spanned by one outermost group: product of H_i."""
        return int(np.prod([h for _, h in self.levels]))

    def sample(self, shape: tuple[int, int], rng: np.random.Generator, axis: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Random (rows, cols): inner level keeps G0 of H0 elements, each outer level G of H groups."""
        m, k = shape if axis == 1 else shape[::-1]
        kp = -(-k // self.block) * self.block
        mask = np.ones((m, kp), dtype=bool)
        span = 1
        for g, h in reversed(self.levels):  # inner first: groups of `span` elements, h per super-group
            keys = rng.random((m, kp // (span * h), h))
            keep = np.argsort(np.argsort(keys, axis=2), axis=2) < g
            mask &= np.repeat(keep.reshape(m, -1), span, axis=1)
            span *= h
        r, c = np.nonzero(mask[:, :k])
        return (r, c) if axis == 1 else (c, r)


@dataclass(frozen=True)
class Banded:
    """Nonzeros within ``width`` diagonals around the (scaled) main diagonal, ``fill`` of them kept."""

    width: int
    fill: float = 1.0
    kind = "banded"

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ValueError(f"Banded.width must be >= 1, got {self.width}")
        _check_density(self.fill, "Banded.fill")

    def density_for(self, shape: tuple[int, int]) -> float:
        """Expected density on a matrix of ``shape``."""
        return min(1.0, self.width / max(1, shape[1])) * self.fill

    def sample(self, shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Random (rows, cols) of the band."""
        m, n = shape
        rows = np.repeat(np.arange(m), self.width)
        centre = (np.arange(m) * n) // max(1, m)
        cols = np.repeat(centre - self.width // 2, self.width) + np.tile(np.arange(self.width), m)
        ok = (cols >= 0) & (cols < n) & (rng.random(rows.size) < self.fill)
        return rows[ok], cols[ok]


@dataclass(frozen=True)
class PowerLaw:
    """Skewed degrees: P(row of rank r) ~ (r+1)^-alpha, same for columns (Chung-Lu), ranks
    scattered by a random bijection; sampled by :func:`flexsparse.random`."""

    density: float
    alpha: float = 0.8
    kind = "powerlaw"

    def __post_init__(self) -> None:
        _check_density(self.density, "PowerLaw.density")
        if not 0 <= self.alpha < 3:
            raise ValueError(f"PowerLaw.alpha must be in [0, 3), got {self.alpha}")

    def sample(self, shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Random (rows, cols): ``round(density * m * n)`` distinct nonzeros drawn by
        :func:`flexsparse.random` (``distribution="powerlaw"``, the package's one generator)."""
        from flexsparse.formats.random import random

        m, n = shape
        t = random((m, n), nnz=int(round(self.density * m * n)), seed=rng, distribution="powerlaw",
                   alpha=self.alpha)
        return t.coords[0].astype(np.int64), t.coords[1].astype(np.int64)


@dataclass(frozen=True, eq=False)
class Actual:
    """Real data: per-mode coordinates ``coords [ndim, nnz]`` (int64) and ``shape``."""

    coords: np.ndarray
    shape: tuple[int, ...]
    kind = "actual"

    @property
    def nnz(self) -> int:
        """Stored nonzeros (duplicates removed)."""
        return int(self.coords.shape[1])

    @property
    def density(self) -> float:
        """nnz / number of cells."""
        cells = math.prod(self.shape)
        return self.nnz / cells if cells else 0.0


DensityModel = Union[Uniform, Structured, HSS, Banded, PowerLaw, Actual]


def as_actual(x: Any) -> Actual:
    """Adapt a ``COO`` (``.coords``/``.shape``), a SciPy sparse matrix or a NumPy array.

    Duplicate coordinates are merged and explicit zeros dropped (they are not work).

    >>> as_actual(np.array([[0, 1.5], [0, 0]])).coords.tolist()
    [[0], [1]]
    """
    if isinstance(x, Actual):
        return x
    if hasattr(x, "coords") and hasattr(x, "shape") and hasattr(x, "data") and not hasattr(x, "tocoo"):
        coords = np.asarray(x.coords, dtype=np.int64)
        data = np.asarray(x.data)
        shape = tuple(int(s) for s in x.shape)
        if coords.ndim != 2 or coords.shape[0] != len(shape):
            raise ValueError(f"coords must be [ndim={len(shape)}, nnz], got shape {coords.shape}")
        keep = data != 0
        coords = coords[:, keep]
    else:
        import scipy.sparse as sp
        if isinstance(x, np.ndarray) and x.ndim != 2:
            coords = np.stack(np.nonzero(x)).astype(np.int64).reshape(x.ndim, -1)
            shape = x.shape
        elif isinstance(x, np.ndarray) or sp.issparse(x):
            m = sp.coo_array(x)
            m.sum_duplicates()
            m.eliminate_zeros()
            coords, shape = np.stack([m.row, m.col]).astype(np.int64), tuple(int(s) for s in m.shape)
        else:
            raise TypeError(f"expected a COO tensor, a SciPy sparse matrix or a NumPy array, got {type(x).__name__}")
    if coords.shape[1]:
        lin = np.ravel_multi_index(tuple(coords), shape) if fits_int64(*shape) else None
        if lin is not None:
            order = np.unique(lin)
            coords = np.stack(np.unravel_index(order, shape)).astype(np.int64)
    return Actual(coords=coords, shape=tuple(int(s) for s in shape))


def operand_model(x: Any) -> DensityModel:
    """A density model from a model object, a float density, a dict spec or actual data."""
    if isinstance(x, (Uniform, Structured, HSS, Banded, PowerLaw, Actual)):
        return x
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return Uniform(float(x))
    if isinstance(x, dict):
        spec = dict(x)
        kind = spec.pop("kind", "uniform")
        makers = {"uniform": Uniform, "dense": lambda: Uniform(1.0), "structured": Structured,
                  "banded": Banded, "powerlaw": PowerLaw,
                  "hss": lambda levels: HSS(tuple(tuple(p) for p in levels))}
        if kind not in makers:
            raise ValueError(f"unknown density model {kind!r}; valid: {', '.join(makers)}")
        try:
            return makers[kind](**spec)
        except TypeError as exc:
            raise ValueError(f"bad parameters for density model {kind!r}: {exc}") from None
    if hasattr(x, "pattern") and hasattr(x.pattern, "levels"):  # flexsparse HSS format
        return HSS(tuple(tuple(p) for p in x.pattern.levels))
    return as_actual(x)


def _density_of(model: DensityModel, shape: tuple[int, int]) -> float:
    return model.density_for(shape) if isinstance(model, Banded) else model.density


@dataclass(frozen=True)
class MatmulWorkload:
    """``count`` repetitions of ``Z[m, n] = A[m, k] @ B[k, n]``; A is the weight/left operand."""

    name: str
    m: int
    k: int
    n: int
    a: DensityModel = field(default_factory=Uniform)
    b: DensityModel = field(default_factory=Uniform)
    count: int = 1
    weights: bool = True  # False: A is an activation (attention), weight sparsity does not apply

    def __post_init__(self) -> None:
        for key in ("m", "k", "n", "count"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"workload {self.name!r}: {key} must be a positive integer, got {v!r}")
        object.__setattr__(self, "a", operand_model(self.a))
        object.__setattr__(self, "b", operand_model(self.b))
        for op, want in (("a", (self.m, self.k)), ("b", (self.k, self.n))):
            model = getattr(self, op)
            if isinstance(model, Actual) and model.shape != want:
                raise ValueError(f"workload {self.name!r}: operand {op.upper()} has shape {model.shape}, "
                                 f"expected {want} for m={self.m}, k={self.k}, n={self.n}")

    @classmethod
    def from_data(cls, a: Any, b: Any, name: str = "data") -> MatmulWorkload:
        """SpMSpM of two actual matrices; their inner sizes must agree."""
        A, B = as_actual(a), as_actual(b)
        if len(A.shape) != 2 or len(B.shape) != 2:
            raise ValueError(f"matmul operands must be 2-D, got shapes {A.shape} and {B.shape}")
        if A.shape[1] != B.shape[0]:
            raise ValueError(f"inner sizes differ: A is {A.shape}, B is {B.shape} "
                             f"(A.shape[1]={A.shape[1]} != B.shape[0]={B.shape[0]})")
        return cls(name, A.shape[0], A.shape[1], B.shape[1], A, B)

    @property
    def layers(self) -> tuple[MatmulWorkload, ...]:
        """A single product is its own only layer."""
        return (self,)

    @property
    def algorithmic_macs(self) -> int:
        """m * k * n * count (what a dense engine performs)."""
        return self.m * self.k * self.n * self.count

    @property
    def density_a(self) -> float:
        """Density of A."""
        return _density_of(self.a, (self.m, self.k))

    @property
    def density_b(self) -> float:
        """Density of B."""
        return _density_of(self.b, (self.k, self.n))

    def actual(self, op: str, seed: int = 0) -> Actual:
        """Operand ``op`` as data: itself when actual, else a seeded sample of its model."""
        model = getattr(self, op)
        if isinstance(model, Actual):
            return model
        shape = (self.m, self.k) if op == "a" else (self.k, self.n)
        rng = np.random.default_rng(seed + (0 if op == "a" else 1))
        if isinstance(model, (Structured, HSS)):
            r, c = model.sample(shape, rng, axis=1 if op == "a" else 0)
        else:
            r, c = model.sample(shape, rng)
        return Actual(np.stack([r, c]).astype(np.int64), shape)

    def k_profile(self, op: str) -> np.ndarray | None:
        """Nonzeros per reduction index k (A's columns / B's rows) for actual data, else None."""
        model = getattr(self, op)
        if not isinstance(model, Actual):
            return None
        axis = 1 if op == "a" else 0
        return np.bincount(model.coords[axis], minlength=self.k).astype(np.float64)

    def effectual_macs(self) -> float:
        """MACs whose two operands are both nonzero (sum over k of nnz(A[:, k]) * nnz(B[k, :]))."""
        pa, pb = self.k_profile("a"), self.k_profile("b")
        ca = pa if pa is not None else np.full(self.k, self.m * self.density_a)
        cb = pb if pb is not None else np.full(self.k, self.n * self.density_b)
        if pa is None and pb is None:
            return float(self.m * self.k * self.n * self.density_a * self.density_b * self.count)
        return float(np.dot(ca, cb) * self.count)


@dataclass(frozen=True)
class ContractionWorkload:
    """Contraction of ``A[i..., c]`` and ``B[j..., c]`` over the last mode (FLAASH jobs: one per (i, j))."""

    name: str
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    a: DensityModel = field(default_factory=Uniform)
    b: DensityModel = field(default_factory=Uniform)

    def __post_init__(self) -> None:
        object.__setattr__(self, "a_shape", tuple(int(s) for s in self.a_shape))
        object.__setattr__(self, "b_shape", tuple(int(s) for s in self.b_shape))
        if len(self.a_shape) < 1 or len(self.b_shape) < 1 or min(self.a_shape + self.b_shape) < 1:
            raise ValueError(f"contraction {self.name!r}: shapes must be non-empty with positive extents, "
                             f"got {self.a_shape} and {self.b_shape}")
        if self.a_shape[-1] != self.b_shape[-1]:
            raise ValueError(f"contraction {self.name!r}: last modes differ: A {self.a_shape} vs B {self.b_shape}")
        object.__setattr__(self, "a", operand_model(self.a))
        object.__setattr__(self, "b", operand_model(self.b))
        for op, want in (("a", self.a_shape), ("b", self.b_shape)):
            model = getattr(self, op)
            if isinstance(model, Actual) and model.shape != want:
                raise ValueError(f"contraction {self.name!r}: operand {op.upper()} has shape {model.shape}, "
                                 f"expected {want}")

    @property
    def layers(self) -> tuple[ContractionWorkload, ...]:
        """A single contraction is its own only layer."""
        return (self,)

    def as_matmul(self) -> MatmulWorkload:
        """The same contraction as A[I, c] @ B[J, c]^T (leading modes flattened)."""
        m, n, k = math.prod(self.a_shape[:-1]), math.prod(self.b_shape[:-1]), self.a_shape[-1]
        conv = []
        for model, shape in ((self.a, self.a_shape), (self.b, self.b_shape)):
            if isinstance(model, Actual):
                lead = np.ravel_multi_index(tuple(model.coords[:-1]), shape[:-1]) if len(shape) > 1 \
                    else np.zeros(model.nnz, np.int64)
                conv.append((lead, model.coords[-1]))
            else:
                conv.append(model)
        a = Actual(np.stack(conv[0]), (m, k)) if isinstance(conv[0], tuple) else conv[0]
        b = Actual(np.stack(conv[1][::-1]), (k, n)) if isinstance(conv[1], tuple) else conv[1]
        return MatmulWorkload(self.name, m, k, n, a, b)

    @property
    def algorithmic_macs(self) -> int:
        """prod(A leading) * prod(B leading) * contracted extent."""
        return math.prod(self.a_shape[:-1]) * math.prod(self.b_shape[:-1]) * self.a_shape[-1]


@dataclass(frozen=True)
class LayerList:
    """A named list of matrix products evaluated one after the other (a DNN)."""

    name: str
    layers: tuple[MatmulWorkload, ...]

    @property
    def algorithmic_macs(self) -> int:
        """Sum over layers."""
        return sum(w.algorithmic_macs for w in self.layers)


@dataclass(frozen=True)
class LayerListC:
    """A named list of contractions (the TCL shapes)."""

    name: str
    layers: tuple[ContractionWorkload, ...]

    @property
    def algorithmic_macs(self) -> int:
        """Sum over contractions."""
        return sum(w.algorithmic_macs for w in self.layers)


Workload = Union[MatmulWorkload, ContractionWorkload, LayerList, LayerListC]


def with_operands(w: Workload, a: Any = None, b: Any = None) -> Workload:
    """Copy of ``w`` with operand models replaced (weights only on layers with ``weights=True``)."""
    if isinstance(w, (LayerList, LayerListC)):
        return type(w)(w.name, tuple(with_operands(x, a, b) for x in w.layers))
    changes = {}
    if a is not None and getattr(w, "weights", True):
        changes["a"] = operand_model(a)
    if b is not None:
        changes["b"] = operand_model(b)
    return replace(w, **changes)


_LAYER_KEYS = {"name", "m", "k", "n", "count", "a", "b", "weights"}
_CONTR_KEYS = {"name", "a_shape", "b_shape", "a", "b"}


def list_workloads() -> list[str]:
    """Names of the shipped workload lists."""
    files = resources.files("flexsparse.model").joinpath("workloads").iterdir()
    return sorted(p.name[:-5] for p in files if p.name.endswith(".yaml"))


def load_workload(name_or_path: str | Path) -> Workload:
    """A shipped workload list (``"resnet50"``, ``"transformer"``, ``"tcl"``) or a YAML file.

    Unknown keys raise ``ValueError`` with the file line.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ValueError(f"workload file {str(path)!r} does not exist")
        text, src = path.read_text(), str(path)
    else:
        names = list_workloads()
        if str(name_or_path) not in names:
            raise ValueError(f"unknown workload {str(name_or_path)!r}; valid: {', '.join(names)}")
        text = resources.files("flexsparse.model").joinpath("workloads", f"{name_or_path}.yaml").read_text()
        src = f"workloads/{name_or_path}.yaml"
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ValueError(f"{src}: invalid YAML: {exc}") from exc
    if not isinstance(root, yaml.MappingNode):
        raise ValueError(f"{src}: a workload file is a mapping with 'name' and 'layers' or 'contractions'")
    data = yaml.safe_load(text)
    for knode, _ in root.value:
        if knode.value not in ("name", "layers", "contractions"):
            raise ValueError(f"{src}: line {knode.start_mark.line + 1}: unknown key {knode.value!r}; "
                             "valid keys: contractions, layers, name")
    layers, contr = [], []
    for knode, vnode in root.value:
        if knode.value not in ("layers", "contractions"):
            continue
        allowed = _LAYER_KEYS if knode.value == "layers" else _CONTR_KEYS
        for item in vnode.value:
            if not isinstance(item, yaml.MappingNode):
                raise ValueError(f"{src}: line {item.start_mark.line + 1}: each entry must be a mapping")
            for kk, _ in item.value:
                if kk.value not in allowed:
                    raise ValueError(f"{src}: line {kk.start_mark.line + 1}: unknown key {kk.value!r}; "
                                     f"valid keys: {', '.join(sorted(allowed))}")
            spec = yaml.safe_load(yaml.serialize(item))
            try:
                if knode.value == "layers":
                    layers.append(MatmulWorkload(**spec))
                else:
                    contr.append(ContractionWorkload(**spec))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{src}: line {item.start_mark.line + 1}: {exc}") from None
    name = str(data.get("name", path.stem))
    if contr and not layers:
        return contr[0] if len(contr) == 1 else LayerListC(name, tuple(contr))
    return LayerList(name, tuple(layers))
