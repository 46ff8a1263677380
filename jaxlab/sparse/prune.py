"""``prune(inner_tx, infos, spec)``: pruning as an Optax wrapper around any transformation.

The state (:class:`PruneState`) holds one bool mask per pruned leaf (shape and sharding of
the parameter), the final target sparsity and the current non-zero count of each pruned
leaf, and a step counter; being plain arrays in the optimizer state, masks are
checkpointed and restored (onto any mesh) with it. Each update ``t``:

1. at a schedule event, recompute the masks from the scores of the live weights (the
   masks only shrink); zero the inner optimizer's moments at pruned entries, so that
   nothing about a pruned weight survives in the inner state (for Muon this matters: the
   whole momentum matrix is orthogonalised);
2. mask the gradients, run the inner transformation;
3. return ``where(mask, u, -w)`` on pruned leaves, so after ``optax.apply_updates`` a
   pruned weight is ``w + (-w) = 0`` exactly, at every step.

Masks are found by exact top-k with a bit-wise threshold search (``masks.topk_masks``):
no argsort, no gather of sharded tensors.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.sparse import masks as masks_lib
from jaxlab.sparse import scores as scores_lib
from jaxlab.sparse import structure
from jaxlab.sparse.plan import LeafPlan, PruneSpec, plan_leaves


class PruneState(NamedTuple):
    """State of :func:`prune`.

    Attributes:
      inner_state: the wrapped transformation's state.
      masks: bool arrays, one per pruned leaf (``plans`` order), the leaf's shape.
      target_sparsity: float32 scalars, final sparsity of each pruned leaf.
      nonzeros: int32 scalars, kept entries of each pruned leaf now.
      count: int32 scalar, updates done.
    """

    inner_state: Any
    masks: tuple
    target_sparsity: tuple
    nonzeros: tuple
    count: jax.Array


def zero_param_moments(inner_state: Any, params: Any, plans: list[LeafPlan], masks) -> Any:
    """Sets to zero, in every params-shaped subtree of ``inner_state`` (Adam's ``mu`` and
    ``nu``, Muon's momentum, ...), the entries where the masks are False."""
    treedef = jax.tree.structure(params)
    shapes = [jnp.shape(x) for x in jax.tree.leaves(params)]
    by_index = {p.index: mk for p, mk in zip(plans, masks)}

    def parts(x):
        """``x``'s entries at the params' leaf positions, or None if ``x`` is not a
        params-shaped tree (``optax.masked`` / ``partition`` states put an empty node
        where another group owns the leaf; those count too)."""
        try:
            items = treedef.flatten_up_to(x)
        except (ValueError, TypeError):
            return None
        for item, shape in zip(items, shapes):
            if isinstance(item, jax.Array | jax.ShapeDtypeStruct):
                if item.shape != shape:
                    return None
            elif jax.tree.leaves(item):
                return None
        return items

    def is_param_tree(x) -> bool:
        return parts(x) is not None

    def reset(x):
        items = parts(x)
        if items is None:
            return x
        items = [masks_lib.apply_mask(v, by_index[i]) if i in by_index and isinstance(v, jax.Array)
                 else v for i, v in enumerate(items)]
        return jax.tree.unflatten(treedef, items)

    return jax.tree.map(reset, inner_state, is_leaf=is_param_tree)


def compute_masks(plans: list[LeafPlan], spec: PruneSpec, step: jax.Array, params: list,
                  grads: list, old: tuple) -> tuple[tuple, tuple]:
    """New masks and their non-zero counts at ``step``.

    Args:
      plans: the pruned leaves.
      params, grads: all leaves of the params and gradients (flatten order).
      old: the current masks (``plans`` order).
    Returns:
      ``(masks, nonzeros)`` tuples in ``plans`` order.
    """
    base_key = jax.random.fold_in(jax.random.key(spec.seed), step)
    live_scores = []
    for j, p in enumerate(plans):
        key = jax.random.fold_in(base_key, p.index) if spec.score == "random" else None
        g = grads[p.index] if spec.score == "saliency" else None
        s = scores_lib.score(spec.score, params[p.index], g, key)
        live_scores.append(scores_lib.restrict_to_live(s, old[j]))
    kept = [spec.schedule.kept(step, p.capacity, jnp.asarray(p.final_kept, jnp.int32))
            for p in plans]
    new: list = [None] * len(plans)
    if spec.structure == "nm":
        new = [structure.nm_mask(s, p.info, spec.n, spec.m) for s, p in zip(live_scores, plans)]
    elif spec.scope == "layer":
        for j, (s, p) in enumerate(zip(live_scores, plans)):
            info = p.info
            if spec.structure == "block":
                tiles = structure.block_scores(s, info, spec.block_size)
                keep = masks_lib.topk_masks([tiles], kept[j], 1)[0]
                new[j] = structure.expand_blocks(keep, info, spec.block_size)
            else:
                k = jnp.reshape(kept[j], info.batch_shape)
                new[j] = masks_lib.topk_masks([s], k, info.batch_ndim)[0]
    else:
        for pool in sorted({p.pool for p in plans}):
            ids = [j for j, p in enumerate(plans) if p.pool == pool]
            pool_scores, total = [], jnp.zeros((), jnp.int32)
            for j in ids:
                info, s = plans[j].info, live_scores[j]
                if spec.structure == "block":
                    s = structure.block_scores(s, info, spec.block_size)
                    live = jnp.isfinite(s)
                    pool_scores.append(scores_lib.normalise_per_matrix(s, live, 1))
                else:
                    pool_scores.append(scores_lib.normalise_per_matrix(s, old[j], info.batch_ndim))
                total = total + jnp.sum(kept[j])
            for j, keep in zip(ids, masks_lib.topk_masks(pool_scores, total, 0)):
                new[j] = (structure.expand_blocks(keep, plans[j].info, spec.block_size)
                          if spec.structure == "block" else keep)
    new = tuple(m & o for m, o in zip(new, old))
    return new, tuple(masks_lib.count_true(m) for m in new)


def prune(inner: optax.GradientTransformation, infos: Any, spec: PruneSpec,
          plans: list[LeafPlan] | None = None) -> optax.GradientTransformationExtraArgs:
    """Wraps ``inner`` so the leaves chosen by ``spec`` are pruned on ``spec.schedule``.

    Args:
      inner: any optax transformation (AdamW, Muon, TrasMuon, a chain with clipping).
      infos: ``describe_params(params)`` tree.
      spec: what, how much, how and when to prune.
      plans: precomputed ``plan_leaves(infos, spec)`` (optional).

    Returns:
      A transformation whose ``update`` needs ``params``; pruned weights are exactly zero
      after every ``optax.apply_updates`` from the first event on.
    """
    plans = plan_leaves(infos, spec) if plans is None else plans

    def init(params):
        leaves = jax.tree.leaves(params)
        return PruneState(
            inner_state=inner.init(params),
            masks=tuple(masks_lib.dense_mask_like(leaves[p.index]) for p in plans),
            target_sparsity=tuple(jnp.asarray(p.final_sparsity, jnp.float32) for p in plans),
            nonzeros=tuple(jnp.asarray(p.size, jnp.int32) for p in plans),
            count=jnp.zeros((), jnp.int32),
        )

    def update(updates, state: PruneState, params=None, **extra):
        if params is None:
            raise ValueError("prune(...).update needs params (to score and zero weights)")
        g_leaves, treedef = jax.tree.flatten(updates)
        p_leaves = jax.tree.leaves(params)
        step = state.count

        def on_event(operand):
            return compute_masks(plans, spec, step, p_leaves, g_leaves, operand[0])

        masks, nnz = jax.lax.cond(jnp.asarray(spec.schedule.is_event(step)), on_event,
                                  lambda operand: operand, (state.masks, state.nonzeros))
        # Unconditional but free: a no-op off events (moments there are already 0), and
        # XLA fuses it into the inner update. Inside the cond it would copy the whole
        # inner state every step.
        inner_state = zero_param_moments(state.inner_state, params, plans, masks)
        by_index = {p.index: m for p, m in zip(plans, masks)}
        masked = [masks_lib.apply_mask(g, by_index[i]) if i in by_index else g
                  for i, g in enumerate(g_leaves)]
        inner_updates, inner_state = inner.update(
            jax.tree.unflatten(treedef, masked), inner_state, params, **extra)
        u_leaves = treedef.flatten_up_to(inner_updates)
        out = [jnp.where(by_index[i], u, -p_leaves[i].astype(u.dtype)) if i in by_index else u
               for i, u in enumerate(u_leaves)]
        new_state = PruneState(inner_state, masks, state.target_sparsity, nnz, step + 1)
        return jax.tree.unflatten(treedef, out), new_state

    return optax.GradientTransformationExtraArgs(init, update)
