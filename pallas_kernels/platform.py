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


def out_struct(shape, dtype, *operands) -> jax.ShapeDtypeStruct:
    """``ShapeDtypeStruct`` for a pallas_call output that varies over the mesh axes its
    operands vary over, so kernels work inside ``jax.shard_map`` with ``check_vma=True``.

    The field was ``vma`` (a frozenset) before JAX 0.10 and is ``manual_axis_type`` now;
    both are handled, and neither is set where the JAX in use has no such field.
    """
    avals = [jax.typeof(o) for o in operands]
    mats = [getattr(a, "mat", None) for a in avals]
    if mats and all(m is not None for m in mats):
        varying = frozenset().union(*(m.varying for m in mats))
        return jax.ShapeDtypeStruct(shape, dtype,
                                    manual_axis_type=mats[0].update(varying=varying))
    vmas = [getattr(a, "vma", None) for a in avals]
    if vmas and all(v is not None for v in vmas):
        return jax.ShapeDtypeStruct(shape, dtype, vma=frozenset().union(*vmas))
    return jax.ShapeDtypeStruct(shape, dtype)


def _varying_axes(aval) -> frozenset:
    mat = getattr(aval, "mat", None)
    return frozenset(mat.varying) if mat is not None else frozenset(getattr(aval, "vma", ()))


def match_varying(*arrays):
    """Cast arrays to vary over the union of the mesh axes any of them varies over.

    Inside ``jax.shard_map`` a replicated weight multiplied by sharded activations is
    implicitly cast to "varying" by jnp ops, and autodiff turns that cast into the psum of
    its gradient. A custom_vjp must see the cast explicitly, else its bwd returns a
    varying dW for a replicated W. A no-op outside shard_map.
    """
    sets = [_varying_axes(jax.typeof(a)) for a in arrays]
    union = frozenset().union(*sets)
    out = []
    for a, axes in zip(arrays, sets, strict=True):
        missing = tuple(sorted(union - axes))
        if missing:
            pcast = getattr(jax.lax, "pcast", None)
            a = pcast(a, missing, to="varying") if pcast else jax.lax.pvary(a, missing)
        out.append(a)
    return out
