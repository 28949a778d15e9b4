"""Triton GPU kernels for the structured formats (used through :mod:`flexsparse.gpu`).

- :mod:`.block`: block-sparse (BSR) ``A @ B`` (``tl.dot`` per stored block) and the
  block-sampled product ``D^T X`` (weight gradient);
- :mod:`.hss`: HSS / N:M gather-FMA ``A @ B``, ``A^T @ B`` (transposed CSR) and the
  slot-sampled product;
- :mod:`._runtime`: JIT vs interpreter selection (``TRITON_INTERPRET=1`` must be set before
  ``triton`` is imported), dtype helpers.

Nothing here imports Triton eagerly beyond the kernel modules themselves.
"""
