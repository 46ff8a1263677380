"""Decoder-only transformer LM in Flax NNX (pre-norm, RoPE, GQA, SwiGLU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlab.nn.attention import Attention
from jaxlab.nn.config import ModelConfig
from jaxlab.nn.layers import DenseGeneral, Embedding, RMSNorm
from jaxlab.nn.mlp import SwiGLU
from jaxlab.nn.moe import MoE
from jaxlab.nn.rope import rope_tables


class Block(nnx.Module):
    """``x + attn(norm(x))`` then ``x + mlp(norm(x))``; the MLP is a mixture of experts
    (:class:`jaxlab.nn.moe.MoE`) when ``cfg.moe_experts > 0``."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        pd = cfg.param_jnp_dtype
        self.attn_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, param_dtype=pd)
        self.attn = Attention(cfg, rngs=rngs)
        self.mlp_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, param_dtype=pd)
        self.mlp = MoE(cfg, rngs=rngs) if cfg.moe_experts else SwiGLU(cfg, rngs=rngs)
        self.moe = bool(cfg.moe_experts)

    def __call__(self, x_BxTxD, sin, cos, max_logits: bool = False):
        """``((B, T, D), aux)``: ``aux`` holds the MoE's ``moe_load_loss`` and
        ``moe_dropped_frac`` (scalars) and, with ``max_logits``, the attention's per-head
        maximum logit ``max_logits (H,)``."""
        attn = self.attn(self.attn_norm(x_BxTxD), sin, cos, max_logits)
        a, aux = (attn[0], {"max_logits": attn[1]}) if max_logits else (attn, {})
        x = x_BxTxD + a
        if self.moe:
            m, moe_aux = self.mlp(self.mlp_norm(x))
            aux.update(moe_aux)
        else:
            m = self.mlp(self.mlp_norm(x))
        return x + m, aux


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
                 max_logits: bool = False):
    """Runs :func:`make_blocks`'s blocks over ``x``: a ``lax.scan`` over the stacked
    parameters with ``cfg.scan_layers``, else a Python loop (each block rematerialised in
    the backward pass with ``cfg.remat``). Returns ``(x, aux)`` with every block's
    :class:`Block` aux stacked along a leading layer axis (``max_logits (L, H)``,
    ``moe_load_loss (L,)``...)."""
    if cfg.scan_layers:
        graphdef, state = nnx.split(blocks)

        def body(h, layer_state):
            return nnx.merge(graphdef, layer_state)(h, sin, cos, max_logits)

        if cfg.remat:
            body = jax.checkpoint(body)
        return jax.lax.scan(body, x_BxTxD, state)
    auxes = []
    for block in blocks:
        call = lambda b, h: b(h, sin, cos, max_logits)  # noqa: E731
        x_BxTxD, aux = (nnx.remat(call) if cfg.remat else call)(block, x_BxTxD)
        auxes.append(aux)
    return x_BxTxD, jax.tree.map(lambda *xs: jnp.stack(xs), *auxes)


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

    def __call__(self, tokens_BxT, *, with_aux: bool = False, max_logits: bool = False):
        """Logits ``(B, T, V)``; with ``with_aux`` also the blocks' aux (``apply_blocks``):
        the MoE's ``moe_load_loss (L,)`` and ``moe_dropped_frac (L,)`` and, with
        ``max_logits``, the per-layer, per-head maximum attention logit ``max_logits (L,
        H)`` (QK-clip's input, no gradient)."""
        cfg = self.cfg
        seq = tokens_BxT.shape[1]
        if seq > cfg.max_seq_len:
            raise ValueError(
                f"sequence length {seq} exceeds the model's max_seq_len={cfg.max_seq_len}; "
                "raise ModelConfig.max_seq_len or shorten the sequences"
            )
        sin, cos = rope_tables(seq, cfg.resolved_head_dim, cfg.rope_theta)
        x = self.embed(tokens_BxT, cfg.compute_jnp_dtype)
        x, aux = apply_blocks(self.blocks, x, cfg, sin, cos, max_logits)
        x = self.final_norm(x)
        logits = self.embed.attend(x) if cfg.tie_embeddings else self.lm_head(x)
        return (logits, aux) if with_aux else logits


def cross_entropy(logits_BxTxV, targets_BxT):
    """Mean next-token cross-entropy in nats, computed in float32."""
    logits = logits_BxTxV.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets_BxT[..., None], axis=-1)[..., 0]
    return jnp.mean(lse - picked)
