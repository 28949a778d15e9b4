"""Triton kernels for block-sparse (BSR) weights: ``A @ B`` and the block-sampled product.

Layout of the sparse operand A (logical shape ``(M, K)``, blocks ``(R, C)``):
``indptr: int64[ceil(M/R)+1]`` (CSR over block rows), ``indices: int32[n_blocks]`` (block
columns), ``values: [n_blocks, R, C]`` (zero-padded at the ragged edges).

Algorithms:

- ``matmul_block_dense``: ``out = A @ B`` with B dense ``[K, N]``. One program per
  (block row, tile of ``BLOCK_N`` output columns) walks that block row's blocks through
  ``indptr``/``indices`` and accumulates ``tl.dot(A_blk [R, C], B[jC:(j+1)C, tile] [C, BLOCK_N])``
  in float32 (float64 for float64 operands). Cost: ``2 * n_blocks * R * C * N`` flops,
  traffic ``n_blocks*R*C + n_blocks*C*N + M*N`` elements; no atomics, deterministic.
  An optional permutation plus swapped value strides runs ``A^T`` from the blocks sorted by
  column (``A^T`` in BSR with ``(C, R)`` blocks), which is how the input gradient
  ``dY @ A`` is computed without copying or transposing ``values``.
- ``sampled_dense_dense_block``: ``G[p] = D[:, rows(p)]^T @ X[:, cols(p)]`` for every stored
  block ``p`` (the weight gradient of ``Y = X @ A^T`` restricted to the kept blocks). One
  program per block, looping over the batch in tiles of ``BLOCK_B`` rows. Cost
  ``2 * n_blocks * R * C * batch`` flops.

Strides are passed for every dense operand, so both ``A @ B`` and ``X @ A^T`` (B = X^T as a
strided view, output written through transposed strides) run without copies.

``tl.dot`` needs tiles of at least 16 in each dimension and power-of-two extents: blocks
are loaded into ``max(16, next_pow2(R)) x max(16, next_pow2(C))`` register tiles with
masks, so any block shape is accepted, but blocks smaller than 16 waste tensor-core work
(an 8x8 block does a quarter of useful work). Under Triton's interpreter (CPU tensors,
tests), operands are upcast to the accumulator dtype before ``tl.dot`` because the
interpreter's low-precision ``tl.dot`` is unreliable.
"""

try:  # the kernel bodies resolve ``tl`` from this module's globals when compiled
    import triton.language as tl
except ImportError:  # the wrappers raise a clear ImportError through require_triton()
    tl = None

from flexsparse.kernels.triton._runtime import acc_dtype, kernel_for, next_pow2, require_triton, use_interpreter

__all__ = ["matmul_block_dense", "sampled_dense_dense_block"]


def _matmul_block_dense_kernel(
        indptr, indices, perm, vals, b, out,
        M, N, K,
        stride_vp, stride_vr, stride_vc,
        stride_bk, stride_bn, stride_om, stride_on,
        R: tl.constexpr, C: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
        BLOCK_N: tl.constexpr, HAS_PERM: tl.constexpr, UPCAST: tl.constexpr,
        ACC: tl.constexpr, PRECISION: tl.constexpr):
    pid_r = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_r = tl.arange(0, BLOCK_R)            # rows inside the block (padded to BLOCK_R)
    offs_c = tl.arange(0, BLOCK_C)            # cols inside the block (padded to BLOCK_C)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = pid_r * R + offs_r
    a_mask = (offs_r[:, None] < R) & (offs_c[None, :] < C)
    acc = tl.zeros((BLOCK_R, BLOCK_N), dtype=ACC)
    start = tl.load(indptr + pid_r)
    end = tl.load(indptr + pid_r + 1)
    for p in range(start, end):
        j = tl.load(indices + p).to(tl.int64)
        if HAS_PERM:
            q = tl.load(perm + p).to(tl.int64)
        else:
            q = p  # int64: the loop bounds come from the int64 indptr
        a = tl.load(vals + q * stride_vp + offs_r[:, None] * stride_vr + offs_c[None, :] * stride_vc,
                    mask=a_mask, other=0.0)                               # [BLOCK_R, BLOCK_C]
        ks = j * C + offs_c
        bt = tl.load(b + ks[:, None] * stride_bk + offs_n[None, :] * stride_bn,
                     mask=(offs_c[:, None] < C) & (ks[:, None] < K) & (offs_n[None, :] < N),
                     other=0.0)                                           # [BLOCK_C, BLOCK_N]
        if UPCAST:
            a = a.to(ACC)
            bt = bt.to(ACC)
        acc += tl.dot(a, bt, input_precision=PRECISION).to(ACC)
    o_mask = (offs_r[:, None] < R) & (rows[:, None] < M) & (offs_n[None, :] < N)
    tl.store(out + rows[:, None] * stride_om + offs_n[None, :] * stride_on,
             acc.to(out.dtype.element_ty), mask=o_mask)


def _sampled_dense_dense_block_kernel(
        block_rows, indices, d, x, g,
        BATCH, M, K,
        stride_db, stride_dm, stride_xb, stride_xk,
        stride_gp, stride_gr, stride_gc,
        R: tl.constexpr, C: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
        BLOCK_B: tl.constexpr, UPCAST: tl.constexpr, ACC: tl.constexpr,
        PRECISION: tl.constexpr):
    p = tl.program_id(0).to(tl.int64)
    i = tl.load(block_rows + p).to(tl.int64)
    j = tl.load(indices + p).to(tl.int64)
    offs_r = tl.arange(0, BLOCK_R)
    offs_c = tl.arange(0, BLOCK_C)
    rows = i * R + offs_r
    cols = j * C + offs_c
    r_ok = (offs_r < R) & (rows < M)
    c_ok = (offs_c < C) & (cols < K)
    acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=ACC)
    for b0 in range(0, BATCH, BLOCK_B):
        offs_b = b0 + tl.arange(0, BLOCK_B)
        b_ok = offs_b < BATCH
        dt = tl.load(d + offs_b[:, None] * stride_db + rows[None, :] * stride_dm,
                     mask=b_ok[:, None] & r_ok[None, :], other=0.0)       # [BLOCK_B, BLOCK_R]
        xt = tl.load(x + offs_b[:, None] * stride_xb + cols[None, :] * stride_xk,
                     mask=b_ok[:, None] & c_ok[None, :], other=0.0)       # [BLOCK_B, BLOCK_C]
        if UPCAST:
            dt = dt.to(ACC)
            xt = xt.to(ACC)
        acc += tl.dot(tl.trans(dt), xt, input_precision=PRECISION).to(ACC)
    g_mask = (offs_r[:, None] < R) & (offs_c[None, :] < C)
    tl.store(g + p * stride_gp + offs_r[:, None] * stride_gr + offs_c[None, :] * stride_gc,
             acc.to(g.dtype.element_ty), mask=g_mask)


def _precision(dtype, allow_tf32: bool) -> str:
    """``tl.dot`` input precision: exact fp32 unless TF32 is allowed; the default ("tf32",
    ignored by the hardware path) for half types; "ieee" for float64."""
    import torch
    if dtype == torch.float32:
        return "tf32" if allow_tf32 else "ieee"
    return "ieee" if dtype == torch.float64 else "tf32"


def matmul_block_dense(indptr, indices, values, shape, b, *, out=None, perm=None,
                       transpose_blocks=False, block_n=None, allow_tf32=False):
    """``out = A @ b`` for a block-sparse ``A`` given by raw tensors (Triton).

    Args:
        indptr: ``int64[n_block_rows + 1]`` CSR pointers over block rows of A.
        indices: ``int32[n_blocks]`` block-column ids of A.
        values: ``[n_stored, r, c]`` stored blocks; read through ``perm`` when given.
        shape: logical ``(M, K)`` of A.
        b: dense ``[K, N]`` (any strides; a transposed view is fine).
        out: optional ``[M, N]`` output (any strides), else a new contiguous tensor.
        perm: optional ``int64[n_blocks]``: block ``p`` of A is ``values[perm[p]]``.
        transpose_blocks: read each stored block transposed (A's blocks are ``(c, r)``);
            with ``perm`` this is how ``A^T`` is applied from A's storage.
        block_n: output columns per program (default 64 on GPU, 32 interpreted).
        allow_tf32: let float32 ``tl.dot`` use TF32 tensor cores (GPU only).

    Returns:
        The ``[M, N]`` product, dtype of ``b``.
    """
    import torch
    triton = require_triton()
    M, K = (int(s) for s in shape)
    if b.dim() != 2 or b.shape[0] != K:
        raise ValueError(f"b must be [K={K}, N], got {tuple(b.shape)}")
    if values.dtype != b.dtype:
        raise TypeError(f"values dtype {values.dtype} differs from b dtype {b.dtype}")
    N = int(b.shape[1])
    if transpose_blocks:
        r, c = int(values.shape[2]), int(values.shape[1])
        s_vp, s_vr, s_vc = values.stride(0), values.stride(2), values.stride(1)
    else:
        r, c = int(values.shape[1]), int(values.shape[2])
        s_vp, s_vr, s_vc = values.stride(0), values.stride(1), values.stride(2)
    n_block_rows = int(indptr.shape[0]) - 1
    if n_block_rows != -(-M // r):
        raise ValueError(f"indptr has {n_block_rows + 1} entries; expected ceil(M/r)+1 = {-(-M // r) + 1}")
    if out is None:
        out = torch.empty((M, N), dtype=b.dtype, device=b.device)
    if M == 0 or N == 0:
        return out
    interpret = use_interpreter(b.device.type)
    block_n = block_n or (32 if interpret else 64)
    grid = (n_block_rows, triton.cdiv(N, block_n))
    kern = kernel_for(_matmul_block_dense_kernel)
    perm_arg = perm if perm is not None else indices
    kern[grid](indptr, indices, perm_arg, values, b, out, M, N, K,
               s_vp, s_vr, s_vc, b.stride(0), b.stride(1), out.stride(0), out.stride(1),
               R=r, C=c, BLOCK_R=next_pow2(r, 16), BLOCK_C=next_pow2(c, 16), BLOCK_N=block_n,
               HAS_PERM=perm is not None, UPCAST=interpret, ACC=acc_dtype(b.dtype),
               PRECISION=_precision(b.dtype, allow_tf32))
    return out


def sampled_dense_dense_block(block_rows, indices, d, x, block, shape, *, block_b=None,
                              allow_tf32=False):
    """``G[p] = d[:, rows(p)]^T @ x[:, cols(p)]`` for each stored block ``p`` (Triton).

    Args:
        block_rows: ``int32[n_blocks]`` block-row id of each stored block.
        indices: ``int32[n_blocks]`` block-column id of each stored block.
        d: ``[batch, M]`` output gradient; x: ``[batch, K]`` input (any strides).
        block: ``(r, c)``; shape: logical ``(M, K)``.

    Returns:
        ``[n_blocks, r, c]`` with zeros where a block pads past ``M`` or ``K``.
    """
    import torch
    require_triton()
    r, c = (int(v) for v in block)
    M, K = (int(s) for s in shape)
    if d.dim() != 2 or x.dim() != 2 or d.shape[0] != x.shape[0] or d.shape[1] != M or x.shape[1] != K:
        raise ValueError(f"d must be [batch, M={M}] and x [batch, K={K}]; got {tuple(d.shape)} and {tuple(x.shape)}")
    n_blocks = int(indices.shape[0])
    g = torch.zeros((n_blocks, r, c), dtype=d.dtype, device=d.device)
    if n_blocks == 0:
        return g
    interpret = use_interpreter(d.device.type)
    block_b = block_b or (16 if interpret else 32)
    kern = kernel_for(_sampled_dense_dense_block_kernel)
    kern[(n_blocks,)](block_rows, indices, d, x, g, int(d.shape[0]), M, K,
                      d.stride(0), d.stride(1), x.stride(0), x.stride(1),
                      g.stride(0), g.stride(1), g.stride(2),
                      R=r, C=c, BLOCK_R=next_pow2(r, 16), BLOCK_C=next_pow2(c, 16), BLOCK_B=block_b,
                      UPCAST=interpret, ACC=acc_dtype(d.dtype), PRECISION=_precision(d.dtype, allow_tf32))
    return g
