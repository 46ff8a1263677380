"""Pallas kernels for jaxlab: one folder per kernel (kernel.py, reference.py, ops.py)."""
