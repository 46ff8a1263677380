"""Rotary position embeddings (Su et al., arXiv 2104.09864), half-split layout."""

from __future__ import annotations

import jax.numpy as jnp


def rope_tables(seq_len: int, head_dim: int, theta: float = 10_000.0):
    """``(sin, cos)`` tables of shape ``(T, head_dim // 2)`` in float32."""
    inv_freq = theta ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    angles = jnp.arange(seq_len, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    return jnp.sin(angles), jnp.cos(angles)


def apply_rope(x_BxTxNxH, sin_TxK, cos_TxK):
    """Rotates pairs ``(x[..., i], x[..., i + H/2])`` by position-dependent angles."""
    dtype = x_BxTxNxH.dtype
    x = x_BxTxNxH.astype(jnp.float32)
    x1, x2 = jnp.split(x, 2, axis=-1)
    sin = sin_TxK[None, :, None, :]
    cos = cos_TxK[None, :, None, :]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(dtype)
