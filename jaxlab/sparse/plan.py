"""Which leaves are pruned, to what final density, with which structure: the static plan.

A :class:`PruneSpec` holds every choice (gin-free, so library users build it directly);
:func:`plan_leaves` turns it and the model's ParamInfo tree into one :class:`LeafPlan` per
pruned leaf with exact final kept counts per matrix.

Leaves by label (``describe_params``): hidden matrices by default; embeddings (and an
untied output head) optionally, at sparsity ``1 - sqrt(1 - S)`` (Frantar et al., arXiv
2309.08520); vectors (norm gains, biases) never. ``per_path`` (``{regex: sparsity}``)
overrides any non-vector leaf; sparsity 0 keeps it dense.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from jaxlab import partition
from jaxlab.partition import ParamInfo
from jaxlab.sparse import distributions, schedules, structure
from jaxlab.sparse.scores import SCORES

SCOPES = ("layer", "global")
EMBED_LABELS = (partition.EMBEDDING, partition.HEAD)


@dataclasses.dataclass(frozen=True)
class PruneSpec:
    """How to prune.

    Attributes:
      sparsity: final target sparsity S of the pooled leaves (``labels``).
      distribution: ``uniform``, ``er``, ``erk`` or ``custom`` (see ``distributions``).
      erk_power: exponent of the ERK raw density.
      labels: labels whose leaves form the main pool (``matrix`` by default).
      embeddings: also prune ``embedding`` and ``head`` leaves, at ``1 - sqrt(1 - S)``.
      per_path: ``{regex: sparsity}`` overrides (later entries win).
      score: ``magnitude``, ``random`` or ``saliency``.
      scope: ``layer`` (top-k per matrix) or ``global`` (one threshold per pool over
        RMS-normalised scores).
      structure: ``unstructured``, ``nm`` or ``block``.
      n, m: N:M pattern (2:4).
      block_size: b of the b x b blocks.
      schedule: when and how fast (absolute steps).
      seed: seeds random scores.
    """

    sparsity: float = 0.5
    distribution: str = "uniform"
    erk_power: float = 1.0
    labels: tuple[str, ...] = (partition.MATRIX,)
    embeddings: bool = False
    per_path: Mapping[str, float] | None = None
    score: str = "magnitude"
    scope: str = "layer"
    structure: str = "unstructured"
    n: int = 2
    m: int = 4
    block_size: int = 16
    schedule: schedules.PruningSchedule = schedules.PruningSchedule()
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity {self.sparsity} must be in [0, 1)")
        checks = (("distribution", distributions.DISTRIBUTIONS), ("score", SCORES),
                  ("scope", SCOPES), ("structure", structure.STRUCTURES))
        for name, valid in checks:
            if getattr(self, name) not in valid:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; valid: {valid}")
        for lab in self.labels:
            if lab not in partition.LABELS or lab == partition.VECTOR:
                raise ValueError(f"cannot prune label {lab!r}; valid: "
                                 f"{tuple(x for x in partition.LABELS if x != partition.VECTOR)}")
        if self.structure == "nm" and self.schedule.kind != "oneshot":
            raise ValueError(f"N:M masks are applied one-shot, got schedule "
                             f"{self.schedule.kind!r}; use 'oneshot' (or SR-STE / AdamS)")


@dataclasses.dataclass(frozen=True)
class LeafPlan:
    """One pruned leaf.

    Attributes:
      index: position of the leaf in ``jax.tree.leaves(params)``.
      info: its ParamInfo.
      final_kept: kept units per matrix at the end, shape ``(num_matrices,)``.
      unit: elements per unit (``b * b`` for blocks, else 1).
      pool: id of the pool that shares a global threshold.
    """

    index: int
    info: ParamInfo
    final_kept: tuple[int, ...]
    unit: int = 1
    pool: int = 0

    @property
    def size(self) -> int:
        return math.prod(self.info.shape)

    @property
    def capacity(self) -> int:
        """Units per matrix."""
        return self.info.fan_in * self.info.fan_out // self.unit

    @property
    def final_nonzeros(self) -> int:
        return int(sum(self.final_kept)) * self.unit

    @property
    def final_sparsity(self) -> float:
        return 1.0 - self.final_nonzeros / self.size


def embedding_sparsity(s: float) -> float:
    """``1 - sqrt(1 - S)`` (Frantar et al., arXiv 2309.08520)."""
    return 1.0 - math.sqrt(1.0 - s)


def plan_leaves(infos, spec: PruneSpec) -> list[LeafPlan]:
    """Pruned leaves with exact final counts; leaves that end up dense are left out."""
    flat = partition.infos_list(infos)
    per_path = dict(spec.per_path or {})
    main, embed = [], []
    for idx, info in enumerate(flat):
        override = distributions.match_per_path(info.path, per_path)
        if info.label == partition.VECTOR:
            if override:
                raise ValueError(f"{info.path} is a vector (label 'vector'); vectors are never "
                                 f"pruned, but per_path gives it sparsity {override}")
            continue
        if info.label in EMBED_LABELS and spec.embeddings and info.label not in spec.labels:
            embed.append((idx, info))
        elif info.label in spec.labels or override is not None:
            main.append((idx, info))
    unit = spec.block_size ** 2 if spec.structure == "block" else 1
    plans: list[LeafPlan] = []
    for pool_id, (pool, s) in enumerate(((main, spec.sparsity),
                                         (embed, embedding_sparsity(spec.sparsity)))):
        if not pool:
            continue
        pinfos = [i for _, i in pool]
        if spec.structure == "nm":
            counts = _nm_counts(pinfos, spec)
        else:
            if spec.structure == "block":
                for i in pinfos:
                    structure.check_block(i, spec.block_size)
            dist = spec.distribution if pool_id == 0 or spec.distribution == "custom" else "uniform"
            counts = distributions.distribute(pinfos, s, dist, spec.erk_power, per_path, unit)
        for idx, info in pool:
            kept = tuple(int(c) for c in counts[info.path])
            if sum(kept) * unit < info.num_matrices * info.fan_in * info.fan_out:
                plans.append(LeafPlan(idx, info, kept, unit, pool_id))
    return plans


def _nm_counts(infos: list[ParamInfo], spec: PruneSpec) -> dict[str, np.ndarray]:
    target = 1.0 - spec.n / spec.m
    out = {}
    for i in infos:
        s = distributions.match_per_path(i.path, spec.per_path)
        if s is not None and s != 0.0 and not math.isclose(s, target):
            raise ValueError(f"{i.path}: per_path sparsity {s} conflicts with {spec.n}:{spec.m} "
                             f"(sparsity {target}); use 0 (dense) or {target}")
        if s == 0.0:
            out[i.path] = np.full(i.num_matrices, i.fan_in * i.fan_out)
            continue
        structure.check_nm(i, spec.n, spec.m)
        out[i.path] = np.full(i.num_matrices, i.fan_in * i.fan_out * spec.n // spec.m)
    return out
