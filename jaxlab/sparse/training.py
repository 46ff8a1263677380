"""Sparse training from gin: ``maybe_prune(tx, infos, total_steps)`` for ``build_optimizer``.

Identity unless a binding turns sparsity on, e.g.::

    sparsity.target = 0.5
    sparsity.distribution = 'erk'          # uniform | er | erk | custom
    sparsity.schedule = 'cubic'            # oneshot | cubic | geometric
    sparsity.start = 0.25                  # with sparsity.unit = 'compute' (default),
    sparsity.end = 0.75                    #   'fraction' (of steps) or 'step'
    sparsity.frequency = 100
    sparsity.score = 'magnitude'           # magnitude | random | saliency
    sparsity.scope = 'layer'               # layer | global
    sparsity.structure = 'unstructured'    # unstructured | nm | block
    sparsity.method = 'prune'              # prune | srste | adams (N:M methods)

``structure = 'nm'`` (or ``method = 'srste'`` / ``'adams'``) turns sparsity on by itself,
at ``1 - n / m``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import gin
import jax
import optax

from jaxlab import partition
from jaxlab.diagnostics import with_stats
from jaxlab.nn.block_linear import block_kernel_problem, check_block_kernel_compatible
from jaxlab.sparse.accounting import compute_fractions_to_steps, sparsity_diagnostics
from jaxlab.sparse.adams import adams
from jaxlab.sparse.plan import PruneSpec, plan_leaves
from jaxlab.sparse.prune import prune
from jaxlab.sparse.schedules import PruningSchedule
from jaxlab.sparse.srste import sr_ste

METHODS = ("prune", "srste", "adams")
UNITS = ("compute", "fraction", "step")
KERNELS = ("auto", "pallas", "dense")


@gin.configurable("sparsity")
@dataclasses.dataclass(frozen=True)
class SparsityConfig:
    """Every sparse-training choice (gin name ``sparsity``); see :class:`PruneSpec`.

    Attributes:
      target: final sparsity S of the hidden matrices; None (with structure and method
        left dense) means no sparsity.
      schedule, start, end, unit, frequency: pruning schedule; ``start``/``end`` are
        fractions of training compute (``unit='compute'``), fractions of the steps
        (``'fraction'``) or step numbers (``'step'``).
      method: ``prune`` (masks), ``srste`` (SR-STE, arXiv 2102.04010) or ``adams``
        (CAST's AdamS, arXiv 2509.25996, reconstructed).
      srste_decay: SR-STE's lambda_W.
      adams_decay, adams_refresh: AdamS decay strength and mask refresh period.
      kernel: with ``structure='block'``, how the model multiplies its hidden matrices:
        ``'pallas'`` the block-sparse Pallas kernel (:mod:`jaxlab.nn.block_linear`;
        interpret mode on CPU, slow), ``'dense'`` the XLA dense product of the zeroed
        weights, ``'auto'`` the kernel on a single GPU/TPU device, else dense.
    """

    target: float | None = None
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
    schedule: str = "oneshot"
    start: float = 0.25
    end: float = 0.75
    unit: str = "compute"
    frequency: int = 100
    initial_sparsity: float = 0.0
    method: str = "prune"
    srste_decay: float = 2e-4
    adams_decay: float = 1.0
    adams_refresh: int = 10
    seed: int = 0
    kernel: str = "auto"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown sparsity.method {self.method!r}; valid: {METHODS}")
        if self.unit not in UNITS:
            raise ValueError(f"unknown sparsity.unit {self.unit!r}; valid: {UNITS}")
        if self.kernel not in KERNELS:
            raise ValueError(f"unknown sparsity.kernel {self.kernel!r}; valid: {KERNELS}")
        if self.method != "prune" and self.structure not in ("nm", "unstructured"):
            raise ValueError(f"sparsity.method={self.method!r} is an N:M method; "
                             f"structure {self.structure!r} is not 'nm'")

    @property
    def enabled(self) -> bool:
        return (self.target is not None and self.target > 0) or self.structure == "nm" \
            or self.method != "prune"

    @property
    def nm(self) -> bool:
        return self.structure == "nm" or self.method != "prune"

    def sparsity(self) -> float:
        if self.nm:
            s = 1.0 - self.n / self.m
            if self.target is not None and not math.isclose(self.target, s):
                raise ValueError(f"sparsity.target={self.target} conflicts with "
                                 f"{self.n}:{self.m} (sparsity {s}); leave target unset")
            return s
        return float(self.target)

    def steps(self, total_steps: int) -> tuple[int, int]:
        if self.unit == "step":
            return int(self.start), int(self.end)
        return round(self.start * total_steps), round(self.end * total_steps)


def build_sparse_tx(tx: optax.GradientTransformation, infos: Any, total_steps: int,
                    cfg: SparsityConfig) -> tuple[optax.GradientTransformation, Callable]:
    """``(wrapped tx, stats(state) -> {"sparse/...": scalar})`` for an enabled config."""
    s = cfg.sparsity()
    structure = "nm" if cfg.nm else cfg.structure
    kind = "oneshot" if structure == "nm" else cfg.schedule
    spec = PruneSpec(sparsity=s, distribution=cfg.distribution, erk_power=cfg.erk_power,
                     labels=tuple(cfg.labels), embeddings=cfg.embeddings,
                     per_path=cfg.per_path, score=cfg.score, scope=cfg.scope,
                     structure=structure, n=cfg.n, m=cfg.m, block_size=cfg.block_size,
                     schedule=PruningSchedule(kind, 0, 0, cfg.frequency), seed=cfg.seed)
    plans = plan_leaves(infos, spec)
    diagnostics = sparsity_diagnostics(infos, plans, s)
    start, end = cfg.steps(total_steps)
    if cfg.method == "srste":
        return sr_ste(tx, plans, cfg.n, cfg.m, cfg.srste_decay), diagnostics
    if cfg.method == "adams":
        return adams(tx, plans, total_steps, cfg.n, cfg.m, cfg.adams_decay, cfg.adams_refresh,
                     start, min(end, total_steps - 1)), diagnostics
    if cfg.unit == "compute":
        sched = compute_fractions_to_steps(infos, plans, kind, cfg.start, cfg.end,
                                           cfg.frequency, total_steps, cfg.initial_sparsity)
    else:
        end = min(end, total_steps - 1)
        sched = PruningSchedule(kind, min(start, end), end, cfg.frequency, cfg.initial_sparsity)
    return prune(tx, infos, dataclasses.replace(spec, schedule=sched), plans), diagnostics


def maybe_prune(tx: optax.GradientTransformation, infos: Any, total_steps: int,
                config: SparsityConfig | None = None) -> optax.GradientTransformation:
    """The identity unless gin enables sparsity; else ``tx`` wrapped for sparse training,
    its state carrying the ``sparse/*`` figures as ``stats`` (:mod:`jaxlab.diagnostics`).

    Args:
      tx: the full optimizer (after clipping).
      infos: ParamInfo tree.
      total_steps: run length (schedules in compute or fractions).
      config: explicit config (default: from gin).
    """
    cfg = config if config is not None else SparsityConfig()
    if not cfg.enabled:
        return tx
    sparse_tx, sparse_stats = build_sparse_tx(tx, infos, total_steps, cfg)
    return with_stats(sparse_tx, sparse_stats)


def block_kernel_size(mesh_devices: int, config: SparsityConfig | None = None) -> int | None:
    """The tile size the model's hidden matrices should multiply with through the
    block-sparse kernel (``ModelConfig.sparse_block_size``), or None for the dense path.

    ``sparsity.kernel='auto'`` takes the kernel only for block-structured hard-mask
    training on one GPU/TPU device (the Pallas call is not partitioned over a mesh);
    ``'pallas'`` asks for it anywhere and raises where it cannot give the dense path's
    updates (:func:`~jaxlab.nn.block_linear.check_block_kernel_compatible`).
    """
    cfg = config if config is not None else SparsityConfig()
    if not cfg.enabled or cfg.kernel == "dense":
        return None
    if cfg.kernel == "pallas":
        check_block_kernel_compatible(cfg.structure, cfg.method, cfg.score)
        if mesh_devices > 1:
            raise ValueError(f"sparsity.kernel='pallas' runs on one device; the mesh has "
                             f"{mesh_devices}. Use sparsity.kernel='auto' or 'dense'")
        return cfg.block_size
    on_accelerator = jax.default_backend() in ("gpu", "tpu")
    if on_accelerator and mesh_devices == 1 and (
            block_kernel_problem(cfg.structure, cfg.method, cfg.score) is None):
        return cfg.block_size
    return None
