"""Causal self-attention with grouped-query heads, rotary embeddings and optional QK-norm.

Each attention can also report its per-head maximum logit ``max_{b, i, j} q_i . k_j /
sqrt(Dh)`` (over unmasked entries), which QK-clip (Kimi K2, arXiv 2507.20534;
:mod:`jaxlab.optim.qk_clip`) needs after every step. jaxlab's core reads it off the row
maxima its softmax computes anyway (no second pass); the other cores
(``jax.nn.dot_product_attention``) do not expose them, so there it costs one more
``q k^T`` product per layer.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlab.nn.config import ModelConfig
from jaxlab.nn.layers import DenseGeneral, RMSNorm
from jaxlab.nn.rope import apply_rope


def _scores(q_BxKxGxTxDh, k_BxKxSxDh):
    """Causally masked float32 scores ``(B, K, G, T, S)``; masked entries are ``-inf``."""
    s = jnp.einsum("bkgtd,bksd->bkgts", q_BxKxGxTxDh, k_BxKxSxDh,
                   preferred_element_type=jnp.float32)
    t, sl = s.shape[-2:]
    causal_TxS = jnp.arange(t)[:, None] >= jnp.arange(sl)[None, :]
    return jnp.where(causal_TxS, s, -jnp.inf)


def _attend(q, k, v):
    """Forward: output ``(B, K, G, T, Dh)``, the row log-sum-exp ``(B, K, G, T, 1)`` and
    the per-head maximum score ``(K, G)``."""
    s = _scores(q, k)
    m = jnp.max(s, axis=-1, keepdims=True)  # finite: every row sees at least its own key
    p = jnp.exp(s - m)
    l = jnp.sum(p, axis=-1, keepdims=True)
    o = jnp.einsum("bkgts,bksd->bkgtd", p.astype(v.dtype), v,
                   preferred_element_type=jnp.float32) / l
    return o.astype(q.dtype), m + jnp.log(l), jnp.max(m, axis=(0, 3, 4))


@jax.custom_vjp
def _causal_attention_core(q, k, v):
    """``(output (B, K, G, T, Dh), per-head max score (K, G))``; the max has no gradient."""
    o, _, max_score = _attend(q, k, v)
    return o, max_score


def _core_fwd(q, k, v):
    o, lse, max_score = _attend(q, k, v)
    return (o, max_score), (q, k, v, o, lse)


def _core_bwd(res, cotangents):
    do, _ = cotangents  # the max score is a diagnostic: no gradient flows through it
    # The (T, S) probabilities are recomputed from q, k and the saved log-sum-exp instead
    # of being stored for the backward pass (as in FlashAttention, arXiv 2205.14135).
    q, k, v, o, lse = res
    p = jnp.exp(_scores(q, k) - lse)
    dv = jnp.einsum("bkgts,bkgtd->bksd", p.astype(do.dtype), do,
                    preferred_element_type=jnp.float32)
    dp = jnp.einsum("bkgtd,bksd->bkgts", do, v, preferred_element_type=jnp.float32)
    delta = jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), axis=-1, keepdims=True)
    ds = (p * (dp - delta)).astype(q.dtype)
    dq = jnp.einsum("bkgts,bksd->bkgtd", ds, k, preferred_element_type=jnp.float32)
    dk = jnp.einsum("bkgts,bkgtd->bksd", ds, q, preferred_element_type=jnp.float32)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


_causal_attention_core.defvjp(_core_fwd, _core_bwd)


def causal_attention(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, return_max_logits: bool = False):
    """``softmax(q k^T / sqrt(Dh) + causal mask) v`` with ``K`` dividing ``H`` (GQA).

    Same result as ``jax.nn.dot_product_attention(q, k, v, is_causal=True)``. Heads are
    laid out ``(B, K, G, T, Dh)`` so each score and value product is one batched matmul,
    and the backward pass recomputes the probabilities from a saved log-sum-exp rather than
    keeping ``B H T^2`` floats per layer: on XLA's CPU backend the saved probabilities (and
    the layouts it picks for ``dot_product_attention``) made attention several times
    slower than its FLOPs, at one extra ``q k^T`` product per layer in the backward.
    With ``return_max_logits`` also the per-head maximum logit ``(H,)``, float32.
    """
    b, t, h, dh = q_BxTxHxDh.shape
    kv = k_BxTxKxDh.shape[2]
    q = q_BxTxHxDh * jnp.asarray(1.0 / math.sqrt(dh), q_BxTxHxDh.dtype)
    q = q.reshape(b, t, kv, h // kv, dh).transpose(0, 2, 3, 1, 4)
    k = k_BxTxKxDh.transpose(0, 2, 1, 3)
    v = v_BxTxKxDh.transpose(0, 2, 1, 3)
    o_BxKxGxTxDh, max_KxG = _causal_attention_core(q, k, v)
    out = o_BxKxGxTxDh.transpose(0, 3, 1, 2, 4).reshape(b, t, h, dh)
    if return_max_logits:
        return out, jax.lax.stop_gradient(max_KxG.reshape(h))
    return out


def max_logits(q_BxTxHxDh, k_BxTxKxDh, causal: bool = True):
    """Per-head maximum logit ``(H,)`` of ``q k^T / sqrt(Dh)`` over the batch and the
    unmasked positions, by a separate product (for cores that do not expose it)."""
    b, t, h, dh = q_BxTxHxDh.shape
    kv = k_BxTxKxDh.shape[2]
    q = jax.lax.stop_gradient(q_BxTxHxDh).reshape(b, t, kv, h // kv, dh)
    s = jnp.einsum("btkgd,bskd->bkgts", q, jax.lax.stop_gradient(k_BxTxKxDh),
                   preferred_element_type=jnp.float32) / math.sqrt(dh)
    if causal:
        s = jnp.where(jnp.arange(t)[:, None] >= jnp.arange(t)[None, :], s, -jnp.inf)
    return jnp.max(s, axis=(0, 3, 4)).reshape(h)


def _attention_fn(impl: str, causal: bool = True, return_max_logits: bool = False):
    """``(q, k, v) -> out`` (or ``(out, max logits (H,))``) of the chosen core."""
    if not causal:  # the ViT: jaxlab's own core is causal-only
        impl = "xla" if impl in ("auto", "jaxlab") else impl
    elif impl == "auto":
        impl = "jaxlab" if jax.default_backend() == "cpu" else "xla"
    if impl == "jaxlab":
        return lambda q, k, v: causal_attention(q, k, v, return_max_logits)

    def core(q, k, v):
        out = jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation=impl)
        return (out, max_logits(q, k, causal)) if return_max_logits else out

    return core


class Attention(nnx.Module):
    """GQA attention (arXiv 2305.13245), causal unless ``cfg.causal`` is False.

    Kernels: ``q (D, H, Dh)``, ``k, v (D, K, Dh)``, ``o (H, Dh, D)``. The core is
    :func:`causal_attention` or ``jax.nn.dot_product_attention`` (``cfg.attention_impl``;
    XLA's for non-causal attention). Rotary embeddings when ``sin, cos`` are given.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, h, k, dh = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.resolved_head_dim
        pd = cfg.param_jnp_dtype
        b = cfg.sparse_block_size
        self.q = DenseGeneral((d,), (h, dh), logical_axes=("embed", "heads", "head_dim"),
                              rngs=rngs, param_dtype=pd, block_size=b)
        self.k = DenseGeneral((d,), (k, dh), logical_axes=("embed", "kv_heads", "head_dim"),
                              rngs=rngs, param_dtype=pd, block_size=b)
        self.v = DenseGeneral((d,), (k, dh), logical_axes=("embed", "kv_heads", "head_dim"),
                              rngs=rngs, param_dtype=pd, block_size=b)
        self.o = DenseGeneral((h, dh), (d,), logical_axes=("heads", "head_dim", "embed"),
                              rngs=rngs, param_dtype=pd, block_size=b,
                              init_scale=1.0 / math.sqrt(2 * cfg.n_layers))
        self.qk_norm = cfg.qk_norm
        self.attention_impl = cfg.attention_impl
        self.causal = cfg.causal
        if cfg.qk_norm:
            self.q_norm = RMSNorm(dh, eps=cfg.norm_eps, param_dtype=pd)
            self.k_norm = RMSNorm(dh, eps=cfg.norm_eps, param_dtype=pd)

    def __call__(self, x_BxTxD, sin=None, cos=None, return_max_logits: bool = False):
        """Output ``(B, T, D)``; with ``return_max_logits`` also the per-head maximum
        logit ``(H,)`` (no gradient)."""
        q = self.q(x_BxTxD)
        k = self.k(x_BxTxD)
        v = self.v(x_BxTxD)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if sin is not None:
            q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
        core = _attention_fn(self.attention_impl, self.causal, return_max_logits)
        if return_max_logits:
            out_BxTxHxDh, max_H = core(q, k, v)
            return self.o(out_BxTxHxDh), max_H
        return self.o(core(q, k, v))
