"""SR-STE: N:M training with a sparse-refined straight-through estimator (Zhou et al.,
arXiv 2102.04010).

The forward pass uses ``W * E`` where ``E`` is the N:M mask of the *dense* weights ``W``
(groups along fan-in, see ``structure.nm_mask``); the gradient with respect to the
masked weights is used for the dense ones (straight-through), plus a decay that pulls the
masked-out weights towards zero:

    W <- W - lr * (g + lambda_W * (1 - E) * W),    lambda_W = 2e-4,

and ``E`` is recomputed from the new ``W`` every step. As an Optax wrapper the dense
weights live in the state (``dense``) and the model's parameters are ``W * E``, so masked
entries of the parameters are exactly zero after every step. The decay term is added to
the gradient *before* the inner optimizer, as in the reference implementation; with SGD
the update is exactly the formula above.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.sparse import masks as masks_lib
from jaxlab.sparse import structure
from jaxlab.sparse.plan import LeafPlan


class SrSteState(NamedTuple):
    """State of :func:`sr_ste`: dense weights and masks of the pruned leaves (plans order)."""

    inner_state: Any
    dense: tuple
    masks: tuple
    target_sparsity: tuple
    nonzeros: tuple
    count: jax.Array


def sr_ste(inner: optax.GradientTransformation, plans: list[LeafPlan], n: int = 2, m: int = 4,
           decay: float = 2e-4) -> optax.GradientTransformationExtraArgs:
    """Wraps ``inner`` with SR-STE N:M training of the leaves in ``plans``.

    Args:
      inner: the optimizer of the dense weights (SGD in the paper; AdamW, Muon work).
      plans: pruned leaves (``plan_leaves`` with ``structure='nm'``).
      n, m: the N:M pattern.
      decay: ``lambda_W`` of the sparse-refined term.
    """
    for p in plans:
        structure.check_nm(p.info, n, m)

    def init(params):
        leaves = jax.tree.leaves(params)
        dense = tuple(jnp.copy(leaves[p.index]) for p in plans)
        masks = tuple(structure.nm_mask(jnp.abs(w), p.info, n, m) for w, p in zip(dense, plans))
        return SrSteState(
            inner_state=inner.init(params), dense=dense, masks=masks,
            target_sparsity=tuple(jnp.asarray(1.0 - n / m, jnp.float32) for _ in plans),
            nonzeros=tuple(masks_lib.count_true(mk) for mk in masks),
            count=jnp.zeros((), jnp.int32))

    def update(updates, state: SrSteState, params=None, **extra):
        if params is None:
            raise ValueError("sr_ste(...).update needs params")
        g_leaves, treedef = jax.tree.flatten(updates)
        p_leaves = jax.tree.leaves(params)
        g_leaves, w_leaves = list(g_leaves), list(p_leaves)
        for j, p in enumerate(plans):
            w, e = state.dense[j], state.masks[j]
            g = g_leaves[p.index]
            g_leaves[p.index] = g + (decay * jnp.where(e, 0.0, w)).astype(g.dtype)
            w_leaves[p.index] = w
        u, inner_state = inner.update(jax.tree.unflatten(treedef, g_leaves), state.inner_state,
                                      jax.tree.unflatten(treedef, w_leaves), **extra)
        u_leaves = list(treedef.flatten_up_to(u))
        dense, masks = [], []
        for j, p in enumerate(plans):
            w_new = (state.dense[j] + u_leaves[p.index]).astype(state.dense[j].dtype)
            e_new = structure.nm_mask(jnp.abs(w_new), p.info, n, m)
            prm = p_leaves[p.index]
            u_leaves[p.index] = jnp.where(e_new, w_new - prm, -prm).astype(u_leaves[p.index].dtype)
            dense.append(w_new)
            masks.append(e_new)
        new_state = SrSteState(inner_state, tuple(dense), tuple(masks), state.target_sparsity,
                               tuple(masks_lib.count_true(mk) for mk in masks), state.count + 1)
        return jax.tree.unflatten(treedef, u_leaves), new_state

    return optax.GradientTransformationExtraArgs(init, update)
