"""Sparse training: pruning as an Optax wrapper, sharded masks, ERK, N:M, schedules.

Library use::

    from jaxlab.partition import describe_params
    from jaxlab.sparse import PruneSpec, PruningSchedule, prune
    infos = describe_params(params)
    spec = PruneSpec(sparsity=0.5, distribution="erk",
                     schedule=PruningSchedule("cubic", start=250, end=750, frequency=100))
    tx = prune(optax.adamw(1e-3), infos, spec)

From the CLI, ``sparsity.*`` gin bindings (see :mod:`jaxlab.sparse.training`).
"""

from jaxlab.sparse.accounting import (
                                      compute_fractions_to_steps,
                                      equal_compute_steps,
                                      planned_nonzeros,
                                      sparsity_diagnostics,
)
from jaxlab.sparse.adams import adams
from jaxlab.sparse.distributions import distribute, solve_densities
from jaxlab.sparse.masks import topk_masks
from jaxlab.sparse.plan import LeafPlan, PruneSpec, plan_leaves
from jaxlab.sparse.prune import PruneState, prune
from jaxlab.sparse.schedules import PruningSchedule
from jaxlab.sparse.srste import sr_ste
from jaxlab.sparse.structure import block_mask, nm_mask
from jaxlab.sparse.training import SparsityConfig, maybe_prune, sparsity_config

__all__ = [
    "LeafPlan", "PruneSpec", "PruneState", "PruningSchedule", "SparsityConfig", "adams",
    "block_mask", "compute_fractions_to_steps", "distribute", "equal_compute_steps",
    "maybe_prune", "nm_mask", "plan_leaves", "planned_nonzeros", "prune", "solve_densities",
    "sparsity_diagnostics", "sparsity_config", "sr_ste", "topk_masks",
]
