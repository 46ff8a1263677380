"""Sparse training as one wrapper of the optimizer: ``maybe_prune(tx, infos, total_steps,
config)``, which ``build_optimizer`` applies to its whole chain.

:class:`SparsityConfig` holds *what* is pruned (a :class:`~jaxlab.sparse.plan.PruneSpec`)
and *when and how* (schedule, method, kernel). :func:`sparsity_config` builds one from
flat keywords, which are also the gin parameters of the name ``sparsity`` at the entry
points (``python -m jaxlab.train``, the launcher), e.g.::

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
at ``1 - n / m``. Nothing here reads gin.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any

import jax
import optax

from jaxlab.diagnostics import with_stats
from jaxlab.nn.block_linear import block_kernel_problem, check_block_kernel_compatible
from jaxlab.sparse.accounting import compute_fractions_to_steps, sparsity_diagnostics
from jaxlab.sparse.adams import adams
from jaxlab.sparse.plan import PruneSpec, plan_leaves
from jaxlab.sparse.prune import prune
from jaxlab.sparse.schedules import SCHEDULES, PruningSchedule
from jaxlab.sparse.srste import sr_ste

METHODS = ("prune", "srste", "adams")
UNITS = ("compute", "fraction", "step")
KERNELS = ("auto", "pallas", "dense")


@dataclasses.dataclass(frozen=True)
class SparsityConfig:
    """Every sparse-training choice; the default is dense training.

    Attributes:
      spec: what is pruned and how much (its ``sparsity`` is the final target S of the
        hidden matrices; its ``schedule`` is replaced by the one the fields below give);
        None: no sparsity.
      schedule, start, end, unit, frequency, initial_sparsity: pruning schedule (``oneshot``,
        ``cubic``, ``geometric``); ``start``/``end`` are fractions of training compute
        (``unit='compute'``), fractions of the steps (``'fraction'``) or step numbers
        (``'step'``).
      method: ``prune`` (masks), ``srste`` (SR-STE, arXiv 2102.04010) or ``adams``
        (CAST's AdamS, arXiv 2509.25996, reconstructed); the last two are N:M methods.
      srste_decay: SR-STE's lambda_W.
      adams_decay, adams_refresh: AdamS decay strength and mask refresh period.
      kernel: with ``structure='block'``, how the model multiplies its hidden matrices:
        ``'pallas'`` the block-sparse Pallas kernel (:mod:`jaxlab.nn.block_linear`;
        interpret mode on CPU, slow), ``'dense'`` the XLA dense product of the zeroed
        weights, ``'auto'`` the kernel on a single GPU/TPU device, else dense.
    """

    spec: PruneSpec | None = None
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
    kernel: str = "auto"

    def __post_init__(self):
        for name, valid in (("method", METHODS), ("unit", UNITS), ("kernel", KERNELS),
                            ("schedule", SCHEDULES)):
            if getattr(self, name) not in valid:
                raise ValueError(f"unknown sparsity.{name} {getattr(self, name)!r}; "
                                 f"valid: {valid}")
        if self.method != "prune" and (self.spec is None or self.spec.structure != "nm"):
            raise ValueError(f"sparsity.method={self.method!r} is an N:M method; it needs a "
                             "spec with structure 'nm'")

    @property
    def enabled(self) -> bool:
        return self.spec is not None

    @property
    def target(self) -> float:
        """The final sparsity of the hidden matrices (0.0: dense)."""
        return self.spec.sparsity if self.spec is not None else 0.0

    @property
    def structure(self) -> str:
        return self.spec.structure if self.spec is not None else "unstructured"

    def steps(self, total_steps: int) -> tuple[int, int]:
        if self.unit == "step":
            return int(self.start), int(self.end)
        return round(self.start * total_steps), round(self.end * total_steps)


# The flat keywords of sparsity_config: PruneSpec's fields (its sparsity as `target`, its
# schedule from SparsityConfig's own fields) and SparsityConfig's, read off the dataclasses.
_SPEC_FIELDS = tuple(f for f in dataclasses.fields(PruneSpec)
                     if f.name not in ("sparsity", "schedule"))
_OWN_FIELDS = tuple(f for f in dataclasses.fields(SparsityConfig) if f.name != "spec")


def sparsity_config(target: float | None = None, **kwargs) -> SparsityConfig:
    """A :class:`SparsityConfig` from flat keywords (the gin parameters ``sparsity.*``).

    ``target``: final sparsity S of the hidden matrices; None leaves training dense unless
    the structure is ``'nm'`` or the method an N:M one (then S = 1 - n/m). Every other
    keyword is a field of :class:`~jaxlab.sparse.plan.PruneSpec` (``distribution``,
    ``score``, ``structure``, ``n``, ``m``, ...) or of :class:`SparsityConfig`.
    """
    spec_names = {f.name for f in _SPEC_FIELDS}
    own_names = {f.name for f in _OWN_FIELDS}
    unknown = sorted(set(kwargs) - spec_names - own_names)
    if unknown:
        raise TypeError(f"sparsity has no parameter {unknown[0]!r}; valid: "
                        f"{['target', *sorted(spec_names | own_names)]}")
    own = {k: v for k, v in kwargs.items() if k in own_names}
    spec_kw = {k: v for k, v in kwargs.items() if k in spec_names}
    if own.get("method", "prune") != "prune":
        if spec_kw.get("structure", "nm") not in ("nm", "unstructured"):
            raise ValueError(f"sparsity.method={own['method']!r} is an N:M method; "
                             f"structure {spec_kw['structure']!r} is not 'nm'")
        spec_kw["structure"] = "nm"
    if spec_kw.get("structure") == "nm":
        s = 1.0 - spec_kw.get("n", 2) / spec_kw.get("m", 4)
        if target is not None and not math.isclose(target, s):
            raise ValueError(f"sparsity.target={target} conflicts with "
                             f"{spec_kw.get('n', 2)}:{spec_kw.get('m', 4)} (sparsity {s}); "
                             "leave target unset")
        target = s
    spec = None
    if target is not None and target > 0:
        nm = spec_kw.get("structure") == "nm"  # N:M masks are one-shot whatever the schedule
        kind = "oneshot" if nm else own.get("schedule", "oneshot")
        spec = PruneSpec(sparsity=float(target), schedule=PruningSchedule(kind), **spec_kw)
    return SparsityConfig(spec=spec, **own)


sparsity_config.__signature__ = inspect.Signature(
    [inspect.Parameter("target", inspect.Parameter.KEYWORD_ONLY, default=None)]
    + [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
       for f in (*_SPEC_FIELDS, *_OWN_FIELDS)])


def build_sparse_tx(tx: optax.GradientTransformation, infos: Any, total_steps: int,
                    cfg: SparsityConfig) -> tuple[optax.GradientTransformation, Callable]:
    """``(wrapped tx, stats(state) -> {"sparse/...": scalar})`` for an enabled config."""
    s, spec = cfg.target, cfg.spec
    kind = "oneshot" if spec.structure == "nm" else cfg.schedule
    spec = dataclasses.replace(spec, schedule=PruningSchedule(kind, 0, 0, cfg.frequency))
    plans = plan_leaves(infos, spec)
    diagnostics = sparsity_diagnostics(infos, plans, s)
    start, end = cfg.steps(total_steps)
    if cfg.method == "srste":
        return sr_ste(tx, plans, spec.n, spec.m, cfg.srste_decay), diagnostics
    if cfg.method == "adams":
        return adams(tx, plans, total_steps, spec.n, spec.m, cfg.adams_decay,
                     cfg.adams_refresh, start, min(end, total_steps - 1)), diagnostics
    if cfg.unit == "compute":
        sched = compute_fractions_to_steps(infos, plans, kind, cfg.start, cfg.end,
                                           cfg.frequency, total_steps, cfg.initial_sparsity)
    else:
        end = min(end, total_steps - 1)
        sched = PruningSchedule(kind, min(start, end), end, cfg.frequency, cfg.initial_sparsity)
    return prune(tx, infos, dataclasses.replace(spec, schedule=sched), plans), diagnostics


def maybe_prune(tx: optax.GradientTransformation, infos: Any, total_steps: int,
                cfg: SparsityConfig) -> optax.GradientTransformation:
    """The identity unless ``cfg`` enables sparsity; else ``tx`` wrapped for sparse
    training, its state carrying the ``sparse/*`` figures as ``stats``
    (:mod:`jaxlab.diagnostics`).

    Args:
      tx: the full optimizer (after clipping).
      infos: ParamInfo tree.
      total_steps: run length (schedules in compute or fractions).
      cfg: the sparse-training choices.
    """
    if not cfg.enabled:
        return tx
    sparse_tx, sparse_stats = build_sparse_tx(tx, infos, total_steps, cfg)
    return with_stats(sparse_tx, sparse_stats)


def block_kernel_size(mesh_devices: int, cfg: SparsityConfig) -> int | None:
    """The tile size the model's hidden matrices should multiply with through the
    block-sparse kernel (``ModelConfig.sparse_block_size``), or None for the dense path.

    ``sparsity.kernel='auto'`` takes the kernel only for block-structured hard-mask
    training on one GPU/TPU device (the Pallas call is not partitioned over a mesh);
    ``'pallas'`` asks for it anywhere and raises where it cannot give the dense path's
    updates (:func:`~jaxlab.nn.block_linear.check_block_kernel_compatible`).
    """
    if not cfg.enabled or cfg.kernel == "dense":
        return None
    if cfg.kernel == "pallas":
        check_block_kernel_compatible(cfg.structure, cfg.method, cfg.spec.score)
        if mesh_devices > 1:
            raise ValueError(f"sparsity.kernel='pallas' runs on one device; the mesh has "
                             f"{mesh_devices}. Use sparsity.kernel='auto' or 'dense'")
        return cfg.spec.block_size
    on_accelerator = jax.default_backend() in ("gpu", "tpu")
    if on_accelerator and mesh_devices == 1 and (
            block_kernel_problem(cfg.structure, cfg.method, cfg.spec.score) is None):
        return cfg.spec.block_size
    return None
