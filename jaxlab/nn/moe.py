"""Mixture-of-experts MLP: top-k routing over E SwiGLU experts with a load-balancing loss.

Per token ``x (D,)``: router probabilities ``p = softmax(x W_r)`` over the E experts
(float32), the top k of them (``moe_renormalize``: divided by their sum), and
``y = sum_{e in top-k} p_e SwiGLU_e(x)``. The load-balancing loss is Switch
Transformer's (Fedus et al., arXiv 2101.03961, eq. 4) for k choices,
``E sum_e f_e P_e`` with ``f_e`` the fraction of the ``N k`` assignments that went to
``e`` and ``P_e`` the mean router probability of ``e``: 1 when balanced, E when one expert
takes everything.

Dispatch: dropless (``moe_capacity_factor=None``) sorts the ``N k`` assignments by expert
and runs the experts as grouped matmuls (``jax.lax.ragged_dot``; GPU and TPU have kernels,
the CPU lowering computes every group densely). With a capacity factor ``c`` each expert
gets ``C = ceil(c N k / E)`` slots, filled first by every token's first choice, then its
second...; an assignment past ``C`` is dropped (its gate contributes nothing) and the
experts run as one batched ``(E, C, D) x (E, D, F)`` product, shardable over an expert
mesh axis.

Weights: router ``(D, E)`` (labelled ``head``: to AdamW), expert stacks ``gate, up (E, D,
F)`` and ``down (E, F, D)`` with a leading ``experts`` logical axis, so every matrix
optimizer sees E matrices per leaf (``(L, E, ...)`` under scan: L E matrices).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlab.nn.config import ModelConfig
from jaxlab.nn.layers import param


def _normal(std: float):
    return jax.nn.initializers.truncated_normal(std / 0.87962566)


class MoE(nnx.Module):
    """``x (B, T, D) -> (y (B, T, D), {"moe_load_loss", "moe_dropped_frac"})``."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, f, e = cfg.d_model, cfg.expert_ff_dim, cfg.moe_experts
        pd = cfg.param_jnp_dtype
        self.cfg = cfg
        self.router = param(rngs, _normal(1.0 / math.sqrt(d)), (d, e), pd,
                            ("embed", "expert_choice"), label="head")
        axes_in, axes_out = ("experts", "embed", "mlp"), ("experts", "mlp", "embed")
        self.gate = param(rngs, _normal(1.0 / math.sqrt(d)), (e, d, f), pd, axes_in,
                          fan_in_ndim=1)
        self.up = param(rngs, _normal(1.0 / math.sqrt(d)), (e, d, f), pd, axes_in,
                        fan_in_ndim=1)
        self.down = param(rngs, _normal(1.0 / math.sqrt(f) / math.sqrt(2 * cfg.n_layers)),
                          (e, f, d), pd, axes_out, fan_in_ndim=1)

    def route(self, x_NxD):
        """``(expert ids (N, k), gates (N, k), load loss)`` of ``N`` tokens."""
        cfg = self.cfg
        logits = x_NxD.astype(jnp.float32) @ self.router[...].astype(jnp.float32)
        probs = jax.nn.softmax(logits, axis=-1)
        gates, ids = jax.lax.top_k(probs, cfg.moe_top_k)
        if cfg.moe_renormalize:
            gates = gates / jnp.sum(gates, axis=-1, keepdims=True)
        counts = jnp.zeros((cfg.moe_experts,), jnp.float32).at[ids.reshape(-1)].add(1.0)
        frac = counts / ids.size
        load = cfg.moe_experts * jnp.sum(frac * jnp.mean(probs, axis=0))
        return ids, gates, load

    def _experts_grouped(self, xs_MxD, group_sizes):
        """SwiGLU of each expert on its contiguous group of rows (dropless path)."""
        dt = xs_MxD.dtype
        g = jax.lax.ragged_dot(xs_MxD, self.gate[...].astype(dt), group_sizes)
        u = jax.lax.ragged_dot(xs_MxD, self.up[...].astype(dt), group_sizes)
        return jax.lax.ragged_dot(jax.nn.silu(g) * u, self.down[...].astype(dt), group_sizes)

    def _experts_batched(self, x_ExCxD):
        dt = x_ExCxD.dtype
        g = jnp.einsum("ecd,edf->ecf", x_ExCxD, self.gate[...].astype(dt))
        u = jnp.einsum("ecd,edf->ecf", x_ExCxD, self.up[...].astype(dt))
        return jnp.einsum("ecf,efd->ecd", jax.nn.silu(g) * u, self.down[...].astype(dt))

    def __call__(self, x_BxTxD):
        cfg = self.cfg
        b, t, d = x_BxTxD.shape
        x = x_BxTxD.reshape(b * t, d)
        n, k, e = b * t, cfg.moe_top_k, cfg.moe_experts
        ids, gates, load = self.route(x)
        # Assignments in priority order: every token's first choice, then its second...
        flat_ids = ids.T.reshape(-1)                          # (k N,)
        flat_tokens = jnp.tile(jnp.arange(n), k)               # (k N,)
        flat_gates = gates.T.reshape(-1).astype(x.dtype)
        if cfg.moe_capacity_factor is None:
            order = jnp.argsort(flat_ids, stable=True)
            sizes = jnp.zeros((e,), jnp.int32).at[flat_ids].add(1)
            ys = self._experts_grouped(x[flat_tokens[order]], sizes)
            y = jnp.zeros_like(x).at[flat_tokens[order]].add(ys * flat_gates[order, None])
            dropped = jnp.zeros((), jnp.float32)
        else:
            cap = math.ceil(cfg.moe_capacity_factor * n * k / e)
            onehot = jax.nn.one_hot(flat_ids, e, dtype=jnp.int32)          # (k N, E)
            slot = jnp.sum((jnp.cumsum(onehot, axis=0) - 1) * onehot, axis=1)  # position
            keep = slot < cap
            # Slot table (E, C) of token indices; unfilled slots point at an extra zero row.
            table = jnp.full((e, cap), n, jnp.int32).at[
                jnp.where(keep, flat_ids, e), jnp.where(keep, slot, 0)].set(
                flat_tokens, mode="drop")
            weight = jnp.zeros((e, cap), x.dtype).at[
                jnp.where(keep, flat_ids, e), jnp.where(keep, slot, 0)].set(
                flat_gates, mode="drop")
            x_pad = jnp.concatenate([x, jnp.zeros((1, d), x.dtype)], axis=0)
            ys = self._experts_batched(x_pad[table]) * weight[..., None]    # (E, C, D)
            y = jnp.zeros((n + 1, d), x.dtype).at[table.reshape(-1)].add(
                ys.reshape(-1, d))[:n]
            dropped = 1.0 - jnp.mean(keep.astype(jnp.float32))
        return y.reshape(b, t, d), {"moe_load_loss": load, "moe_dropped_frac": dropped}


def moe_reference(moe: MoE, x_BxTxD):
    """Every expert on every token, weighted by the router's gates (dropless): the
    definition the fast paths must match (tests)."""
    b, t, d = x_BxTxD.shape
    x = x_BxTxD.reshape(b * t, d)
    ids, gates, _ = moe.route(x)
    g = jnp.einsum("nd,edf->enf", x, moe.gate[...])
    u = jnp.einsum("nd,edf->enf", x, moe.up[...])
    out = jnp.einsum("enf,efd->end", jax.nn.silu(g) * u, moe.down[...])    # (E, N, D)
    weights = jnp.zeros((b * t, moe.cfg.moe_experts)).at[
        jnp.arange(b * t)[:, None], ids].set(gates)                         # (N, E)
    return jnp.einsum("ne,end->nd", weights, out).reshape(b, t, d)
