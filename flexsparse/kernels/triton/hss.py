"""Triton kernels for HSS / N:M weights: ``A @ B``, ``A^T @ B`` and the sampled product.

The sparse operand A (logical ``(M, K)``) is given in its gather form: ``vals: [M, S]`` and
``cols: int32[M, S]`` with ``S = n_top * prod(G_i)`` kept slots per row (the HSS ``values``
flattened, and ``HSS.columns()``: ``col = t*span + sum_i positions[i]*stride_i``). Every row
holds exactly ``S`` slots, so the layout is ELLPACK-like and needs no row pointers. Slots
past ``K`` (ragged last group) hold 0 and their loads are masked.

Algorithms:

- ``matmul_hss_dense``: ``out[m, n] = sum_s vals[m, s] * B[cols[m, s], n]``. One program
  per (``BLOCK_M`` rows, ``BLOCK_N`` columns) tile; for each slot ``s`` it gathers the rows
  ``B[cols[:, s], n-tile]`` (contiguous along ``n`` when B is row-major) and does a rank-1
  style multiply-accumulate into a ``[BLOCK_M, BLOCK_N]`` accumulator. Cost
  ``2 * M * S * N`` flops (``density * dense``), traffic ``M*S*(1 + 4/itemsize)`` weight
  elements + ``M*S*BLOCK_N`` gathered B elements per N tile. Uses FMA units, not tensor
  cores: the kept columns differ per row, so there is no shared dense tile to ``tl.dot``.
- ``tmatmul_hss_dense``: ``out = A^T @ B`` (input gradient ``dY @ A``) from the transposed
  structure, built once per weight: CSR over the K columns (``t_indptr: int64[K+1]``),
  source row ``t_rows: int32[nnz]`` and ``t_perm: int64[nnz]`` into the flattened
  ``vals``. One program per (column k, ``BLOCK_N`` tile) walks its entries in chunks of
  ``BLOCK_P`` and reduces ``vals[perm] * B[rows, n-tile]``. Deterministic (no atomics).
- ``sampled_dense_dense_hss``: ``G[m, s] = sum_b D[b, m] * X[b, cols[m, s]]`` (weight
  gradient on the kept slots). One program per (``BLOCK_M`` rows, slot ``s``), looping
  over the batch in ``BLOCK_B`` tiles. Cost ``2 * M * S * batch`` flops.

Strides are passed for every dense operand, so ``X @ A^T`` runs as ``A @ X^T`` through a
transposed view without copies (the gathers are then strided; the wrappers in
:mod:`flexsparse.gpu` make the gathered operand contiguous along ``n`` first).
"""

try:  # the kernel bodies resolve ``tl`` from this module's globals when compiled
    import triton.language as tl
except ImportError:  # the wrappers raise a clear ImportError through require_triton()
    tl = None

from flexsparse.kernels.triton._runtime import acc_dtype, kernel_for, require_triton, use_interpreter

__all__ = ["matmul_hss_dense", "tmatmul_hss_dense", "sampled_dense_dense_hss", "transpose_structure"]


def _matmul_hss_dense_kernel(
        vals, cols, b, out, M, N, K, S,
        stride_vm, stride_cm, stride_bk, stride_bn, stride_om, stride_on,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for s in range(0, S):
        v = tl.load(vals + offs_m * stride_vm + s, mask=m_ok, other=0.0).to(ACC)     # [BLOCK_M]
        k = tl.load(cols + offs_m * stride_cm + s, mask=m_ok, other=0).to(tl.int64)  # [BLOCK_M]
        bg = tl.load(b + k[:, None] * stride_bk + offs_n[None, :] * stride_bn,
                     mask=(m_ok & (k < K))[:, None] & n_ok[None, :], other=0.0)      # [BLOCK_M, BLOCK_N]
        acc += v[:, None] * bg.to(ACC)
    tl.store(out + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on,
             acc.to(out.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def _tmatmul_hss_dense_kernel(
        t_indptr, t_rows, t_perm, vals, b, out, N,
        stride_bm, stride_bn, stride_ok, stride_on,
        BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    k = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    start = tl.load(t_indptr + k)
    end = tl.load(t_indptr + k + 1)
    acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=ACC)
    for p0 in range(start, end, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        p_ok = offs_p < end
        q = tl.load(t_perm + offs_p, mask=p_ok, other=0)                            # [BLOCK_P]
        m = tl.load(t_rows + offs_p, mask=p_ok, other=0).to(tl.int64)
        v = tl.load(vals + q, mask=p_ok, other=0.0).to(ACC)
        bg = tl.load(b + m[:, None] * stride_bm + offs_n[None, :] * stride_bn,
                     mask=p_ok[:, None] & n_ok[None, :], other=0.0)                  # [BLOCK_P, BLOCK_N]
        acc += v[:, None] * bg.to(ACC)
    res = tl.sum(acc, axis=0)                                                        # [BLOCK_N]
    tl.store(out + k * stride_ok + offs_n * stride_on, res.to(out.dtype.element_ty), mask=n_ok)


def _sampled_dense_dense_hss_kernel(
        cols, d, x, g, BATCH, M, K,
        stride_cm, stride_db, stride_dm, stride_xb, stride_xk, stride_gm,
        BLOCK_M: tl.constexpr, BLOCK_B: tl.constexpr, ACC: tl.constexpr):
    pid_m = tl.program_id(0)
    s = tl.program_id(1).to(tl.int64)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    m_ok = offs_m < M
    k = tl.load(cols + offs_m * stride_cm + s, mask=m_ok, other=0).to(tl.int64)      # [BLOCK_M]
    k_ok = m_ok & (k < K)
    acc = tl.zeros((BLOCK_B, BLOCK_M), dtype=ACC)
    for b0 in range(0, BATCH, BLOCK_B):
        offs_b = b0 + tl.arange(0, BLOCK_B)
        b_ok = offs_b < BATCH
        dt = tl.load(d + offs_b[:, None] * stride_db + offs_m[None, :] * stride_dm,
                     mask=b_ok[:, None] & m_ok[None, :], other=0.0)                 # [BLOCK_B, BLOCK_M]
        xg = tl.load(x + offs_b[:, None] * stride_xb + k[None, :] * stride_xk,
                     mask=b_ok[:, None] & k_ok[None, :], other=0.0)                 # [BLOCK_B, BLOCK_M]
        acc += dt.to(ACC) * xg.to(ACC)
    res = tl.sum(acc, axis=0)                                                        # [BLOCK_M]
    tl.store(g + offs_m * stride_gm + s, res.to(g.dtype.element_ty), mask=m_ok)


def _check_gather(vals, cols):
    if vals.dim() != 2 or cols.shape != vals.shape:
        raise ValueError(f"vals and cols must both be [M, S]; got {tuple(vals.shape)} and {tuple(cols.shape)}")
    if vals.stride(1) != 1 or cols.stride(1) != 1:
        raise ValueError("vals and cols must be contiguous along the slot axis")


def matmul_hss_dense(vals, cols, shape, b, *, out=None, block_m=None, block_n=None):
    """``out = A @ b`` for A in gather form ``(vals [M, S], cols int32 [M, S])`` (Triton).

    Args:
        vals: ``[M, S]`` kept values (rows contiguous). cols: ``int32[M, S]`` their columns.
        shape: logical ``(M, K)``. b: dense ``[K, N]`` (any strides).
        out: optional ``[M, N]`` output (any strides).

    Returns:
        ``[M, N]`` in ``b``'s dtype.
    """
    import torch
    triton = require_triton()
    M, K = (int(s) for s in shape)
    _check_gather(vals, cols)
    if vals.shape[0] != M or b.dim() != 2 or b.shape[0] != K:
        raise ValueError(f"vals must have M={M} rows and b must be [K={K}, N]; "
                         f"got {tuple(vals.shape)} and {tuple(b.shape)}")
    if vals.dtype != b.dtype:
        raise TypeError(f"vals dtype {vals.dtype} differs from b dtype {b.dtype}")
    N = int(b.shape[1])
    if out is None:
        out = torch.empty((M, N), dtype=b.dtype, device=b.device)
    if M == 0 or N == 0:
        return out
    interpret = use_interpreter(b.device.type)
    block_m = block_m or (16 if interpret else 32)
    block_n = block_n or (32 if interpret else 64)
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n))
    kernel_for(_matmul_hss_dense_kernel)[grid](
        vals, cols, b, out, M, N, K, int(vals.shape[1]),
        vals.stride(0), cols.stride(0), b.stride(0), b.stride(1), out.stride(0), out.stride(1),
        BLOCK_M=block_m, BLOCK_N=block_n, ACC=acc_dtype(b.dtype))
    return out


def transpose_structure(cols, K):
    """CSR of ``A^T`` from the gather form: ``(t_indptr int64[K+1], t_rows int32[nnz], t_perm int64[nnz])``.

    Padding slots (column >= K) are dropped. ``t_perm`` indexes the flattened ``[M*S]`` values;
    entries of one column are sorted by row. Torch ops only, so it runs on the GPU too.

    >>> import torch
    >>> cols = torch.tensor([[0, 2], [1, 2]], dtype=torch.int32)
    >>> ip, rows, perm = transpose_structure(cols, 3)
    >>> ip.tolist(), rows.tolist(), perm.tolist()
    ([0, 1, 2, 4], [0, 1, 0, 1], [0, 2, 1, 3])
    """
    import torch
    flat = cols.reshape(-1).to(torch.int64)
    S = int(cols.shape[1]) if cols.dim() == 2 else 0
    keep = torch.nonzero(flat < K).reshape(-1)
    # stable sort by column keeps row order inside a column (flat index = m * S + s)
    order = torch.argsort(flat[keep], stable=True)
    t_perm = keep[order]
    counts = torch.bincount(flat[t_perm], minlength=K)
    t_indptr = torch.zeros(K + 1, dtype=torch.int64, device=cols.device)
    t_indptr[1:] = torch.cumsum(counts, 0)
    t_rows = (t_perm // max(S, 1)).to(torch.int32)
    return t_indptr, t_rows, t_perm


def tmatmul_hss_dense(t_indptr, t_rows, t_perm, vals, shape, b, *, out=None, block_p=None, block_n=None):
    """``out = A^T @ b`` (``[K, N]``) for A ``(M, K)`` from its transposed structure (Triton).

    Args:
        t_indptr, t_rows, t_perm: from :func:`transpose_structure`.
        vals: ``[M, S]`` kept values (contiguous). shape: logical ``(M, K)`` of A.
        b: dense ``[M, N]`` (any strides). out: optional ``[K, N]`` (any strides).
    """
    import torch
    triton = require_triton()
    M, K = (int(s) for s in shape)
    if b.dim() != 2 or b.shape[0] != M:
        raise ValueError(f"b must be [M={M}, N], got {tuple(b.shape)}")
    if int(t_indptr.shape[0]) != K + 1:
        raise ValueError(f"t_indptr must have K+1 = {K + 1} entries, got {int(t_indptr.shape[0])}")
    if vals.dtype != b.dtype:
        raise TypeError(f"vals dtype {vals.dtype} differs from b dtype {b.dtype}")
    if not vals.is_contiguous():
        raise ValueError("vals must be contiguous (t_perm indexes its flattened storage)")
    N = int(b.shape[1])
    if out is None:
        out = torch.empty((K, N), dtype=b.dtype, device=b.device)
    if K == 0 or N == 0:
        return out
    interpret = use_interpreter(b.device.type)
    block_p = block_p or 16
    block_n = block_n or (32 if interpret else 64)
    grid = (K, triton.cdiv(N, block_n))
    kernel_for(_tmatmul_hss_dense_kernel)[grid](
        t_indptr, t_rows, t_perm, vals, b, out, N,
        b.stride(0), b.stride(1), out.stride(0), out.stride(1),
        BLOCK_P=block_p, BLOCK_N=block_n, ACC=acc_dtype(b.dtype))
    return out


def sampled_dense_dense_hss(cols, d, x, shape, *, block_m=None, block_b=None):
    """``G[m, s] = sum_b d[b, m] * x[b, cols[m, s]]`` (``[M, S]``; 0 on padding slots) (Triton).

    Args:
        cols: ``int32[M, S]``. d: ``[batch, M]``. x: ``[batch, K]`` (any strides).
        shape: logical ``(M, K)``.
    """
    import torch
    triton = require_triton()
    M, K = (int(s) for s in shape)
    if d.dim() != 2 or x.dim() != 2 or d.shape[0] != x.shape[0] or d.shape[1] != M or x.shape[1] != K:
        raise ValueError(f"d must be [batch, M={M}] and x [batch, K={K}]; got {tuple(d.shape)} and {tuple(x.shape)}")
    if cols.dim() != 2 or cols.shape[0] != M or cols.stride(1) != 1:
        raise ValueError(f"cols must be a row-contiguous [M={M}, S] array, got {tuple(cols.shape)}")
    S = int(cols.shape[1])
    g = torch.zeros((M, S), dtype=d.dtype, device=d.device)
    if M == 0 or S == 0:
        return g
    interpret = use_interpreter(d.device.type)
    block_m = block_m or (16 if interpret else 64)
    block_b = block_b or (16 if interpret else 32)
    grid = (triton.cdiv(M, block_m), S)
    kernel_for(_sampled_dense_dense_hss_kernel)[grid](
        cols, d, x, g, int(d.shape[0]), M, K,
        cols.stride(0), d.stride(0), d.stride(1), x.stride(0), x.stride(1), g.stride(0),
        BLOCK_M=block_m, BLOCK_B=block_b, ACC=acc_dtype(d.dtype))
    return g
