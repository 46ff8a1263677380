"""Parameter counts and training FLOPs per token, from the config (checked against arrays).

Conventions (Kaplan et al. arXiv 2001.08361, Hoffmann et al. arXiv 2203.15556):
non-embedding parameters N exclude the token embedding and the output head; training
FLOPs per token are 3x the forward FLOPs, with the forward counting 2 FLOPs per
multiply-accumulate of every matmul (blocks and logits) plus attention scores and
values at the full context, ``2 * 2 * L * T * H * Dh`` (causal masking not subtracted,
since the XLA attention computes the full T x T scores).
"""

from __future__ import annotations

import math

import jax
from flax import nnx

from jaxlab.nn.config import ModelConfig


def block_params(cfg: ModelConfig, active: bool = False) -> int:
    """Parameters of one block; a mixture of experts counts its router and all E experts,
    or with ``active`` the ``moe_top_k`` experts a token goes through."""
    d, h, k, dh, f = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.resolved_head_dim, cfg.ff_dim
    attn = d * h * dh + 2 * d * k * dh + h * dh * d
    if cfg.moe_experts:
        used = cfg.moe_top_k if active else cfg.moe_experts
        mlp = d * cfg.moe_experts + used * 3 * d * cfg.expert_ff_dim
    else:
        mlp = 3 * d * f
    norms = 2 * d + (2 * dh if cfg.qk_norm else 0)
    return attn + mlp + norms


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """``{"total", "non_embedding", "embedding", "head", "non_embedding_stored"}``.

    ``total`` counts every stored parameter; ``non_embedding`` (N of the scaling laws)
    counts the *active* ones of a mixture of experts (router and the top-k experts a token
    uses), ``non_embedding_stored`` all of them (equal for dense models).
    """
    embedding = cfg.vocab_size * cfg.d_model
    head = 0 if cfg.tie_embeddings else cfg.d_model * cfg.vocab_size
    stored = cfg.n_layers * block_params(cfg) + cfg.d_model  # + final norm
    active = cfg.n_layers * block_params(cfg, active=True) + cfg.d_model
    return {
        "total": embedding + head + stored,
        "non_embedding": active,
        "embedding": embedding,
        "head": head,
        "non_embedding_stored": stored,
    }


def count_params(state) -> int:
    """Number of scalars in an ``nnx.State`` or any array tree."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


def model_param_count(model: nnx.Module) -> int:
    return count_params(nnx.state(model, nnx.Param))


def flops_per_token(cfg: ModelConfig, seq_len: int) -> dict[str, float]:
    """Forward and training (3x forward) FLOPs per token at context ``seq_len`` (a mixture
    of experts: of its active parameters, router included)."""
    d, h, dh = cfg.d_model, cfg.n_heads, cfg.resolved_head_dim
    matmul_params = cfg.n_layers * (block_params(cfg, active=True) - 2 * d
                                    - (2 * dh if cfg.qk_norm else 0))
    logits = d * cfg.vocab_size
    attention = 2 * cfg.n_layers * seq_len * h * dh  # QK^T and AV, MACs per token
    forward = 2.0 * (matmul_params + logits + attention)
    return {"forward": forward, "train": 3.0 * forward,
            "train_6n": 6.0 * param_counts(cfg)["non_embedding"]}
