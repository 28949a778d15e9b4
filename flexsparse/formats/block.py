"""Block-sparse matrices (BSR-like) and the shared base of the structured formats.

Layout of :class:`BlockSparse` for a logical matrix ``W`` of shape ``(M, K)`` with block
``(r, c)`` (``1 <= r, c <= 128``); ``K`` is the reduction axis:

* ``indptr:  int64[ceil(M/r) + 1]`` -- CSR row pointer over *block rows*;
* ``indices: int32[n_blocks]``      -- block-column ids, sorted and unique within a block row;
* ``values:  [n_blocks, r, c]``     -- C-contiguous float32/float64 blocks.

Edges: ``M`` and ``K`` need not be multiples of the block. The logical ``shape`` is kept and
storage pads with zeros to whole blocks (block grid ``ceil(M/r) x ceil(K/c)``); the padding
must hold zeros (``validate`` checks it), is never visible (``todense`` returns the logical
shape) and products ignore it.

Products (``matmul``, ``linear``, ``linear_grad_input``, ``sampled_grad``) run the numba
kernels of :mod:`flexsparse.kernels.cpu.block` (register-tiled; ``linear`` reads ``X`` in
place against a cached copy of the blocks transposed (``_tvals_cache``, ``[n_blocks, c, r]``)
when ``r`` fills a 64-byte register or the batch is small, else between two threaded
transposes; ``linear_grad_input`` likewise, as ``linear`` of ``W.T`` whose transposed blocks
are the blocks in column order): cost ``O(n_blocks * r * c * N)``
flops, i.e. proportional to the number of stored blocks. Above a measured crossover density the
products switch to dense BLAS on a dense copy computed once and cached on the object
(``_dense_cache``; memory ``M * K`` values), so a dense layout never costs more than dense.

>>> import numpy as np
>>> W = np.zeros((5, 6), dtype=np.float32); W[0, 0] = 1; W[4, 5] = 2
>>> B = BlockSparse.from_dense(W, (2, 4))
>>> B
<BlockSparse shape=(5, 6) nnz=10 density=33.3% dtype=float32 block=(2, 4) n_blocks=2>
>>> np.array_equal(B.todense(), W)
True
>>> X = np.ones((6, 3), dtype=np.float32)
>>> np.allclose(B @ X, W @ X)
True
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from flexsparse import _limits
from flexsparse.formats.base import SparseArray, dense_bytes_check, is_identity_2d

__all__ = ["BlockSparse", "StructuredMatrix", "check_float_dtype"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_BACKENDS = ("auto", "sparse", "dense")


def check_float_dtype(dtype: Any, what: str = "values") -> np.dtype:
    """Return the dtype if it is float32/float64, else raise ``TypeError``.

    >>> check_float_dtype(np.float32)
    dtype('float32')
    >>> check_float_dtype(np.int64)
    Traceback (most recent call last):
    ...
    TypeError: values has dtype int64; structured formats support float32 and float64 only
    """
    dt = np.dtype(dtype)
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"{what} has dtype {dt}; structured formats support float32 and float64 only")
    return dt


class StructuredMatrix(SparseArray):
    """Shared behaviour of :class:`BlockSparse`, ``HSS`` and ``NM`` (a 2-D ``(M, K)`` matrix).

    Subclasses provide ``_todense``, ``_coo_parts`` (rows, cols, vals of stored slots inside
    the logical shape), ``nnz``, ``values``, ``with_values``, ``from_coo``, ``_sparse_*``
    kernel launchers and ``DENSE_CROSSOVER`` (the density above which dense BLAS is used).

    ``backend`` selects how products run: ``"auto"`` (sparse kernel below the crossover
    density, cached dense BLAS above), ``"sparse"`` or ``"dense"``.

    Values are float32 or float64 only: ``astype`` to another dtype, or building from
    integer/complex data, raises ``TypeError``. Arithmetic that leaves the pattern (``W + W2``,
    ``W * 1j``, a transpose of N:M/HSS) returns a :class:`~flexsparse.formats.coo.COO`.
    """

    general = False
    DENSE_CROSSOVER: float = 1.0
    #: makes ``ndarray @ W`` defer to ``W.__rmatmul__`` instead of NumPy's matmul ufunc
    __array_ufunc__ = None
    shape: tuple[int, int]
    values: np.ndarray

    # ---------------------------------------------------------------- basics
    @property
    def dtype(self) -> np.dtype:
        """Value dtype (float32 or float64)."""
        return self.values.dtype

    @property
    def nnz(self) -> int:
        """Stored kept slots inside the logical shape."""
        return int(self._coo_parts()[0].shape[0])

    def todense(self, max_bytes: int | None = None) -> np.ndarray:
        """Dense ``(M, K)`` array (padding dropped; size-guarded like :meth:`COO.todense`)."""
        dense_bytes_check(self.shape, self.dtype, max_bytes)
        return self._todense()

    def _data(self) -> np.ndarray:
        return self.values

    def _with_data(self, data: np.ndarray):
        return self.with_values(np.asarray(data).reshape(self.values.shape))

    @property
    def backend(self) -> str:
        """``"auto"``, ``"sparse"`` or ``"dense"`` (see class docstring)."""
        return getattr(self, "_backend", "auto")

    @backend.setter
    def backend(self, name: str) -> None:
        if name not in _BACKENDS:
            raise ValueError(f"unknown backend {name!r}; valid backends: {', '.join(_BACKENDS)}")
        self._backend = name

    def _use_dense(self) -> bool:
        if self.backend == "auto":
            return self.density >= self.DENSE_CROSSOVER
        return self.backend == "dense"

    def _dense(self) -> np.ndarray:
        """Dense copy used by the BLAS fallback: computed once, cached (``M * K`` values)."""
        cache = getattr(self, "_dense_cache", None)
        if cache is None:
            cache = np.ascontiguousarray(self.todense())
            self._dense_cache = cache
        return cache

    def invalidate_cache(self) -> None:
        """Drop the cached dense copy; call it after writing to ``values`` in place."""
        self._dense_cache = None

    def count_nonzero(self) -> int:
        """Number of stored values that are actually nonzero."""
        return int(np.count_nonzero(self.values))

    def to_coo(self):
        """Nonzero entries as a :class:`flexsparse.formats.coo.COO` (explicit zeros dropped)."""
        from flexsparse._util import index_dtype_for
        from flexsparse.formats.coo import COO

        rows, cols, vals = self._coo_parts()
        keep = vals != 0
        coords = np.stack([rows[keep], cols[keep]]).astype(index_dtype_for(self.shape))
        return COO(coords, vals[keep].copy(), tuple(self.shape))

    def to_scipy(self, format: str = "csr"):
        """SciPy sparse array (``"csr"``, ``"coo"`` or ``"bsr"``) holding the stored slots."""
        import scipy.sparse as sp

        rows, cols, vals = self._coo_parts()
        coo = sp.coo_array((vals, (rows, cols)), shape=self.shape)
        if format == "coo":
            return coo
        if format == "csr":
            return coo.tocsr()
        if format == "bsr":
            return coo.tobsr()
        raise ValueError(f"unknown scipy format {format!r}; valid formats: bsr, coo, csr")

    def to_torch(self, layout: str = "sparse"):
        """A torch tensor: ``layout="sparse"`` (sparse CSR) or ``"dense"``."""
        try:
            import torch
        except ImportError as e:  # optional dependency
            raise ImportError("to_torch needs PyTorch: pip install flexsparse[torch]") from e
        if layout == "dense":
            return torch.from_numpy(np.ascontiguousarray(self.todense()))
        if layout != "sparse":
            raise ValueError(f"unknown torch layout {layout!r}; valid layouts: dense, sparse")
        csr = self.to_scipy("csr")
        return torch.sparse_csr_tensor(torch.from_numpy(csr.indptr.astype(np.int64)),
                                       torch.from_numpy(csr.indices.astype(np.int64)),
                                       torch.from_numpy(csr.data), size=self.shape,
                                       check_invariants=True)

    # ------------------------------------------------------------- products
    def _check_rows(self, X: np.ndarray, want: int, axis: int, op: str, xname: str) -> None:
        if X.shape[axis] != want:
            raise ValueError(f"{op}: shape mismatch between W {tuple(self.shape)} and "
                             f"{xname} {tuple(X.shape)}")

    def _operand(self, X: Any, name: str) -> np.ndarray:
        X = np.asarray(X)
        if X.dtype.kind not in "biuf":
            raise TypeError(f"{name} has dtype {X.dtype}; expected a real numeric array")
        dt = np.result_type(self.dtype, X.dtype)
        dt = dt if dt in _FLOAT_DTYPES else np.dtype(np.float64)
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got shape {X.shape}")
        return np.ascontiguousarray(X, dtype=dt)

    def _vals(self, dt: np.dtype) -> np.ndarray:
        return self.values if self.values.dtype == dt else self.values.astype(dt)

    def matmul(self, X: Any) -> np.ndarray:
        """``W @ X`` for dense ``X: [K, N]`` -> ``[M, N]``."""
        X = self._operand(X, "X")
        self._check_rows(X, self.shape[1], 0, "matmul", "X")
        if self._use_dense():
            return self._dense().astype(X.dtype, copy=False) @ X
        return self._sparse_matmul(X)

    def tmatmul(self, Y: Any) -> np.ndarray:
        """``W.T @ Y`` without forming ``W.T``: dense ``Y: [M, N]`` -> ``[K, N]``."""
        Y = self._operand(Y, "Y")
        self._check_rows(Y, self.shape[0], 0, "tmatmul", "Y")
        if self._use_dense():
            return self._dense().astype(Y.dtype, copy=False).T @ Y
        return self._sparse_tmatmul(Y)

    def linear(self, X: Any, bias: Any = None) -> np.ndarray:
        """``X @ W.T (+ bias)`` (``nn.Linear`` forward): ``X: [B, K]``, ``bias: [M]`` -> ``[B, M]``."""
        X = self._operand(X, "X")
        self._check_rows(X, self.shape[1], 1, "linear", "X")
        if bias is not None:
            bias = np.asarray(bias)
            if bias.shape != (self.shape[0],):
                raise ValueError(f"linear: bias must have shape ({self.shape[0]},), got {bias.shape}")
            bias = bias.astype(X.dtype, copy=False)
        if self._use_dense():
            # (W @ X.T).T: OpenBLAS ran X @ W.T 1.35x slower than W @ X for X [256, 4096],
            # W [4096, 4096] (bench machine); this orientation matches W @ X.
            out = np.ascontiguousarray((self._dense().astype(X.dtype, copy=False) @ X.T).T)
        else:
            out = self._sparse_linear(X, bias)
            bias = None  # added by the kernel
        if bias is not None:
            out += bias
        return out

    def linear_grad_input(self, dY: Any) -> np.ndarray:
        """``dY @ W`` (input gradient of ``linear``): ``dY: [B, M]`` -> ``[B, K]``."""
        dY = self._operand(dY, "dY")
        self._check_rows(dY, self.shape[0], 1, "linear_grad_input", "dY")
        if self._use_dense():
            return dY @ self._dense().astype(dY.dtype, copy=False)
        return self._sparse_linear_grad_input(dY)

    def _sparse_linear_grad_input(self, dY: np.ndarray) -> np.ndarray:
        """``dY @ W`` by ``W.T @ dY.T`` between two threaded transposes."""
        from flexsparse.kernels.cpu.lanes import transpose

        return transpose(self._sparse_tmatmul(transpose(dY)))

    def sampled_grad(self, dY: Any, X: Any) -> np.ndarray:
        """Weight gradient on kept slots only: ``dY: [B, M]``, ``X: [B, K]``.

        Returns an array shaped like ``values`` whose slot for logical position ``(m, k)``
        is ``sum_b dY[b, m] * X[b, k]``; padding slots get 0.
        """
        dY = self._operand(dY, "dY")
        X = self._operand(X, "X")
        self._check_rows(dY, self.shape[0], 1, "sampled_grad", "dY")
        self._check_rows(X, self.shape[1], 1, "sampled_grad", "X")
        if dY.shape[0] != X.shape[0]:
            raise ValueError(f"sampled_grad: batch sizes differ: dY {dY.shape} vs X {X.shape}")
        dt = np.result_type(dY.dtype, X.dtype)
        return self._sparse_sampled(np.ascontiguousarray(dY, dtype=dt), np.ascontiguousarray(X, dtype=dt))

    def _sparse_linear(self, X: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """``X @ W.T (+ bias)`` by the ``W @ X`` kernel between two threaded transposes."""
        from flexsparse.kernels.cpu.lanes import transpose

        out = transpose(self._sparse_matmul(transpose(X)))
        if bias is not None:
            out += bias
        return out


class BlockSparse(StructuredMatrix):
    """Block-sparse matrix; see the module docstring for the layout.

    Args:
        indptr: ``int64[ceil(M/r) + 1]`` block-row pointer.
        indices: ``int32[n_blocks]`` block-column ids (sorted, unique within a block row).
        values: ``[n_blocks, r, c]`` float32/float64 blocks (padding slots hold 0).
        shape: logical ``(M, K)``.
        block: ``(r, c)`` with ``1 <= r, c <= 128``.
    """

    format = "block"
    #: Density (stored slots / M*K) at which dense BLAS becomes faster than the block kernel
    #: (the measurement is in :mod:`flexsparse._limits`).
    DENSE_CROSSOVER = _limits.BLOCK_DENSE_CROSSOVER

    def __init__(self, indptr: Any, indices: Any, values: Any, shape: tuple[int, int],
                 block: tuple[int, int]):
        self.shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
        self.block = tuple(int(b) for b in block)  # type: ignore[assignment]
        self.indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        self.indices = np.ascontiguousarray(indices, dtype=np.int32)
        values = np.asarray(values)
        check_float_dtype(values.dtype, "values")
        self.values = np.ascontiguousarray(values)
        self.validate()

    # ----------------------------------------------------------- structure
    @property
    def grid(self) -> tuple[int, int]:
        """Block grid ``(ceil(M/r), ceil(K/c))``."""
        (M, K), (r, c) = self.shape, self.block
        return (-(-M // r), -(-K // c))

    @property
    def n_blocks(self) -> int:
        return int(self.indices.shape[0])

    @property
    def block_rows(self) -> np.ndarray:
        """Block-row id of every stored block: ``int64[n_blocks]``."""
        return np.repeat(np.arange(self.grid[0], dtype=np.int64), np.diff(self.indptr))

    @property
    def nnz(self) -> int:
        """Stored slots inside the logical shape (blocks clipped at the edges)."""
        (M, K), (r, c) = self.shape, self.block
        hs = np.minimum(r, M - self.block_rows * r)
        ws = np.minimum(c, K - self.indices.astype(np.int64) * c)
        return int(np.sum(hs * ws))

    @property
    def block_density(self) -> float:
        """Fraction of the block grid that is stored."""
        gm, gk = self.grid
        return self.n_blocks / (gm * gk) if gm * gk else 0.0

    @property
    def nbytes(self) -> int:
        """Bytes of values + indptr + indices."""
        return int(self.values.nbytes + self.indptr.nbytes + self.indices.nbytes)

    def block_mask(self) -> np.ndarray:
        """Bool ``[ceil(M/r), ceil(K/c)]``: which blocks are stored."""
        mask = np.zeros(self.grid, dtype=bool)
        mask[self.block_rows, self.indices] = True
        return mask

    def validate(self) -> None:
        """Check the layout; raise ``ValueError``/``TypeError`` naming the problem."""
        (M, K), block = self.shape, self.block
        if len(self.shape) != 2 or M < 0 or K < 0:
            raise ValueError(f"shape must be two non-negative ints, got {self.shape}")
        if len(block) != 2 or not all(1 <= b <= 128 for b in block):
            raise ValueError(f"block must be (r, c) with 1 <= r, c <= 128, got {block}")
        r, c = block
        gm, gk = self.grid
        check_float_dtype(self.values.dtype, "values")
        if self.indptr.shape != (gm + 1,):
            raise ValueError(f"indptr must have shape ({gm + 1},) = ceil(M/r)+1, got {self.indptr.shape}")
        if self.indptr[0] != 0 or np.any(np.diff(self.indptr) < 0):
            raise ValueError("indptr must start at 0 and be non-decreasing")
        nb = int(self.indptr[-1])
        if self.indices.shape != (nb,):
            raise ValueError(f"indices must have shape ({nb},) = (indptr[-1],), got {self.indices.shape}")
        if self.values.shape != (nb, r, c):
            raise ValueError(f"values must have shape ({nb}, {r}, {c}) = [n_blocks, r, c], "
                             f"got {self.values.shape}")
        if nb and (self.indices.min() < 0 or self.indices.max() >= gk):
            raise ValueError(f"indices must lie in [0, {gk}) = [0, ceil(K/c))")
        if nb > 1:
            same_row = np.diff(self.block_rows) == 0
            if np.any(same_row & (np.diff(self.indices.astype(np.int64)) <= 0)):
                raise ValueError("indices must be sorted and unique within each block row")
        if nb and M % r:
            last = self.values[self.indptr[gm - 1]:]
            if np.any(last[:, M % r:, :] != 0):
                raise ValueError("padding rows of the last block row must hold zeros")
        if nb and K % c:
            edge = self.values[self.indices == gk - 1]
            if np.any(edge[:, :, K % c:] != 0):
                raise ValueError("padding columns of the last block column must hold zeros")

    # -------------------------------------------------------- constructors
    @classmethod
    def from_dense(cls, W: Any, block: tuple[int, int] | int, layout: Any = None) -> BlockSparse:
        """Build from a dense ``(M, K)`` array.

        Args:
            W: dense float32/float64 matrix.
            block: ``(r, c)`` or an int for square blocks.
            layout: optional bool block mask ``[ceil(M/r), ceil(K/c)]``: exactly these blocks
                are stored (values outside it are dropped). Default: every block holding a
                nonzero.
        """
        W = np.asarray(W)
        check_float_dtype(W.dtype, "W")
        if W.ndim != 2:
            raise ValueError(f"W must be 2-D, got shape {W.shape}")
        block = (block, block) if isinstance(block, (int, np.integer)) else tuple(block)
        if len(block) != 2 or not all(1 <= int(b) <= 128 for b in block):
            raise ValueError(f"block must be (r, c) with 1 <= r, c <= 128, got {block}")
        r, c = int(block[0]), int(block[1])
        M, K = W.shape
        gm, gk = -(-M // r), -(-K // c)
        padded = np.zeros((gm * r, gk * c), dtype=W.dtype)
        padded[:M, :K] = W
        tiles = padded.reshape(gm, r, gk, c).transpose(0, 2, 1, 3)  # [gm, gk, r, c]
        if layout is None:
            mask = np.any(tiles != 0, axis=(2, 3))
        else:
            mask = np.asarray(layout)
            if mask.shape != (gm, gk):
                raise ValueError(f"layout must have shape ({gm}, {gk}) = [ceil(M/r), ceil(K/c)], "
                                 f"got {mask.shape}")
            mask = mask.astype(bool)
        brow, bcol = np.nonzero(mask)
        indptr = np.zeros(gm + 1, dtype=np.int64)
        np.cumsum(np.bincount(brow, minlength=gm), out=indptr[1:])
        values = np.ascontiguousarray(tiles[brow, bcol])
        return cls(indptr, bcol.astype(np.int32), values, (M, K), (r, c))

    def with_values(self, values: Any) -> BlockSparse:
        """Same structure, new ``values`` (``[n_blocks, r, c]``)."""
        return BlockSparse(self.indptr, self.indices, values, self.shape, self.block)

    def _repr_extra(self) -> str:
        return f"block={self.block} n_blocks={self.n_blocks}"

    @classmethod
    def from_coo(cls, coo, block: tuple[int, int] | int = (1, 1), layout: Any = None) -> BlockSparse:
        """Build from a 2-D COO (through its dense form: O(M * K)); see :meth:`from_dense`."""
        return cls.from_dense(coo.todense(), block, layout)

    def transpose(self, axes=None) -> BlockSparse:
        """The transpose: a BlockSparse with ``(c, r)`` blocks, each block transposed (O(nnz))."""
        if is_identity_2d(axes):
            return self
        gk = self.grid[1]
        rows = self.block_rows
        order = np.lexsort((rows, self.indices))  # by block column, then block row
        indptr = np.zeros(gk + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.indices, minlength=gk), out=indptr[1:])
        values = np.ascontiguousarray(self.values[order].transpose(0, 2, 1))
        return BlockSparse(indptr, rows[order].astype(np.int32), values, self.shape[::-1], self.block[::-1])

    # ---------------------------------------------------------- conversion
    def _todense(self) -> np.ndarray:
        (M, K), (r, c) = self.shape, self.block
        gm, gk = self.grid
        tiles = np.zeros((gm, gk, r, c), dtype=self.dtype)
        tiles[self.block_rows, self.indices] = self.values
        return tiles.transpose(0, 2, 1, 3).reshape(gm * r, gk * c)[:M, :K].copy()

    def _coo_parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        (M, K), (r, c) = self.shape, self.block
        br = self.block_rows
        rows = (br[:, None, None] * r + np.arange(r)[None, :, None]) + np.zeros((1, 1, c), np.int64)
        cols = (self.indices.astype(np.int64)[:, None, None] * c + np.arange(c)[None, None, :]
                + np.zeros((1, r, 1), np.int64))
        inside = (rows < M) & (cols < K)
        return rows[inside], cols[inside], self.values[inside]

    def to_scipy(self, format: str | None = None):
        """SciPy ``bsr_array`` (needs ``M % r == K % c == 0``), ``csr_array`` or ``coo_array``.

        The default is ``"bsr"`` when the shape is a multiple of the block, else ``"csr"``.
        """
        (M, K), (r, c) = self.shape, self.block
        if format is None:
            format = "csr" if M % r or K % c else "bsr"
        if format != "bsr":
            return super().to_scipy(format)
        import scipy.sparse as sp

        if M % r or K % c:
            raise ValueError(f"scipy BSR needs the shape {self.shape} to be a multiple of the block "
                             f"{self.block}; use to_scipy('csr')")
        return sp.bsr_array((self.values, self.indices, self.indptr), shape=self.shape)

    def to_torch(self, layout: str = "sparse"):
        """Torch sparse BSR tensor when the shape is a multiple of the block, else sparse CSR."""
        (M, K), (r, c) = self.shape, self.block
        if layout != "sparse" or M % r or K % c:
            return super().to_torch(layout)
        try:
            import torch
        except ImportError as e:
            raise ImportError("to_torch needs PyTorch: pip install flexsparse[torch]") from e
        with warnings.catch_warnings():  # "BSR support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_bsr_tensor(torch.from_numpy(self.indptr),
                                           torch.from_numpy(self.indices.astype(np.int64)),
                                           torch.from_numpy(self.values), size=self.shape,
                                           check_invariants=True)

    def invalidate_cache(self) -> None:
        """Drop the cached dense copy and transposed blocks; call it after writing to ``values``
        in place."""
        super().invalidate_cache()
        self._tvals_cache = None

    def _tvals(self, dt: np.dtype) -> np.ndarray:
        """Blocks transposed, ``[n_blocks, c, r]`` in ``dt``, for the ``linear`` kernel: computed
        once, cached (memory: one more copy of ``values``)."""
        cache = getattr(self, "_tvals_cache", None)
        if cache is None or cache.dtype != dt:
            cache = np.ascontiguousarray(self._vals(dt).transpose(0, 2, 1))
            self._tvals_cache = cache
        return cache

    # -------------------------------------------------------------- kernels
    def _sparse_linear(self, X: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """``X @ W.T (+ bias)``: the direct kernel on the transposed blocks when a block row
        fills a register or the batch is small, else ``W @ X.T`` between two transposes."""
        if (self.block[0] * X.itemsize >= _limits.BLOCK_LINEAR_DIRECT_BYTES
                or X.shape[0] < _limits.BLOCK_LINEAR_DIRECT_MAX_ROWS):
            from flexsparse.kernels.cpu.block import run_linear

            return run_linear(self.indptr, self.indices, self._tvals(X.dtype), X, self.shape, bias)
        return super()._sparse_linear(X, bias)

    def _sparse_linear_grad_input(self, dY: np.ndarray) -> np.ndarray:
        """``dY @ W``: the direct ``linear`` kernel on ``W.T`` (its transposed blocks are these
        blocks in column order) under the same rule as :meth:`_sparse_linear`."""
        if (self.block[1] * dY.itemsize >= _limits.BLOCK_LINEAR_DIRECT_BYTES
                or dY.shape[0] < _limits.BLOCK_LINEAR_DIRECT_MAX_ROWS):
            from flexsparse.kernels.cpu.block import run_linear_grad_input

            return run_linear_grad_input(self.indptr, self.indices, self._vals(dY.dtype), dY, self.shape,
                                         self.block)
        return super()._sparse_linear_grad_input(dY)

    def _sparse_matmul(self, X: np.ndarray) -> np.ndarray:
        from flexsparse.kernels.cpu.block import run_matmul

        return run_matmul(self.indptr, self.indices, self._vals(X.dtype), X, self.shape, self.block)

    def _sparse_tmatmul(self, Y: np.ndarray) -> np.ndarray:
        from flexsparse.kernels.cpu.block import run_tmatmul

        return run_tmatmul(self.indptr, self.indices, self._vals(Y.dtype), Y, self.shape, self.block)

    def _sparse_sampled(self, dY: np.ndarray, X: np.ndarray) -> np.ndarray:
        from flexsparse.kernels.cpu.block import run_sampled

        return run_sampled(self.indptr, self.indices, dY, X, self.shape, self.block, self.values.dtype)
