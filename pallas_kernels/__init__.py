"""Pallas kernels for jaxlab: one folder per kernel (kernel.py, reference.py, ops.py).

- :mod:`pallas_kernels.newton_schulz`: Muon's Newton-Schulz iteration with
  upper-triangle symmetric products (``newton_schulz``, ``newton_schulz_reference``).
- :mod:`pallas_kernels.block_sparse_matmul`: ``x @ (W * block_mask)`` skipping dead tiles,
  with a custom VJP (``block_sparse_matmul``, ``make_block_meta``).

Every op takes ``interpret`` (None = interpret on CPU) and ``backend`` ("triton" for GPU,
"mosaic_tpu" for TPU, None = current device); see :mod:`pallas_kernels.platform`.
"""
