"""Pure-JAX Newton-Schulz with the kernel's exact semantics (the test oracle).

Quintic NS iteration of Muon (Keller Jordan, github KellerJordan/Muon) with per-step
coefficients as in Polar Express (arXiv 2505.16932):

    X <- X / (norm_scale ||X||_F + eps);   repeat:  A = X X^T;  B = b A + c A^2;  X = a X + B X

on the short side (tall matrices are transposed). Operands are cast to ``compute_dtype``
(bf16 by default), every product accumulates in f32, each intermediate (A, B, X) is
rounded to ``compute_dtype`` once: the same rounding points as the Pallas kernels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Coeffs = tuple[tuple[float, float, float], ...]


def check_coeffs(coeffs) -> Coeffs:
    """Validate a static sequence of per-step (a, b, c) and return it as nested tuples."""
    try:
        out = tuple(tuple(float(v) for v in step) for step in coeffs)
    except (TypeError, jax.errors.ConcretizationTypeError) as e:
        raise TypeError("coeffs must be a static sequence of (a, b, c) Python floats, e.g. "
                        f"((3.4445, -4.7750, 2.0315),) * 5; got {coeffs!r}") from e
    if not out or any(len(step) != 3 for step in out):
        raise ValueError(f"coeffs must be a non-empty sequence of (a, b, c) triples, got {coeffs!r}")
    return out


def normalize(x: jax.Array, eps: float, norm_scale: float, dtype) -> jax.Array:
    """X / (norm_scale ||X||_F + eps) per matrix over the last two axes, in f32, cast."""
    xf = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(xf * xf, axis=(-2, -1), keepdims=True))
    return (xf / (norm_scale * norm + eps)).astype(dtype)


def newton_schulz_reference(x: jax.Array, coeffs, eps: float = 1e-7, *,
                            compute_dtype=jnp.bfloat16, norm_scale: float = 1.0) -> jax.Array:
    """NS-orthogonalise x (..., m, n); returns the same shape and dtype as x.

    Matches :func:`pallas_kernels.newton_schulz.ops.newton_schulz` rounding point for
    rounding point; with ``compute_dtype=jnp.float32`` it is a plain f32 NS.
    """
    coeffs = check_coeffs(coeffs)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (..., m, n), got {x.shape}")
    tall = x.shape[-2] > x.shape[-1]
    y = jnp.swapaxes(x, -1, -2) if tall else x
    y = normalize(y, eps, norm_scale, compute_dtype)
    f32 = jnp.float32

    def mm(p, q):
        return jnp.matmul(p, q, preferred_element_type=f32)

    for a, b, c in coeffs:
        amat = mm(y, jnp.swapaxes(y, -1, -2)).astype(compute_dtype)
        bmat = (c * mm(amat, amat) + b * amat.astype(f32)).astype(compute_dtype)
        y = (a * y.astype(f32) + mm(bmat, y)).astype(compute_dtype)
    y = jnp.swapaxes(y, -1, -2) if tall else y
    return y.astype(x.dtype)
