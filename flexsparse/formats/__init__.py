"""flexsparse.formats: every sparse format, their conversions and their files.

``base`` (the :class:`~flexsparse.formats.base.SparseArray` base and format registry), ``coo``,
``fiber`` (CSF), ``csr`` (CSR, CSC), ``block``, ``nm``, ``hss`` (structured), ``convert``
(NumPy/SciPy/pydata/torch), ``random`` (uniform and power-law tensors), ``layouts`` (block
masks), ``io`` (.tns/.mtx and dispatch) and ``store`` (the on-disk format of tensors and
results). Each module states its layout and costs; nothing here imports the contraction engine.
"""
