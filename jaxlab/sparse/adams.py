"""AdamS-style N:M training: adaptive L1 decay on the weights an N:M mask would remove.

RECONSTRUCTION (UNVERIFIED). CAST (Huang et al., arXiv 2509.25996) describes AdamS as Adam
with an L1 decay, applied only to the weights outside the current N:M mask (the mask
keeps the N largest |w| of each group of M and is recomputed every ``T1 = 10`` steps),
under a decay scheduler, so the model slides continuously into the N:M pattern. The
exact equations are not public; this module implements the following, every choice a
parameter:

- masks ``E``: N:M magnitude masks (groups along fan-in), refreshed every ``refresh``
  steps from the current weights (not restricted to the previous mask);
- the inner update ``u`` (Adam/AdamW, or anything) is computed from the raw gradients;
- decay strength ``d_t = decay * ramp(t) * rms(u)`` per matrix, with ``ramp`` rising
  linearly from 0 at ``start`` to 1 at ``end``; scaling by the RMS of the inner update
  makes the decay follow the learning-rate schedule and Adam's step size ("adaptive");
- proximal L1 step on the masked-out weights: ``w <- sign(w + u) max(|w + u| - d_t, 0)``
  (never crosses zero), plain ``w + u`` on the kept ones;
- at ``end`` the mask is frozen and applied (weights outside it become exactly 0, the
  inner moments there are zeroed, gradients are masked from then on), as in ``prune``.

Not reconstructed: CAST's learnable weight scaling and self-distillation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.sparse import masks as masks_lib
from jaxlab.sparse import structure
from jaxlab.sparse.plan import LeafPlan
from jaxlab.sparse.prune import zero_param_moments

IS_RECONSTRUCTION = True


class AdamSState(NamedTuple):
    """State of :func:`adams` (masks in plans order; ``nonzeros`` counts the weights that
    are non-zero by construction: the whole leaf before ``end``, the mask after)."""

    inner_state: Any
    masks: tuple
    target_sparsity: tuple
    nonzeros: tuple
    count: jax.Array


def adams(inner: optax.GradientTransformation, plans: list[LeafPlan], total_steps: int,
          n: int = 2, m: int = 4, decay: float = 1.0, refresh: int = 10, start: int = 0,
          end: int | None = None) -> optax.GradientTransformationExtraArgs:
    """Wraps ``inner`` (Adam/AdamW for AdamS) with the reconstructed adaptive L1 decay.

    Args:
      inner: the optimizer.
      plans: leaves to make N:M sparse.
      total_steps: run length (default ``end``: 90% of it).
      n, m: the N:M pattern.
      decay: peak decay strength in units of the inner update's RMS per step.
      refresh: steps between mask refreshes (CAST: 10).
      start, end: decay ramps from ``start`` to ``end``; at ``end`` the mask is final.
    """
    end = int(0.9 * total_steps) if end is None else int(end)
    if not 0 <= start <= end:
        raise ValueError(f"AdamS needs 0 <= start <= end, got start={start}, end={end}")
    if refresh < 1:
        raise ValueError(f"AdamS refresh period must be >= 1, got {refresh}")
    for p in plans:
        structure.check_nm(p.info, n, m)

    def init(params):
        leaves = jax.tree.leaves(params)
        masks = tuple(structure.nm_mask(jnp.abs(leaves[p.index]), p.info, n, m) for p in plans)
        return AdamSState(inner.init(params), masks,
                          tuple(jnp.asarray(1.0 - n / m, jnp.float32) for _ in plans),
                          tuple(jnp.asarray(p.size, jnp.int32) for p in plans),
                          jnp.zeros((), jnp.int32))

    def update(updates, state: AdamSState, params=None, **extra):
        if params is None:
            raise ValueError("adams(...).update needs params")
        step = state.count
        g_leaves, treedef = jax.tree.flatten(updates)
        p_leaves = jax.tree.leaves(params)
        frozen = step > end  # the mask was applied at `end`
        refresh_now = (step <= end) & ((step % refresh == 0) | (step == end))

        def new_masks(old):
            return tuple(structure.nm_mask(jnp.abs(p_leaves[p.index]), p.info, n, m)
                         for p in plans)

        masks = jax.lax.cond(refresh_now, new_masks, lambda old: old, state.masks)
        inner_state = jax.lax.cond(
            step == end, lambda s: zero_param_moments(s, params, plans, masks), lambda s: s,
            state.inner_state)
        by_index = {p.index: (j, mk) for j, (p, mk) in enumerate(zip(plans, masks))}
        g_leaves = [jnp.where(frozen | (step == end), masks_lib.apply_mask(g, by_index[i][1]), g)
                    if i in by_index else g for i, g in enumerate(g_leaves)]
        u, inner_state = inner.update(jax.tree.unflatten(treedef, g_leaves), inner_state,
                                      params, **extra)
        u_leaves = list(treedef.flatten_up_to(u))
        span = max(end - start, 1)
        ramp = jnp.clip((step - start) / span, 0.0, 1.0).astype(jnp.float32)
        for i, (j, mk) in by_index.items():
            p, w, du = plans[j], p_leaves[i], u_leaves[i]
            um = p.info.as_matrices(du.astype(jnp.float32))
            rms = jnp.sqrt(jnp.mean(jnp.square(um), axis=(1, 2)))
            d = p.info.from_matrices(jnp.broadcast_to(
                (decay * ramp * rms)[:, None, None], um.shape))
            moved = (w + du).astype(jnp.float32)
            shrunk = jnp.sign(moved) * jnp.maximum(jnp.abs(moved) - d, 0.0)
            decayed = jnp.where(mk, du, (shrunk - w).astype(du.dtype))
            hard = jnp.where(mk, du, -w.astype(du.dtype))
            u_leaves[i] = jnp.where(step >= end, hard, decayed)
        nnz = tuple(jnp.where(step >= end, masks_lib.count_true(mk), p.size).astype(jnp.int32)
                    for p, mk in zip(plans, masks))
        new_state = AdamSState(inner_state, masks, state.target_sparsity, nnz, step + 1)
        return jax.tree.unflatten(treedef, u_leaves), new_state

    return optax.GradientTransformationExtraArgs(init, update)
