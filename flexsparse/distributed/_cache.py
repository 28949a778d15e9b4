"""What a client keeps from one distributed product for the next: the B panels left on its
workers and the plans of its last products.

Both live on the ``distributed.Client`` object (attributes ``_flexsparse_panels`` and
``_flexsparse_plans``), so they go with it. A plan is found again by the contents of the
operands it depends on (:func:`content_key`: a hash of B, the panel the workers keep, and of
A's structure) together with the settings it was made for (the caller's key); a product whose
operands are too large to hash cheaply is planned every time.

Cost: hashing B (and A's structure when A is another matrix), O(nnz) at ~3 GB/s (xxhash,
through ``dask.base.tokenize``); a dictionary look-up per product.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["content_key", "kept_panels", "plans", "same_matrix"]


def _same_buffer(u: np.ndarray, v: np.ndarray) -> bool:
    return (u.dtype == v.dtype and u.shape == v.shape and u.strides == v.strides
            and u.__array_interface__["data"][0] == v.__array_interface__["data"][0])


def same_matrix(x: Any, y: Any) -> bool:
    """Whether CSR ``x`` and ``y`` hold the same matrix in the same buffers (``X @ X``)."""
    return (x.shape == y.shape and _same_buffer(x.indices, y.indices) and _same_buffer(x.data, y.data)
            and (x.indptr is y.indptr or np.array_equal(x.indptr, y.indptr)))


def kept_panels(client: Any) -> dict[tuple[str, str | None], Any]:
    """The B panels kept on ``client``'s workers after its last product ((content token, worker
    address or ``None`` for a broadcast copy) -> future)."""
    kept = getattr(client, "_flexsparse_panels", None)
    if kept is None:
        kept = client._flexsparse_panels = {}
    return kept


def plans(client: Any) -> dict[Any, tuple[float, dict[Any, Any]]]:
    """The last products run on ``client`` (:func:`content_key` -> ``(multiply-adds, {settings:
    plan})``: the workers, tile budget, strategy and first block's weight a plan was made for),
    least recently run first."""
    kept = getattr(client, "_flexsparse_plans", None)
    if kept is None:
        kept = client._flexsparse_plans = {}
    return kept


def content_key(A: Any, B: Any) -> tuple[dict[tuple[int, int, int, int], str], Any]:
    """``(panel digests, key)``: what the plan of ``A @ B`` (flexsparse CSR) depends on in the
    operands, or ``None`` when an operand exceeds
    :data:`~flexsparse._limits.DISTRIBUTED_KEEP_PANEL_BYTES`. The key holds the contents of B (the
    digest the runner takes of the whole-B panel to keep it on the workers, handed on so that it
    is not taken twice: ~0.4 ms for R-MAT scale 15) and the structure of A (nothing more for
    ``X @ X``); the digests map the whole-B panel's slot to its digest."""
    from dask.base import tokenize

    from flexsparse import _limits
    from flexsparse.distributed import _tasks

    k, n = B.shape
    if B.nbytes > _limits.DISTRIBUTED_KEEP_PANEL_BYTES or A.nbytes > _limits.DISTRIBUTED_KEEP_PANEL_BYTES:
        return {}, None
    whole = _tasks.block(B, 0, k, 0, n)
    digest = tokenize(whole.indptr, whole.indices, whole.data, whole.shape, whole.sorted_indices)
    a_digest = "self" if same_matrix(A, B) else tokenize(A.indptr, A.indices, A.shape)
    return {(0, k, 0, n): digest}, (digest, a_digest, A.shape, str(A.dtype), str(B.dtype))
