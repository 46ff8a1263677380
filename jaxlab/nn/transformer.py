"""Decoder-only transformer LM in Flax NNX (pre-norm, RoPE, GQA, SwiGLU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlab.nn.attention import Attention
from jaxlab.nn.config import ModelConfig
from jaxlab.nn.layers import DenseGeneral, Embedding, RMSNorm
from jaxlab.nn.mlp import SwiGLU
from jaxlab.nn.rope import rope_tables


class Block(nnx.Module):
    """``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        pd = cfg.param_jnp_dtype
        self.attn_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, param_dtype=pd)
        self.attn = Attention(cfg, rngs=rngs)
        self.mlp_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, param_dtype=pd)
        self.mlp = SwiGLU(cfg, rngs=rngs)

    def __call__(self, x_BxTxD, sin, cos, return_max_logits: bool = False):
        """``(B, T, D)``; with ``return_max_logits`` also the attention's per-head maximum
        logit ``(H,)``."""
        attn = self.attn(self.attn_norm(x_BxTxD), sin, cos, return_max_logits)
        a, max_H = attn if return_max_logits else (attn, None)
        x = x_BxTxD + a
        x = x + self.mlp(self.mlp_norm(x))
        return (x, max_H) if return_max_logits else x


def stacked_blocks(cfg: ModelConfig, rngs: nnx.Rngs) -> Block:
    """One ``Block`` whose parameters are stacked ``(L, ...)`` with a leading ``layers`` axis."""

    @nnx.vmap(in_axes=0, out_axes=0)
    def make(r):
        return Block(cfg, rngs=r)

    blocks = make(rngs.split(cfg.n_layers))
    for _, v in nnx.iter_graph(blocks):
        if isinstance(v, nnx.Param):
            v.set_metadata(logical_axes=("layers",) + tuple(v.get_metadata()["logical_axes"]))
    return blocks


def make_blocks(cfg: ModelConfig, rngs: nnx.Rngs):
    """``cfg.n_layers`` blocks: one stacked ``Block`` with ``cfg.scan_layers``, else a list."""
    if cfg.scan_layers:
        return stacked_blocks(cfg, rngs)
    return nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)])


def apply_blocks(blocks, x_BxTxD, cfg: ModelConfig, sin=None, cos=None,
                 return_max_logits: bool = False):
    """Runs :func:`make_blocks`'s blocks over ``x``: a ``lax.scan`` over the stacked
    parameters with ``cfg.scan_layers``, else a Python loop (each block rematerialised in
    the backward pass with ``cfg.remat``). With ``return_max_logits`` also every layer's
    per-head maximum attention logit ``(L, H)``."""
    if cfg.scan_layers:
        graphdef, state = nnx.split(blocks)

        def body(h, layer_state):
            out = nnx.merge(graphdef, layer_state)(h, sin, cos, return_max_logits)
            return out if return_max_logits else (out, None)

        if cfg.remat:
            body = jax.checkpoint(body)
        x_BxTxD, max_LxH = jax.lax.scan(body, x_BxTxD, state)
        return (x_BxTxD, max_LxH) if return_max_logits else x_BxTxD
    maxima = []
    for block in blocks:
        call = lambda b, h: b(h, sin, cos, return_max_logits)  # noqa: E731
        out = (nnx.remat(call) if cfg.remat else call)(block, x_BxTxD)
        x_BxTxD, max_H = out if return_max_logits else (out, None)
        maxima.append(max_H)
    return (x_BxTxD, jnp.stack(maxima)) if return_max_logits else x_BxTxD


class TransformerLM(nnx.Module):
    """Byte- or token-level causal LM: ``tokens (B, T) int32 -> logits (B, T, V)``.

    With ``cfg.scan_layers`` the blocks' parameters are stacked ``(L, ...)`` and applied
    by ``jax.lax.scan``; otherwise they are an ``nnx.List`` of ``L`` blocks.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        pd = cfg.param_jnp_dtype
        self.embed = Embedding(cfg.vocab_size, cfg.d_model, rngs=rngs,
                               init_std=cfg.embed_init_std, param_dtype=pd)
        self.blocks = make_blocks(cfg, rngs)
        self.final_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, param_dtype=pd)
        if not cfg.tie_embeddings:
            self.lm_head = DenseGeneral((cfg.d_model,), (cfg.vocab_size,),
                                        logical_axes=("embed", "vocab"), rngs=rngs,
                                        param_dtype=pd)

    def __call__(self, tokens_BxT, return_max_logits: bool = False):
        """Logits ``(B, T, V)``; with ``return_max_logits`` also the per-layer, per-head
        maximum attention logit ``(L, H)`` (QK-clip's input, no gradient)."""
        cfg = self.cfg
        seq = tokens_BxT.shape[1]
        if seq > cfg.max_seq_len:
            raise ValueError(
                f"sequence length {seq} exceeds the model's max_seq_len={cfg.max_seq_len}; "
                "raise ModelConfig.max_seq_len or shorten the sequences"
            )
        sin, cos = rope_tables(seq, cfg.resolved_head_dim, cfg.rope_theta)
        x = self.embed(tokens_BxT, cfg.compute_jnp_dtype)
        x = apply_blocks(self.blocks, x, cfg, sin, cos, return_max_logits)
        x, max_LxH = x if return_max_logits else (x, None)
        x = self.final_norm(x)
        logits = self.embed.attend(x) if cfg.tie_embeddings else self.lm_head(x)
        return (logits, max_LxH) if return_max_logits else logits


def cross_entropy(logits_BxTxV, targets_BxT):
    """Mean next-token cross-entropy in nats, computed in float32."""
    logits = logits_BxTxV.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets_BxT[..., None], axis=-1)[..., 0]
    return jnp.mean(lse - picked)
