"""PyTorch layers for flexsparse's structured formats (optional: ``pip install flexsparse[torch]``).

- :class:`SparseLinear`: drop-in ``nn.Linear`` with a block / N:M / HSS weight whose kept
  values are trainable and whose structure is fixed;
- :func:`sparsify`: swap a model's ``nn.Linear`` layers in place, returning a summary;
- :func:`sparse_linear` (in :mod:`flexsparse.torch.functional`): the autograd function;
- :func:`finetune`: train a model with a pattern held (distillation from the dense model),
  then swap in ``SparseLinear``; returns a :class:`FinetuneSummary`.

Importing this package imports ``torch`` (and raises ``ImportError`` naming the extra when it
is missing); nothing is compiled at import.
"""

from __future__ import annotations

from flexsparse.torch.finetune import FinetuneSummary, finetune
from flexsparse.torch.finetune_methods import METHODS, MaskedLinear
from flexsparse.torch.functional import BACKENDS, sparse_linear
from flexsparse.torch.linear import DISPATCHES, SparseLinear
from flexsparse.torch.sparsify import LayerSummary, SparsifySummary, sparsify

__all__ = ["BACKENDS", "DISPATCHES", "FinetuneSummary", "LayerSummary", "METHODS", "MaskedLinear",
           "SparseLinear", "SparsifySummary", "finetune", "sparse_linear", "sparsify"]
