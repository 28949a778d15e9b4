"""Conversions between flexsparse COO/CSF and NumPy, SciPy, pydata/sparse and PyTorch.

Accepted inputs of :func:`as_coo`: :class:`~flexsparse.formats.coo.COO`,
:class:`~flexsparse.formats.fiber.CSF`, NumPy arrays and scalars, every SciPy sparse
matrix and sparse array class (coo, csr, csc, bsr, dia, lil, dok; N-D ``coo_array``),
pydata/sparse ``COO``/``GCXS``/``DOK`` (zero fill value), and torch tensors (dense,
``sparse_coo``, ``sparse_csr``/``csc``/``bsr``/``bsc``). Anything else raises TypeError
naming the type.

Cost: every conversion is O(nnz) vectorised copying (plus the foreign library's own
COO/CSR conversion); duplicates are kept as stored (``canonical`` is detected in O(ndim * nnz)),
explicit zeros are kept. Optional libraries (sparse, torch) are imported lazily.

>>> import numpy as np, scipy.sparse as sp
>>> t = as_coo(sp.csr_array(np.array([[0, 2], [3, 0]])))
>>> t
<COO shape=(2, 2) nnz=2 density=50% dtype=int64>
>>> to_scipy(t, "csc").toarray().tolist()
[[0, 2], [3, 0]]
"""

from __future__ import annotations

import numbers

import numpy as np

from flexsparse._util import check_numeric_dtype
from flexsparse.formats.coo import COO
from flexsparse.formats.fiber import CSF

__all__ = ["as_coo", "is_foreign_sparse", "from_numpy", "to_numpy", "from_scipy", "to_scipy", "from_pydata",
           "to_pydata", "from_torch", "to_torch", "SCIPY_FORMATS"]

#: Formats accepted by :func:`to_scipy`.
SCIPY_FORMATS = ("coo", "csr", "csc", "bsr", "dia", "lil", "dok")


def _module_root(x) -> str:
    return type(x).__module__.split(".")[0]


def _require(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # optional dependency
        raise ImportError(f"this conversion needs the '{module}' package: pip install flexsparse[{extra}]") from exc


# ---------------------------------------------------------------------- NumPy
def from_numpy(arr) -> COO:
    """COO of a dense NumPy array (any ndim, including 0-D)."""
    return COO.from_numpy(arr)


def to_numpy(x, max_bytes: int | None = None) -> np.ndarray:
    """Dense NumPy array of a COO/CSF (size-guarded, see :meth:`COO.todense`)."""
    if isinstance(x, (COO, CSF)):
        return x.todense(max_bytes=max_bytes)
    return as_coo(x).todense(max_bytes=max_bytes)


# ---------------------------------------------------------------------- SciPy
def from_scipy(m) -> COO:
    """COO of any SciPy sparse matrix or array (duplicates and explicit zeros kept).

    >>> import scipy.sparse as sp
    >>> from_scipy(sp.dia_matrix(np.eye(3))).coords.tolist()
    [[0, 1, 2], [0, 1, 2]]
    """
    import scipy.sparse as sp

    if not sp.issparse(m):
        raise TypeError(f"from_scipy expects a scipy.sparse matrix or array, got {type(m).__name__}")
    coo = m.tocoo()
    coords = np.vstack(coo.coords) if len(coo.coords) else np.zeros((0, coo.nnz), dtype=np.int64)
    return COO(coords, coo.data, tuple(int(s) for s in m.shape))


def to_scipy(t, format: str = "csr", *, matrix: bool = False):
    """SciPy sparse array (or ``np.matrix``-style sparse matrix if ``matrix=True``) of a COO.

    Args:
        t: COO (or anything :func:`as_coo` accepts).
        format: one of :data:`SCIPY_FORMATS`. Only ``"coo"`` supports ndim != 2 (as a
            SciPy N-D ``coo_array``).
        matrix: return the legacy ``*_matrix`` class instead of ``*_array``.
    """
    import scipy.sparse as sp

    t = as_coo(t)
    fmt = str(format).lower()
    if fmt not in SCIPY_FORMATS:
        raise ValueError(f"unknown scipy format {format!r}; valid formats: {', '.join(SCIPY_FORMATS)}")
    if t.ndim != 2 and (fmt != "coo" or matrix):
        raise ValueError(f"scipy format {fmt!r}{' matrix' if matrix else ''} needs a 2-D tensor, got shape "
                         f"{t.shape}; use format='coo' (N-D coo_array) or reshape")
    coords = tuple(t.coords.astype(np.int64) if t.shape and max(t.shape) >= 2**31 else t.coords)
    cls = sp.coo_matrix if matrix else sp.coo_array
    out = cls((t.data, coords), shape=t.shape)
    if t.canonical:
        out.has_canonical_format = True
    return out if fmt == "coo" else out.asformat(fmt)


# ---------------------------------------------------------------------- pydata/sparse
def from_pydata(x) -> COO:
    """COO of a pydata/sparse array (``COO``, ``GCXS``, ``DOK``...). Fill value must be 0."""
    sparse = _require("sparse", "peers")
    if not isinstance(x, sparse.SparseArray):
        raise TypeError(f"from_pydata expects a pydata sparse array, got {type(x).__name__}")
    check_numeric_dtype(x.dtype, "pydata array")
    fill = np.asarray(x.fill_value)
    if fill.shape != () or bool(fill != 0):  # nan fill values compare unequal: refused too
        raise ValueError(f"pydata array has fill_value {fill.item()!r}; only 0 is representable")
    c = x if isinstance(x, sparse.COO) else x.asformat("coo")
    return COO(np.asarray(c.coords), np.asarray(c.data), tuple(int(s) for s in c.shape))


def to_pydata(t, format: str = "coo"):
    """pydata/sparse array (``format`` = ``"coo"`` or ``"gcxs"``) of a COO."""
    sparse = _require("sparse", "peers")
    t = as_coo(t)
    fmt = str(format).lower()
    if fmt not in ("coo", "gcxs"):
        raise ValueError(f"unknown pydata format {format!r}; valid formats: coo, gcxs")
    out = sparse.COO(t.coords.astype(np.int64), t.data, shape=t.shape, has_duplicates=not t.canonical,
                     sorted=t.canonical)
    return out if fmt == "coo" else out.asformat("gcxs")


# ---------------------------------------------------------------------- torch
_TORCH_SPARSE_LAYOUTS = ("sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc")


def from_torch(x) -> COO:
    """COO of a torch tensor (dense or sparse layout; moved to CPU, detached)."""
    torch = _require("torch", "torch")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"from_torch expects a torch.Tensor, got {type(x).__name__}")
    x = x.detach().cpu()
    layout = str(x.layout).replace("torch.", "")
    if layout == "strided":
        return COO.from_numpy(x.resolve_conj().numpy())
    if layout not in _TORCH_SPARSE_LAYOUTS:
        raise TypeError(f"unsupported torch layout {x.layout}")
    if layout != "sparse_coo":
        x = x.to_sparse_coo()
    if x.dense_dim() != 0:
        raise ValueError(f"hybrid torch sparse tensors (dense_dim={x.dense_dim()}) are not supported; "
                         "call .to_dense() or reshape the dense dimensions into sparse ones")
    coalesced = x.is_coalesced()
    idx = x._indices().numpy()
    vals = x._values().resolve_conj().numpy()
    return COO(idx, vals, tuple(x.shape), canonical=True if coalesced else None)


def to_torch(t, layout: str = "coo"):
    """torch tensor of a COO: ``layout`` = ``"coo"`` (sparse COO), ``"csr"`` (2-D) or ``"dense"``."""
    torch = _require("torch", "torch")
    t = as_coo(t)
    lay = str(layout).lower()
    if lay not in ("coo", "csr", "dense"):
        raise ValueError(f"unknown torch layout {layout!r}; valid layouts: coo, csr, dense")
    if lay == "dense":
        return torch.from_numpy(t.todense())
    if lay == "csr" and t.ndim != 2:
        raise ValueError(f"torch CSR needs a 2-D tensor, got shape {t.shape}")
    # coords were validated by COO, so torch's invariant checks are redundant
    out = torch.sparse_coo_tensor(torch.from_numpy(t.coords.astype(np.int64)), torch.from_numpy(t.data.copy()),
                                  size=t.shape, is_coalesced=t.canonical, check_invariants=False)
    if lay == "csr":
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return out.to_sparse_csr()
    return out


# ---------------------------------------------------------------------- dispatcher
def is_foreign_sparse(x) -> bool:
    """True for the other libraries' tensors :func:`as_coo` converts: SciPy sparse matrices and
    arrays, pydata/sparse arrays and torch tensors (their own checks then name any problem).

    >>> import scipy.sparse as sp
    >>> is_foreign_sparse(sp.eye(2)), is_foreign_sparse(np.eye(2))
    (True, False)
    """
    root = _module_root(x)
    if root == "scipy":
        import scipy.sparse as sp

        return bool(sp.issparse(x))
    return root in ("sparse", "torch")


def as_coo(x) -> COO:
    """Convert any supported sparse or dense input to :class:`COO` (COO inputs returned as is).

    >>> as_coo(np.array([0.0, 5.0])).coords.tolist()
    [[1]]
    >>> as_coo([1, 2])
    Traceback (most recent call last):
    ...
    TypeError: cannot convert list to a flexsparse COO; expected COO, CSF, a NumPy array, ...
    """
    if isinstance(x, COO):
        return x
    if isinstance(x, CSF):
        return x.to_coo()
    if isinstance(x, (np.ndarray, np.generic)) or (isinstance(x, numbers.Number) and not isinstance(x, bool)):
        return COO.from_numpy(np.asarray(x))
    root = _module_root(x)
    if root == "scipy":
        import scipy.sparse as sp

        if sp.issparse(x):
            return from_scipy(x)
    elif root == "sparse":
        return from_pydata(x)
    elif root == "torch":
        return from_torch(x)
    raise TypeError(f"cannot convert {type(x).__name__} to a flexsparse COO; expected COO, CSF, a NumPy array, "
                    "a scipy.sparse matrix/array, a pydata sparse array or a torch tensor")
