"""Causal self-attention with grouped-query heads, rotary embeddings and optional QK-norm."""

from __future__ import annotations

import math

import jax
from flax import nnx

from jaxlab.nn.config import ModelConfig
from jaxlab.nn.layers import DenseGeneral, RMSNorm
from jaxlab.nn.rope import apply_rope


class Attention(nnx.Module):
    """GQA attention (arXiv 2305.13245) through ``jax.nn.dot_product_attention``.

    Kernels: ``q (D, H, Dh)``, ``k, v (D, K, Dh)``, ``o (H, Dh, D)``.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, h, k, dh = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.resolved_head_dim
        pd = cfg.param_jnp_dtype
        self.q = DenseGeneral((d,), (h, dh), logical_axes=("embed", "heads", "head_dim"),
                              rngs=rngs, param_dtype=pd)
        self.k = DenseGeneral((d,), (k, dh), logical_axes=("embed", "kv_heads", "head_dim"),
                              rngs=rngs, param_dtype=pd)
        self.v = DenseGeneral((d,), (k, dh), logical_axes=("embed", "kv_heads", "head_dim"),
                              rngs=rngs, param_dtype=pd)
        self.o = DenseGeneral((h, dh), (d,), logical_axes=("heads", "head_dim", "embed"),
                              rngs=rngs, param_dtype=pd,
                              init_scale=1.0 / math.sqrt(2 * cfg.n_layers))
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm:
            self.q_norm = RMSNorm(dh, eps=cfg.norm_eps, param_dtype=pd)
            self.k_norm = RMSNorm(dh, eps=cfg.norm_eps, param_dtype=pd)

    def __call__(self, x_BxTxD, sin, cos):
        q = self.q(x_BxTxD)
        k = self.k(x_BxTxD)
        v = self.v(x_BxTxD)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
        out_BxTxHxDh = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        return self.o(out_BxTxHxDh)
