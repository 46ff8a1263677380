"""Basic layers with logical-axis metadata: RMSNorm, DenseGeneral, Embedding.

Every parameter is an ``nnx.Param`` carrying ``logical_axes`` (one name per dimension,
resolved to mesh axes by ``jaxlab.sharding``) and, for kernels, ``fan_in_ndim``: the
kernel is laid out ``(*fan_in_dims, *fan_out_dims)`` so ``x @ W`` contracts the first
``fan_in_ndim`` axes. ``jaxlab.partition`` reads both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlab.nn.block_linear import block_sparse_dot


def param(rngs: nnx.Rngs | None, init, shape: Sequence[int], dtype, logical_axes,
          **metadata) -> nnx.Param:
    """Creates an ``nnx.Param`` with logical axis names (and any extra metadata)."""
    if len(logical_axes) != len(shape):
        raise ValueError(f"logical_axes {logical_axes} do not match shape {tuple(shape)}")
    value = init(rngs.params() if rngs is not None else None, tuple(shape), dtype)
    return nnx.Param(value, logical_axes=tuple(logical_axes), **metadata)


def _ones(key, shape, dtype):
    del key
    return jnp.ones(shape, dtype)


class RMSNorm(nnx.Module):
    """RMSNorm (arXiv 1910.07467) over the last axis with a learned gain ``scale (D,)``."""

    def __init__(self, dim: int, *, eps: float = 1e-6, param_dtype=jnp.float32,
                 logical_axis: str = "norm"):
        self.eps = eps
        self.scale = param(None, _ones, (dim,), param_dtype, (logical_axis,))

    def __call__(self, x):
        dtype = x.dtype
        x32 = x.astype(jnp.float32)
        inv = jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (x32 * inv * self.scale[...].astype(jnp.float32)).astype(dtype)


class DenseGeneral(nnx.Module):
    """``y = x @ W`` contracting the trailing ``len(in_shape)`` axes of x.

    Kernel shape ``(*in_shape, *out_shape)`` with ``fan_in_ndim = len(in_shape)``; init
    truncated-normal with std ``init_scale / sqrt(prod(in_shape))``. With ``block_size``
    set, the product skips all-zero ``b x b`` tiles of the ``(fan_in, fan_out)`` kernel
    through the Pallas block-sparse matmul (:mod:`jaxlab.nn.block_linear`).
    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], *,
                 logical_axes: Sequence[str], rngs: nnx.Rngs, init_scale: float = 1.0,
                 param_dtype=jnp.float32, block_size: int | None = None):
        self.in_ndim = len(in_shape)
        self.block_size = block_size
        self.out_ndim = len(out_shape)
        fan_in = math.prod(in_shape)
        std = init_scale / math.sqrt(fan_in)
        # A unit-variance truncated normal on [-2, 2] has std 0.8796.
        init = jax.nn.initializers.truncated_normal(std / 0.87962566)
        self.kernel = param(rngs, init, (*in_shape, *out_shape), param_dtype, logical_axes,
                            fan_in_ndim=self.in_ndim)

    def __call__(self, x):
        # One 2-D matmul ``(M, K) @ (K, N)``: with the leading (batch, time) axes kept apart,
        # the kernel gradient contracts two axes at once, which XLA's CPU backend runs at
        # about half the rate of the plain 2-D product.
        w = self.kernel[...].astype(x.dtype)
        if self.block_size is not None:
            return block_sparse_dot(x, w, self.in_ndim, self.block_size)
        lead, fan_in = x.shape[:x.ndim - self.in_ndim], x.shape[x.ndim - self.in_ndim:]
        fan_out = w.shape[self.in_ndim:]
        y = x.reshape(-1, math.prod(fan_in)) @ w.reshape(math.prod(fan_in), -1)
        return y.reshape(*lead, *fan_out)


class Embedding(nnx.Module):
    """Token embedding table ``embedding (V, D)``; ``attend`` gives tied-head logits."""

    def __init__(self, vocab_size: int, dim: int, *, rngs: nnx.Rngs, init_std: float = 1.0,
                 param_dtype=jnp.float32):
        init = jax.nn.initializers.normal(init_std)
        self.embedding = param(rngs, init, (vocab_size, dim), param_dtype, ("vocab", "embed"))

    def __call__(self, tokens_BxT, dtype):
        return jnp.take(self.embedding[...].astype(dtype), tokens_BxT, axis=0)

    def attend(self, x_BxTxD):
        """Tied output head: ``x @ E^T / sqrt(D)`` (scaled so init logits are O(1))."""
        e = self.embedding[...].astype(x_BxTxD.dtype)
        x_NxD = x_BxTxD.reshape(-1, x_BxTxD.shape[-1])  # 2-D matmul (see DenseGeneral)
        logits_NxV = (x_NxD @ e.T) / math.sqrt(e.shape[-1])
        return logits_NxV.reshape(*x_BxTxD.shape[:-1], e.shape[0])
