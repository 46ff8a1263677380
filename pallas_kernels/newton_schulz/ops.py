"""Public Newton-Schulz op: normalise, transpose tall matrices, pad, run the Pallas steps.

Muon's orthogonalisation (github KellerJordan/Muon; Moonlight arXiv 2502.16982) with any
static per-step coefficients (Polar Express, arXiv 2505.16932). Symmetric products use
only the upper triangle of tiles (Dao AI Lab gram-newton-schulz); see ``kernel.py``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pallas_kernels.newton_schulz.kernel import NSBlockSizes, ns_step
from pallas_kernels.newton_schulz.reference import (
    check_coeffs,
    newton_schulz_reference,
    normalize,
)
from pallas_kernels.platform import fit_block, resolve_backend, resolve_interpret, round_up

KELLER_COEFFS = ((3.4445, -4.7750, 2.0315),) * 5
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
"""Polar Express 5-step coefficients; pair them with ``norm_scale=1.02, eps=1e-6``."""


def effective_blocks(block: NSBlockSizes, m: int, n: int, *, tpu_tiles: bool) -> NSBlockSizes:
    """Shrink tiles to small matrices (m <= n). Compiled Mosaic TPU keeps >= 128 tiles."""
    lo = 128 if tpu_tiles else 16
    bm = fit_block(block.block_m, m, lo)
    return NSBlockSizes(block_m=bm, block_n=fit_block(block.block_n, n, lo),
                        block_k=min(fit_block(block.block_k, n, lo), bm),
                        num_warps=block.num_warps, num_stages=block.num_stages)


def _ns_impl(x, coeffs, eps, norm_scale, block, interpret, backend, compute_dtype):
    tall = x.shape[-2] > x.shape[-1]
    y = jnp.swapaxes(x, -1, -2) if tall else x
    lead, (m, n) = y.shape[:-2], y.shape[-2:]
    y = normalize(y.reshape((-1, m, n)), eps, norm_scale, compute_dtype)
    blocks = effective_blocks(block, m, n, tpu_tiles=backend == "mosaic_tpu" and not interpret)
    m_pad = round_up(m, blocks.block_m)
    n_pad = round_up(n, max(blocks.block_n, blocks.block_k))
    # Zero padding is exact: zero rows/columns of X stay zero through every NS step.
    y = jnp.pad(y, ((0, 0), (0, m_pad - m), (0, n_pad - n)))
    for a, b, c in coeffs:
        y = ns_step(y, a, b, c, blocks=blocks, backend=backend, interpret=interpret)
    y = y[:, :m, :n].reshape(lead + (m, n))
    y = jnp.swapaxes(y, -1, -2) if tall else y
    return y.astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5, 6, 7))
def _ns(x, coeffs, eps, norm_scale, block, interpret, backend, compute_dtype):
    return _ns_impl(x, coeffs, eps, norm_scale, block, interpret, backend, compute_dtype)


def _ns_fwd(x, coeffs, eps, norm_scale, block, interpret, backend, compute_dtype):
    return _ns_impl(x, coeffs, eps, norm_scale, block, interpret, backend, compute_dtype), x


def _ns_bwd(coeffs, eps, norm_scale, block, interpret, backend, compute_dtype, x, g):
    # No Pallas backward: differentiate the pure-JAX reference (same math, same roundings).
    # Muon does not differentiate NS; this exists so the op is safe inside jax.grad.
    _, vjp = jax.vjp(functools.partial(newton_schulz_reference, coeffs=coeffs, eps=eps,
                                       compute_dtype=compute_dtype, norm_scale=norm_scale), x)
    return vjp(g)


_ns.defvjp(_ns_fwd, _ns_bwd)
_ns_jit = jax.jit(_ns, static_argnums=(1, 2, 3, 4, 5, 6, 7))


def newton_schulz(x: jax.Array, coeffs, *, eps: float = 1e-7,
                  block: NSBlockSizes = NSBlockSizes(),  # noqa: B008 (frozen, immutable)
                  interpret: bool | None = None,
                  compute_dtype=jnp.bfloat16, backend: str | None = None,
                  norm_scale: float = 1.0) -> jax.Array:
    """Newton-Schulz orthogonalisation of x (..., m, n) with Pallas kernels.

    Args:
      x: (..., m, n) float array; leading axes are a batch of independent matrices.
      coeffs: static sequence of per-step (a, b, c) floats, e.g. ``KELLER_COEFFS``.
      eps, norm_scale: X <- X / (norm_scale ||X||_F + eps) per matrix, in f32.
      block: tile sizes (shrunk automatically for small matrices).
      interpret: None = interpret on CPU only.
      compute_dtype: operand dtype of the products (f32 accumulation regardless).
      backend: "triton" (GPU), "mosaic_tpu", or None for the current device.

    Returns: (..., m, n), x's dtype. Tall matrices (m > n) are iterated as x^T. Shapes
    not multiple of the tiles are zero-padded internally (exact for NS). Differentiable:
    the VJP is that of :func:`newton_schulz_reference`.

    Sharding: a pallas_call is not partitioned by XLA; for a sharded stack call this
    inside ``jax.shard_map`` over the stack axis so each device orthogonalises whole
    matrices (compiled: check_vma=True works; interpret mode needs check_vma=False).
    """
    coeffs = check_coeffs(coeffs)
    if not isinstance(block, NSBlockSizes):
        raise TypeError(f"block must be an NSBlockSizes, got {type(block).__name__}")
    x = jnp.asarray(x)
    if x.ndim < 2 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a float array of shape (..., m, n), got {x.dtype}{x.shape}")
    interpret = resolve_interpret(interpret)
    backend = resolve_backend(backend)
    if backend == "mosaic_tpu" and not interpret and min(block.block_m, block.block_n,
                                                         block.block_k) < 128:
        raise ValueError(f"Mosaic TPU needs NS tiles that are multiples of 128, got {block}; "
                         "e.g. NSBlockSizes(block_m=256, block_n=256, block_k=256)")
    if x.size == 0:
        return x
    return _ns_jit(x, coeffs, float(eps), float(norm_scale), block, interpret, backend,
                   jnp.dtype(compute_dtype))
