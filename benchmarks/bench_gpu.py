"""GPU benchmark: flexsparse Triton kernels versus torch BSR and dense cuBLAS.

Times ``W @ X`` (``W: [M, K]`` structured, ``X: [K, N]`` dense) on a CUDA device with
``triton.testing.do_bench`` (median of repeated runs, milliseconds):

- block-sparse, blocks 16/32/64, block densities 5-50%: flexsparse ``matmul_block_dense``
  vs ``torch`` BSR (``W.to_sparse_bsr(block) @ X``, Triton/cuSPARSE inside torch) vs dense
  ``torch.matmul`` (cuBLAS);
- HSS / N:M (``2:4``, ``1:4``, ``3:4->2:4``, ``4:6->1:4``): flexsparse gather kernel vs dense.

Prints a table (time, TFLOP/s of the useful work, speed-up over dense). Without a CUDA
device it prints ``GPU benchmarks pending: no CUDA device`` and exits 0 (CI, laptops).

Usage: ``python benchmarks/bench_gpu.py [--size 4096] [--n 4096] [--dtype float16]
[--quick]``. Reference points from published work (REFERENCES.md section 4): torch BSR on
an A100 in fp32 breaks even with dense at ~86/82/70% sparsity for 16/32/64 blocks.
"""

from __future__ import annotations

import argparse
import sys


def _header(cols):
    widths = [max(12, len(c)) for c in cols]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    return widths


def _row(values, widths):
    print("  ".join(str(v).rjust(w) for v, w in zip(values, widths)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=4096, help="M = K of the weight")
    ap.add_argument("--n", type=int, default=4096, help="columns of X (tokens in a batch)")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--quick", action="store_true", help="fewer configurations")
    args = ap.parse_args(argv)

    try:
        import torch
    except ImportError:
        print("GPU benchmarks pending: torch is not installed (pip install flexsparse[torch])")
        return 0
    if not torch.cuda.is_available():
        print("GPU benchmarks pending: no CUDA device")
        return 0
    try:
        import triton
        from triton.testing import do_bench
    except ImportError:
        print("GPU benchmarks pending: triton is not installed (pip install flexsparse[gpu])")
        return 0

    import numpy as np

    import flexsparse.gpu as gpu
    from flexsparse.formats.block import BlockSparse
    from flexsparse.formats.hss import HSS, HSSPattern, select_hss

    dtype = getattr(torch, args.dtype)
    M = K = args.size
    N = args.n
    dev = torch.device("cuda")
    rng = np.random.default_rng(0)
    X = torch.randn(K, N, device=dev, dtype=dtype)
    print(f"device: {torch.cuda.get_device_name()}  triton {triton.__version__}  torch {torch.__version__}")
    print(f"W @ X with W {M}x{K}, X {K}x{N}, {args.dtype}; times are do_bench medians in ms\n")

    dense_full = torch.randn(M, K, device=dev, dtype=dtype)
    t_dense = do_bench(lambda: torch.matmul(dense_full, X))
    dense_tflops = 2 * M * K * N / t_dense / 1e9
    print(f"dense cuBLAS: {t_dense:.3f} ms ({dense_tflops:.1f} TFLOP/s)\n")

    blocks = (32,) if args.quick else (16, 32, 64)
    densities = (0.1, 0.5) if args.quick else (0.05, 0.1, 0.2, 0.3, 0.5)
    cols = ["block", "density", "flexsparse ms", "torch BSR ms", "dense ms", "fs speedup", "bsr speedup",
            "max |err|"]
    widths = _header(cols)
    for b in blocks:
        for d in densities:
            grid = (M // b, K // b)
            layout = rng.random(grid) < d
            W = BlockSparse.from_dense(np.zeros((M, K), np.float32), b, layout=layout)
            values = torch.randn(W.n_blocks, b, b, device=dev, dtype=dtype)
            s = gpu.DeviceStructure.from_weight(W, dev)
            t_fs = do_bench(lambda: gpu.matmul(W, X, values=values, structure=s))
            # the same weight densely, and as torch BSR
            dense = torch.zeros(M // b, K // b, b, b, device=dev, dtype=dtype)
            rows = torch.as_tensor(W.block_rows, device=dev)
            dense[rows, torch.as_tensor(W.indices.astype(np.int64), device=dev)] = values
            dense = dense.permute(0, 2, 1, 3).reshape(M, K).contiguous()
            try:
                bsr = dense.to_sparse_bsr((b, b))
                t_bsr = do_bench(lambda: bsr @ X)
                t_bsr_s = f"{t_bsr:.3f}"
                bsr_speed = f"{t_dense / t_bsr:.2f}x"
            except (RuntimeError, NotImplementedError) as exc:  # dtype/blocksize not supported
                t_bsr_s, bsr_speed = f"n/a ({type(exc).__name__})", "-"
            err = (gpu.matmul(W, X, values=values, structure=s).float() - (dense @ X).float()).abs().max().item()
            _row([b, f"{layout.mean():.2f}", f"{t_fs:.3f}", t_bsr_s, f"{t_dense:.3f}",
                  f"{t_dense / t_fs:.2f}x", bsr_speed, f"{err:.2e}"], widths)

    print()
    patterns = ("2:4", "3:4->2:4") if args.quick else ("2:4", "1:4", "3:4->2:4", "4:6->1:4")
    widths = _header(["pattern", "density", "flexsparse ms", "dense ms", "fs speedup", "max |err|"])
    for pat in patterns:
        p = HSSPattern.parse(pat)
        vals_np, pos = select_hss(rng.standard_normal((M, K)).astype(np.float32), p, by="magnitude")
        H = HSS(vals_np, pos, (M, K), p)
        values = torch.as_tensor(H.values, device=dev).to(dtype)
        s = gpu.DeviceStructure.from_weight(H, dev)
        t_fs = do_bench(lambda: gpu.matmul(H, X, values=values, structure=s))
        dense = torch.as_tensor(H.todense(), device=dev).to(dtype)
        err = (gpu.matmul(H, X, values=values, structure=s).float() - (dense @ X).float()).abs().max().item()
        _row([pat, f"{p.density:.3f}", f"{t_fs:.3f}", f"{t_dense:.3f}", f"{t_dense / t_fs:.2f}x",
              f"{err:.2e}"], widths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
