"""Pure-JAX block-sparse matmul: the dense product with the expanded tile mask (oracle)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def expand_block_mask(block_mask: jax.Array, block_k: int, block_n: int) -> jax.Array:
    """Tile mask (nk, nn) -> element mask (nk * block_k, nn * block_n) of bools."""
    live = jnp.asarray(block_mask) != 0
    return jnp.repeat(jnp.repeat(live, block_k, axis=0), block_n, axis=1)


def block_sparse_matmul_reference(x: jax.Array, w: jax.Array, block_mask: jax.Array,
                                  block_k: int, block_n: int) -> jax.Array:
    """``x @ (w * expand(block_mask))`` with f32 accumulation.

    x: (..., K); w: (K, N); block_mask: (K // block_k, N // block_n). Returns (..., N) in
    ``result_type(x, w)``. Differentiable with plain JAX autodiff.
    """
    wm = jnp.where(expand_block_mask(block_mask, block_k, block_n), w, jnp.zeros((), w.dtype))
    dtype = jnp.result_type(x.dtype, w.dtype)
    y = jnp.matmul(x.astype(dtype), wm.astype(dtype), preferred_element_type=jnp.float32)
    return y.astype(dtype)
