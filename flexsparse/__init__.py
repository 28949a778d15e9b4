"""flexsparse: fast sparse tensors for the CPUs and GPUs people own.

* one base class, :class:`SparseArray`, for every format: n-D :class:`COO` and :class:`CSF`,
  2-D :class:`CSR`/:class:`CSC`, structured :class:`BlockSparse`, :class:`NM`, :class:`HSS`;
  conversions and file formats (one self-describing ``.npz``/directory format for results);
* a sparsity-aware :func:`einsum` (plus :func:`tensordot`, :func:`matmul`, :func:`einsum_path`)
  on parallel numba engines, with optional bounded memory (``memory_limit=``);
* structured sparsity (:class:`BlockSparse`, :class:`NM`, :class:`HSS`), :func:`prune`;
* :mod:`flexsparse.model`, an analytical model of sparse accelerators;
* :mod:`flexsparse.torch` (optional) and :mod:`flexsparse.gpu` (optional, Triton).

Names are resolved lazily (PEP 562): ``import flexsparse`` compiles nothing and reads no file.

>>> import numpy as np, flexsparse as fs
>>> a = fs.COO.from_numpy(np.eye(3))
>>> float(fs.einsum("ij,jk->ik", a, a, format="dense").trace())
3.0
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # formats
    "SparseArray": "flexsparse.formats.base",
    "COO": "flexsparse.formats.coo",
    "CSF": "flexsparse.formats.fiber",
    "CSR": "flexsparse.formats.csr",
    "CSC": "flexsparse.formats.csr",
    "as_coo": "flexsparse.formats.convert",
    "from_scipy": "flexsparse.formats.convert",
    "to_scipy": "flexsparse.formats.convert",
    "from_numpy": "flexsparse.formats.convert",
    "to_numpy": "flexsparse.formats.convert",
    "from_pydata": "flexsparse.formats.convert",
    "to_pydata": "flexsparse.formats.convert",
    "from_torch": "flexsparse.formats.convert",
    "to_torch": "flexsparse.formats.convert",
    "DenseTooLargeError": "flexsparse.formats.coo",
    "random": "flexsparse.formats.random",
    "rmat": "flexsparse.formats.random",
    "load": "flexsparse.formats.io",
    "save": "flexsparse.formats.io",
    # einsum
    "einsum": "flexsparse.contract.execute",
    "tensordot": "flexsparse.contract.execute",
    "matmul": "flexsparse.contract.execute",
    "einsum_path": "flexsparse.contract.plan",
    "free_buffers": "flexsparse.kernels.cpu._pool",
    # structured sparsity
    "BlockSparse": "flexsparse.formats.block",
    "NM": "flexsparse.formats.nm",
    "HSS": "flexsparse.formats.hss",
    "HSSPattern": "flexsparse.formats.hss",
    "prune": "flexsparse.prune",
    "prune_mask": "flexsparse.prune",
    "make_layout": "flexsparse.formats.layouts",
    "LAYOUTS": "flexsparse.formats.layouts",
    "register_layout": "flexsparse.formats.layouts",
    # bounded memory
    "MemoryLimitError": "flexsparse.tiling",
}

__all__ = ["__version__", *_EXPORTS]

# ``prune`` is also the name of a module: importing it later would rebind the package
# attribute to the module, so the function is bound eagerly here, and ``einsum`` with it
# (plain imports: nothing is compiled and no file is read). Importing the operator dispatch
# installs the operators of every format (see flexsparse.formats.base.register_dispatch).
import flexsparse.contract.dispatch  # noqa: E402,F401
from flexsparse.contract.execute import einsum  # noqa: E402,F401
from flexsparse.prune import prune  # noqa: E402,F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flexsparse' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
