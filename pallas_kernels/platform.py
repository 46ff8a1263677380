"""Where a Pallas kernel runs: interpret mode and kernel body (Triton GPU or Mosaic TPU).

Every op in ``pallas_kernels`` takes ``interpret`` and ``backend``:

- ``interpret=None`` means "interpret when the default JAX backend is the CPU" (the only
  way Pallas runs there); ``True``/``False`` force it. A
  ``jax.experimental.pallas.tpu.InterpretParams`` selects the Mosaic TPU interpreter (it
  simulates VMEM/SMEM and DMAs; only for ``backend="mosaic_tpu"``).
- ``backend=None`` picks the kernel body for the device: ``"mosaic_tpu"`` on TPU,
  ``"triton"`` otherwise (GPU, and CPU interpret mode). Both bodies run in interpret
  mode on CPU, so tests cover the exact kernel code each device compiles.
"""

from __future__ import annotations

import math

import jax

BACKENDS = ("triton", "mosaic_tpu")


def resolve_interpret(interpret):
    """``None`` -> True on CPU, False on GPU/TPU; bools and TPU InterpretParams pass."""
    if interpret is None:
        return jax.default_backend() == "cpu"
    if isinstance(interpret, bool) or type(interpret).__name__ == "InterpretParams":
        return interpret
    raise TypeError(f"interpret must be a bool, None or pltpu.InterpretParams, got {interpret!r}")


def resolve_backend(backend: str | None) -> str:
    """``None`` -> ``"mosaic_tpu"`` on TPU, else ``"triton"``; names are checked."""
    if backend is None:
        return "mosaic_tpu" if jax.default_backend() == "tpu" else "triton"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    return backend


def round_up(x: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``x``."""
    return -(-x // multiple) * multiple


def is_power_of_2(x: int) -> bool:
    return isinstance(x, int) and x > 0 and (x & (x - 1)) == 0


def fit_block(block: int, dim: int, minimum: int = 16) -> int:
    """Shrink a power-of-two ``block`` to the next power of two >= ``dim`` (at least
    ``minimum``, the smallest tile Triton's ``tl.dot`` accepts), so tiny matrices are
    not padded up to a full 128-wide tile."""
    return min(block, max(minimum, 1 << max(0, math.ceil(math.log2(max(dim, 1))))))
