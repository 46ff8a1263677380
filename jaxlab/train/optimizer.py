"""Optimizers by name, assembled from an explicit :class:`OptimizerConfig` and the
model's parameter labels.

``build_optimizer(params, total_steps, config)`` is what the training loop calls; it reads
no gin. At the entry points (``python -m jaxlab.train``, the launcher, :func:`jaxlab.train
.loop.train`) :func:`jaxlab.train.gin_setup.optimizer_config` builds the config from gin:
``build_optimizer.optimizer = 'muon'`` picks the optimizer, and each optimizer's own
hyperparameters are gin parameters under its registry name (``adamw.weight_decay``,
``muon.update_scale``), as are the schedule's (``make_schedule.*``), the layerwise
rules' (``layerwise_rules.*``), weight averaging's (``weight_averaging.*``) and sparse
training's (``sparsity.*``).

A new optimizer is one file that registers itself::

    from jaxlab.train.optimizer import register

    @register("sign_descent")
    def sign_descent(infos, lr, make_lr, momentum: float = 0.9):
        return optax.chain(optax.trace(momentum), optax.scale_by_sign(),
                           optax.scale_by_learning_rate(lr))

and is picked with ``--gin_bindings "import my_module"`` and
``--gin_bindings "build_optimizer.optimizer = 'sign_descent'"``. The library optimizers
are registered from their Python functions (:func:`from_library`), so the gin name
``muon`` is exactly :func:`jaxlab.optim.muon` with the same defaults.

A factory has the signature ``factory(infos, lr, make_lr, **hyperparameters) -> tx``:
``infos`` is the :func:`jaxlab.partition.describe_params` tree, ``lr`` the schedule
of the main group and ``make_lr(peak)`` builds a schedule of the same shape for another
peak (AdamW groups inside Muon). Optimizer-internal figures reach the run's metrics as
``stats`` fields of the state (:mod:`jaxlab.diagnostics`), wherever they sit.

Layerwise width scaling (``build_optimizer.layerwise = True``, arXiv 2510.15262): the
factory is called with a keyword ``wd_mult``, a tree of per-leaf weight-decay multipliers
(a prefix of the params, 0 for no decay) that it must apply to its decoupled weight decay,
and its final updates are multiplied by per-leaf lr multipliers (see
:mod:`jaxlab.optim.layerwise`). A factory without a ``wd_mult`` argument is refused.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import optax

from jaxlab import partition
from jaxlab.optim import averaging as averaging_lib
from jaxlab.optim import layerwise as layerwise_lib
from jaxlab.optim.adamuon import adamuon
from jaxlab.optim.dion import dion
from jaxlab.optim.muon import make_ns_fn, muon
from jaxlab.optim.normuon import normuon
from jaxlab.optim.qk_clip import MAX_LOGITS, muonclip
from jaxlab.optim.schedules import make_schedule
from jaxlab.optim.trasmuon import scale_by_trasmuon, trasmuon
from jaxlab.sparse.training import SparsityConfig, maybe_prune
from jaxlab.train import gin_names

Factory = Callable[..., Any]
OPTIMIZERS: dict[str, Factory] = {}
# Extra arguments an optimizer's update takes from the task each step (QK-clip's
# ``attn_max_logits``), by registry name.
UPDATE_INPUTS: dict[str, tuple[str, ...]] = {}
# Arguments the registry passes; every other parameter of a factory is a hyperparameter.
FACTORY_ARGS = ("infos", "lr", "make_lr", "wd_mult")


def register(name: str, update_inputs: tuple[str, ...] = ()):
    """Decorator: adds ``factory(infos, lr, make_lr, **hyperparameters)`` to the registry
    under ``name`` and makes its hyperparameters the gin parameters ``name.<param>`` (read
    at the entry points only, see :mod:`jaxlab.train.gin_names`).
    ``update_inputs``: extra arguments its ``update`` takes, which the task must report
    every step (:meth:`jaxlab.tasks.Task.reporting`)."""

    def deco(fn: Factory) -> Factory:
        if name in OPTIMIZERS:
            raise ValueError(f"optimizer {name!r} registered twice; registered: "
                             f"{sorted(OPTIMIZERS)}")
        params = inspect.signature(fn).parameters
        missing = [a for a in FACTORY_ARGS[:3] if a not in params]
        if missing:
            raise TypeError(f"optimizer factory {name!r} must take {FACTORY_ARGS[:3]} first; "
                            f"missing {missing}")
        OPTIMIZERS[name] = fn
        gin_names.expose(name, fn, skip=FACTORY_ARGS)
        UPDATE_INPUTS[name] = tuple(update_inputs)
        return fn

    return deco


def from_library(fn: Callable[..., optax.GradientTransformation],
                 also: tuple[Callable, ...] = ()) -> Factory:
    """The registry factory of ``fn(learning_rate, infos, **kw)`` (e.g. :func:`muon`).

    Its hyperparameters and their defaults are ``fn``'s keyword parameters (and those of
    the functions in ``also`` that ``fn`` forwards ``**kwargs`` to), read off the
    signatures, so a gin binding and a Python call build the same optimizer. A float
    ``adam_learning_rate`` is a peak on the main schedule's shape (None: the main one).
    """
    keyword, seen = [], set(FACTORY_ARGS)
    for f in (fn, *also):
        for p in inspect.signature(f).parameters.values():
            if p.name in seen or p.default is inspect.Parameter.empty \
                    or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name == "interpret":
                continue
            seen.add(p.name)
            keyword.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    names = {p.name for p in keyword}

    def factory(infos, lr, make_lr, wd_mult=None, **hparams):
        if "adam_learning_rate" in names:
            peak = hparams.pop("adam_learning_rate", None)
            hparams["adam_learning_rate"] = lr if peak is None else make_lr(peak)
        return fn(lr, infos, wd_mult=wd_mult, **hparams)

    pos = inspect.Parameter.POSITIONAL_OR_KEYWORD
    factory.__signature__ = inspect.Signature(
        [inspect.Parameter(a, pos) for a in FACTORY_ARGS[:3]]
        + [inspect.Parameter("wd_mult", pos, default=None)] + keyword)
    factory.__name__ = factory.__qualname__ = fn.__name__
    factory.__module__ = fn.__module__
    factory.__doc__ = f"Registry factory of :func:`{fn.__module__}.{fn.__name__}`."
    return factory


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """What the training loop needs from an optimizer.

    Attributes:
      tx: the optax transformation.
      lr: schedule of the main group's learning rate (logged).
      infos: ParamInfo tree of the parameters.
      name: registry name.
      peak_lr: peak of ``lr``.
      hparams: the factory's hyperparameters as built (:func:`operative_hparams`).
      sparsity: the target sparsity of the pruned matrices (0.0: dense).
      eval_params: ``(params, opt_state) -> params`` to evaluate besides the raw params
        (weight averaging), or None.
      update_inputs: names of the extra arguments ``tx.update`` takes each step, reported
        by the task (QK-clip's ``attn_max_logits``); empty for most optimizers.
    """

    tx: optax.GradientTransformation
    lr: optax.Schedule
    infos: Any
    name: str
    peak_lr: float
    hparams: dict = dataclasses.field(default_factory=dict)
    sparsity: float = 0.0
    eval_params: Callable[[Any, Any], Any] | None = None
    update_inputs: tuple[str, ...] = ()


def operative_hparams(name: str, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters optimizer ``name`` is built with: its factory's defaults
    updated by ``hparams``, for the record. An unknown hyperparameter raises, naming the
    valid ones."""
    params = inspect.signature(OPTIMIZERS[name]).parameters
    valid = sorted(k for k in params if k not in FACTORY_ARGS)
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        raise ValueError(f"optimizer {name!r} has no hyperparameter {unknown[0]!r}; "
                         f"valid: {valid}")
    values = {k: p.default for k, p in params.items()
              if k not in FACTORY_ARGS and p.default is not inspect.Parameter.empty}
    values.update(hparams)
    missing = [k for k in valid if k not in values]
    if missing:
        raise ValueError(f"optimizer {name!r} needs hyperparameter {missing[0]!r} "
                         f"(`{name}.{missing[0]} = ...`); it has no default")
    return values


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Everything :func:`build_optimizer` builds from, besides the parameters and the
    run length. The gin names of its parts are given per field.

    Attributes:
      optimizer: a name in :data:`OPTIMIZERS` (``build_optimizer.optimizer``).
      learning_rate: peak learning rate of the main group.
      clip_norm: global gradient-norm clipping before the optimizer (None: off).
      label_overrides: ``{path regex: label}`` passed to ``describe_params``.
      hparams: the optimizer's hyperparameters that differ from its factory's defaults
        (``<optimizer>.<name>``, e.g. ``adamw.weight_decay``).
      schedule: keyword arguments of :func:`~jaxlab.optim.schedules.make_schedule` beyond
        the peak and the steps (``make_schedule.*``).
      layerwise: apply the width-scaling rules (arXiv 2510.15262) to any optimizer.
      layerwise_rules: keyword arguments of :func:`~jaxlab.optim.layerwise.layerwise_rules`
        beyond ``infos`` (``layerwise_rules.*``).
      averaging: ``'ema'`` or ``'swa'`` keeps averaged parameters in the optimizer state
        and sets ``eval_params``; None: off.
      weight_averaging: keyword arguments of
        :func:`~jaxlab.optim.averaging.weight_averaging` (``weight_averaging.*``).
      sparsity: sparse training (``sparsity.*``); dense by default.
    """

    optimizer: str = "adamw"
    learning_rate: float = 3e-3
    clip_norm: float | None = 1.0
    label_overrides: Mapping[str, str] | None = None
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    schedule: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    layerwise: bool = False
    layerwise_rules: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    averaging: str | None = None
    weight_averaging: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    sparsity: SparsityConfig = SparsityConfig()

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: "
                             f"{sorted(OPTIMIZERS)}")


def decay_mask(infos: Any) -> Any:
    """True for leaves that get weight decay: matrices, embeddings and heads, not vectors."""
    return jax.tree.map(lambda i: i.label != partition.VECTOR, infos,
                        is_leaf=lambda x: isinstance(x, partition.ParamInfo))


@register("adamw")
def adamw(infos, lr, make_lr, weight_decay: float = 0.1, b1: float = 0.9, b2: float = 0.95,
          eps: float = 1e-8, wd_mult: Any = None):
    """AdamW (arXiv 1711.05101) as in optax: ``W <- W - lr_t (adam + wd W)``; no decay on
    vectors (norm gains, biases). ``wd_mult`` (layerwise rules): per-leaf multipliers of
    ``weight_decay``."""
    del make_lr
    if wd_mult is None:
        return optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                           mask=decay_mask(infos))
    per_leaf = jax.tree.map(lambda m, on: weight_decay * m if on else 0.0, wd_mult,
                            decay_mask(infos))
    return optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
                       layerwise_lib.add_decayed_weights_by_leaf(per_leaf),
                       optax.scale_by_learning_rate(lr))


register("muon")(from_library(muon))
register("trasmuon")(from_library(trasmuon, also=(scale_by_trasmuon, make_ns_fn)))
register("normuon")(from_library(normuon))
register("adamuon")(from_library(adamuon))
register("dion")(from_library(dion))
register("muonclip", update_inputs=(MAX_LOGITS,))(from_library(muonclip, also=(muon,)))


def build_optimizer(params: Any, total_steps: int, config: OptimizerConfig | None = None,
                    **overrides) -> Optimizer:
    """Builds the optimizer of ``config`` for ``params`` (an ``nnx.State`` or array tree).

    Args:
      params: parameters (concrete or abstract), only their structure and metadata are read.
      total_steps: length of training, for the schedule.
      config: what to build (default: ``OptimizerConfig()``, AdamW).
      **overrides: fields of :class:`OptimizerConfig` that replace ``config``'s, e.g.
        ``build_optimizer(params, 100, optimizer='muon', learning_rate=0.02)``.
    """
    cfg = dataclasses.replace(config or OptimizerConfig(), **overrides)
    optimizer = cfg.optimizer
    hparams = operative_hparams(optimizer, cfg.hparams)
    infos = partition.describe_params(params, cfg.label_overrides)

    def make_lr(peak: float) -> optax.Schedule:
        return make_schedule(peak, total_steps, **cfg.schedule)

    lr = make_lr(cfg.learning_rate)
    factory, extra = OPTIMIZERS[optimizer], {}
    if cfg.layerwise:
        scales = layerwise_lib.layerwise_rules(infos, **cfg.layerwise_rules)
        if "wd_mult" not in inspect.signature(factory).parameters:
            raise ValueError(f"optimizer {optimizer!r} does not support layerwise rules: its "
                             f"factory has no `wd_mult` argument (per-leaf weight decay)")
        extra["wd_mult"] = scales.wd
    update_inputs = UPDATE_INPUTS.get(optimizer, ())
    if cfg.layerwise and update_inputs:
        raise ValueError(f"optimizer {optimizer!r} post-processes the final weights (its "
                         f"update takes {update_inputs}); layerwise lr multipliers applied "
                         "after it would undo that: drop build_optimizer.layerwise")
    tx = factory(infos, lr, make_lr, **extra, **dict(cfg.hparams))
    if not isinstance(tx, optax.GradientTransformation):
        raise TypeError(f"optimizer factory {optimizer!r} returned {type(tx).__name__}; it "
                        "must return an optax.GradientTransformation (figures to log go in "
                        "its state's `stats`, see jaxlab.diagnostics)")
    if cfg.layerwise:
        tx = optax.chain(tx, layerwise_lib.scale_by_leaf(scales.lr))
    if cfg.clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
    # Sparse training wraps the whole chain, so clipping sees masked gradients; the
    # identity for a dense config.
    tx = maybe_prune(tx, infos, total_steps, cfg.sparsity)
    # Outermost, so the average is of the parameters the run actually has.
    tx, eval_params = averaging_lib.weight_averaging(tx, cfg.averaging,
                                                     **cfg.weight_averaging)
    return Optimizer(tx=tx, lr=lr, infos=infos, name=optimizer, peak_lr=cfg.learning_rate,
                     hparams=hparams, sparsity=cfg.sparsity.target,
                     eval_params=eval_params, update_inputs=update_inputs)
