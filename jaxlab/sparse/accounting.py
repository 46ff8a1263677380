"""Non-zero counts, densities, the average parameter count and compute of a sparse run.

Jin et al. ("The Journey Matters", arXiv 2501.12486) fit one Chinchilla law to sparse and
dense runs by replacing N with ``N_bar``, the mean over training steps of the non-zero
parameters; Frantar et al. (arXiv 2309.08520) use the final non-zero non-embedding count.
Training compute of step ``t`` is ``6 * N_nonzero_non_embedding(t) * tokens``.

- :func:`sparsity_diagnostics` gives the per-step figures from a wrapper's state
  (``sparse/nonzero_params``, ``sparse/nonzero_non_embedding``, ``sparse/density/<label>``,
  ``sparse/target_sparsity``, ``sparse/sparsity``); the loop averages
  ``sparse/nonzero_non_embedding`` into ``n_bar`` and sums compute into ``summary.json``.
- :func:`count_nonzeros` counts them in actual parameters (the saved ones, for
  ``summary.json``: a report's non-zero counts are measured, not targets).
- :func:`planned_nonzeros` is the same count for every step, from the schedule alone;
  :func:`compute_fractions_to_steps` turns "prune from 25% to 75% of training compute"
  into the start and end steps of that very schedule; :func:`equal_compute_steps` is
  the length of a pruned run that spends the compute of a given dense run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab import partition
from jaxlab.sparse.plan import EMBED_LABELS, LeafPlan
from jaxlab.sparse.schedules import PruningSchedule


def _is_non_embedding(info) -> bool:
    return info.label not in EMBED_LABELS


def count_nonzeros(params: Any, infos: Any) -> dict[str, int]:
    """Non-zero entries of ``params`` (array tree like ``infos``, the ParamInfo tree):
    ``{"total": all parameters, "non_embedding": without embeddings and heads}``."""
    leaves, flat = jax.tree.leaves(params), partition.infos_list(infos)
    if len(leaves) != len(flat):
        raise ValueError(f"params have {len(leaves)} leaves but infos describe {len(flat)}")
    counts = [int(jax.device_get(jnp.count_nonzero(x))) for x in leaves]
    return {"total": sum(counts),
            "non_embedding": sum(c for c, f in zip(counts, flat) if _is_non_embedding(f))}


def sparsity_diagnostics(infos: Any, plans: list[LeafPlan], sparsity: float
                         ) -> Callable[[Any], dict[str, jnp.ndarray]]:
    """``state -> {name: scalar}`` for any state with a ``nonzeros`` tuple (plans order).

    Args:
      infos: the ParamInfo tree of all parameters.
      plans: the pruned leaves.
      sparsity: the configured target S (logged as ``sparse/target_sparsity``).
    """
    flat = partition.infos_list(infos)
    pruned = {p.index for p in plans}
    size = {i: math.prod(info.shape) for i, info in enumerate(flat)}
    dense_total = sum(size[i] for i in size if i not in pruned)
    dense_non_embed = sum(size[i] for i, f in enumerate(flat)
                          if i not in pruned and _is_non_embedding(f))
    labels = sorted({f.label for f in flat})
    label_size = {lab: sum(size[i] for i, f in enumerate(flat) if f.label == lab) for lab in labels}
    label_dense = {lab: sum(size[i] for i, f in enumerate(flat) if f.label == lab and i not in pruned)
                   for lab in labels}
    pruned_size = sum(p.size for p in plans)
    big = dense_total + pruned_size >= 2**31
    count_dtype = jnp.float32 if big else jnp.int32

    def diagnostics(state) -> dict[str, jnp.ndarray]:
        nnz = [jnp.asarray(n, count_dtype) for n in state.nonzeros]
        total = sum(nnz, jnp.asarray(dense_total, count_dtype))
        non_embed = sum((n for n, p in zip(nnz, plans) if _is_non_embedding(p.info)),
                        jnp.asarray(dense_non_embed, count_dtype))
        out = {"sparse/nonzero_params": total, "sparse/nonzero_non_embedding": non_embed,
               "sparse/target_sparsity": jnp.asarray(sparsity, jnp.float32)}
        if plans:
            out["sparse/sparsity"] = 1.0 - sum(n.astype(jnp.float32) for n in nnz) / pruned_size
        for lab in labels:
            kept = sum((n.astype(jnp.float32) for n, p in zip(nnz, plans) if p.info.label == lab),
                       jnp.float32(label_dense[lab]))
            out[f"sparse/density/{lab}"] = kept / label_size[lab]
        return out

    return diagnostics


def planned_nonzeros(infos: Any, plans: list[LeafPlan], schedule: PruningSchedule,
                     total_steps: int, non_embedding: bool = True) -> np.ndarray:
    """Non-zero parameters after each update ``t = 0 .. total_steps - 1`` (int64, shape
    ``(total_steps,)``), as the wrapper's diagnostics will report them."""
    flat = partition.infos_list(infos)
    pruned = {p.index for p in plans}
    keep = (lambda f: _is_non_embedding(f)) if non_embedding else (lambda f: True)
    dense = sum(math.prod(f.shape) for i, f in enumerate(flat) if i not in pruned and keep(f))
    steps = np.arange(total_steps)
    out = np.full(total_steps, dense, np.int64)
    for p in plans:
        if not keep(p.info):
            continue
        kept = schedule.kept(steps[:, None], p.capacity, np.asarray(p.final_kept)[None, :])
        out += kept.sum(axis=1) * p.unit
    return out


def compute_fractions_to_steps(infos: Any, plans: list[LeafPlan], kind: str, c_start: float,
                               c_end: float, frequency: int, total_steps: int,
                               initial_sparsity: float = 0.0) -> PruningSchedule:
    """The schedule of ``kind`` that starts and ends at the given fractions of the run's
    own training compute (Jin et al., arXiv 2501.12486: 25% to 75% is near-optimal).

    With ``C(t) = sum_{tau < t} N(tau)`` (N from :func:`planned_nonzeros`), returns
    integer ``start, end`` with ``C(start) ~ c_start C(T)`` and ``C(end) ~ c_end C(T)``.
    """
    return _fraction_schedule(lambda sched: planned_nonzeros(infos, plans, sched, total_steps),
                              kind, c_start, c_end, frequency, total_steps, initial_sparsity)


def _fraction_schedule(nonzeros: Callable[[PruningSchedule], np.ndarray], kind: str,
                       c_start: float, c_end: float, frequency: int, total_steps: int,
                       initial_sparsity: float) -> PruningSchedule:
    """:func:`compute_fractions_to_steps` for any ``nonzeros(schedule) -> (T,)`` trace.

    Solved deterministically: ``start = c_s C / N_0``, ``end = T - (1 - c_e) C / N_f``
    for the total C that makes the pruning phase's own compute consistent (bisection on C,
    which is monotone), then the best of the neighbouring integer pairs.
    """
    if not 0.0 <= c_start <= c_end <= 1.0:
        raise ValueError(f"compute fractions need 0 <= start <= end <= 1, got {c_start}, {c_end}")
    T = total_steps

    def make(s: int, e: int) -> PruningSchedule:
        s = int(min(max(s, 0), T - 1))
        e = int(min(max(e, s), T - 1))
        return PruningSchedule(kind, s, e, frequency, initial_sparsity)

    def fractions(sched: PruningSchedule) -> tuple[float, float, np.ndarray]:
        c = np.concatenate([[0], np.cumsum(nonzeros(sched))])
        return c[sched.start] / c[T], c[sched.end] / c[T], c

    n0 = nonzeros(make(T - 1, T - 1))[0]
    nf = nonzeros(make(0, 0))[-1]
    lo, hi = float(T * nf), float(T * n0)

    def bounds(c_total: float) -> tuple[float, float]:
        return c_start * c_total / n0, T - (1.0 - c_end) * c_total / nf

    for _ in range(60):  # g(C) = C - C_realised(C) is increasing in C
        mid = 0.5 * (lo + hi)
        s, e = bounds(mid)
        _, _, c = fractions(make(round(s), round(e)))
        if mid - c[T] > 0:
            hi = mid
        else:
            lo = mid
    s, e = bounds(0.5 * (lo + hi))
    best, best_err = None, math.inf
    for si in {math.floor(s), math.ceil(s)}:
        for ei in {math.floor(e), math.ceil(e)}:
            sched = make(si, ei)
            fs, fe, _ = fractions(sched)
            err = abs(fs - c_start) if kind == "oneshot" else max(abs(fs - c_start),
                                                                   abs(fe - c_end))
            if err < best_err:
                best, best_err = sched, err
    return best


def equal_compute_steps(dense_steps: int, sparsity: float, kind: str, c_start: float = 0.25,
                        c_end: float = 0.75, frequency: int = 1) -> int:
    """Steps of a run pruned to ``sparsity`` (``kind`` from ``c_start`` to ``c_end`` of its
    own compute, as ``sparsity.unit = 'compute'`` does) that spend the training compute
    of ``dense_steps`` dense steps of the same model: the smallest T with
    ``sum_{t < T} density(t) >= dense_steps``.

    This is the equal-compute comparison of Jin et al. (arXiv 2501.12486): a sparse run
    trains on more tokens for the compute of a dense one. It counts every non-embedding
    parameter as prunable (the hidden matrices are all but the norms' ~0.2% here), so a
    run's measured ``train_flops_sparse`` lands within a fraction of a percent of the
    dense run's; a sweep reports the measured figure.
    """
    if dense_steps < 1:
        raise ValueError(f"dense_steps must be >= 1, got {dense_steps!r}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    if sparsity == 0.0:
        return int(dense_steps)

    def compute(T: int) -> float:
        density = lambda sched: sched.density(np.arange(T), 1.0 - sparsity)  # noqa: E731
        sched = _fraction_schedule(density, kind, c_start, c_end, frequency, T, 0.0)
        return float(np.sum(density(sched)))

    lo, hi = int(dense_steps), math.ceil(dense_steps / (1.0 - sparsity)) + 1
    while lo < hi:  # compute(T) grows with T
        mid = (lo + hi) // 2
        if compute(mid) >= dense_steps:
            hi = mid
        else:
            lo = mid + 1
    return lo
