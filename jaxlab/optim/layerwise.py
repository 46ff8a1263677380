"""Layerwise width-scaling rules: muP learning rates and the sqrt(width) weight-decay rule.

arXiv 2510.15262 (building on muP, arXiv 2203.03466): under AdamW with width ``d``,
hidden ("matrix-like", both dimensions grow with ``d``) parameters take learning rate
``eta_2 ~ 1/d`` and weight decay ``lambda_2 ~ sqrt(d)``, which keeps their top singular
value ``sigma_max ~ sqrt(eta / lambda) d^0.75`` (so sublayer gains) width invariant;
"vector-like" parameters (one dimension grows with ``d``: embeddings, the output head,
norm gains, biases) take ``eta_1 = Theta(1)`` and ``lambda_1 = 0``. lr and wd tuned at a
proxy width ``base_width`` then transfer zero-shot to any width.

Here a rule is, per parameter label of :mod:`jaxlab.partition`, a pair of exponents
``(lr_exponent, wd_exponent)``: the leaf's lr is multiplied by ``(d / base)^lr_exponent``
and its weight decay by ``(d / base)^wd_exponent`` (``wd_exponent=None``: no decay). The
registry turns the rules on for any optimizer with ``build_optimizer.layerwise = True``:
it passes the weight-decay multipliers to the optimizer factory (its ``wd_mult``
argument) and scales the factory's final updates by the lr multipliers, so the decay,
being multiplied by the lr as in AdamW, scales by both.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import jax
import optax

from jaxlab.partition import EMBEDDING, HEAD, MATRIX, VECTOR, ParamInfo, infos_list

Rule = tuple[float, float | None]


def _is_info(x: Any) -> bool:
    return isinstance(x, ParamInfo)


@dataclasses.dataclass(frozen=True)
class LayerwiseScales:
    """Per-leaf multipliers, trees of floats with the structure of the ParamInfo tree.

    Attributes:
      lr: learning-rate multiplier of each leaf.
      wd: weight-decay multiplier of each leaf (0: no decay).
      width: the model width ``d`` the multipliers are for.
      base_width: the proxy width at which all multipliers are 1 (or 0 for no decay).
    """

    lr: Any
    wd: Any
    width: int
    base_width: int


def infer_width(infos: Any) -> int:
    """The model width ``d``: the embedding's last axis, else the most common fan-in of
    the hidden matrices. Raises if the tree has neither."""
    flat = infos_list(infos)
    for info in flat:
        if info.label == EMBEDDING:
            return int(info.shape[-1])
    fan_ins = collections.Counter(i.fan_in for i in flat if i.label == MATRIX)
    if not fan_ins:
        raise ValueError("cannot infer the model width: no embedding and no hidden matrix; "
                         "set layerwise_rules.width")
    return int(fan_ins.most_common(1)[0][0])


def layerwise_rules(infos: Any, width: int | None = None, base_width: int = 128,
                    matrix: Rule = (-1.0, 0.5), embedding: Rule = (0.0, None),
                    head: Rule = (0.0, None), vector: Rule = (0.0, None)) -> LayerwiseScales:
    """Per-leaf lr and weight-decay multipliers for ``infos`` at ``width`` (arXiv 2510.15262).

    Args:
      infos: :func:`jaxlab.partition.describe_params` tree.
      width: the model width ``d`` (d_model); None infers it (:func:`infer_width`).
      base_width: the proxy width whose lr and wd were tuned.
      matrix, embedding, head, vector: ``(lr_exponent, wd_exponent)`` per label;
        ``wd_exponent=None`` turns weight decay off for that label. Defaults: hidden
        matrices ``(-1, 1/2)``, everything vector-like ``(0, None)``. A model without a
        ``1/d`` output multiplier may prefer ``head = (-1.0, 0.5)`` (muP's Adam rule for
        output weights).
    """
    d = infer_width(infos) if width is None else int(width)
    if d < 1 or base_width < 1:
        raise ValueError(f"width and base_width must be >= 1, got width={d}, "
                         f"base_width={base_width}")
    rules = {MATRIX: matrix, EMBEDDING: embedding, HEAD: head, VECTOR: vector}
    for label, rule in rules.items():
        if len(rule) != 2:
            raise ValueError(f"layerwise_rules.{label} must be (lr_exponent, wd_exponent), "
                             f"got {rule!r}")
    ratio = d / base_width
    lr = jax.tree.map(lambda i: float(ratio ** rules[i.label][0]), infos, is_leaf=_is_info)
    wd = jax.tree.map(
        lambda i: 0.0 if rules[i.label][1] is None else float(ratio ** rules[i.label][1]),
        infos, is_leaf=_is_info)
    return LayerwiseScales(lr=lr, wd=wd, width=d, base_width=base_width)


def _map_leafwise(fn, factors: Any, tree: Any) -> Any:
    """``fn(x, factor)`` on every array of ``tree``; ``factors`` (floats) is a prefix of it."""
    return jax.tree.map(lambda f, sub: jax.tree.map(lambda x: fn(x, f), sub), factors, tree)


def scale_by_leaf(factors: Any) -> optax.GradientTransformation:
    """Multiplies each leaf's update by its float in ``factors`` (a prefix tree of floats)."""

    def update(updates, state, params=None):
        del params
        return _map_leafwise(lambda u, f: u if f == 1.0 else u * f, factors, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def add_decayed_weights_by_leaf(weight_decay: Any) -> optax.GradientTransformation:
    """``u += wd_leaf * p`` with one float per leaf (a prefix tree of floats; 0 skips).

    Put it before ``optax.scale_by_learning_rate`` for AdamW's ``-lr (adam + wd W)``.
    """

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("add_decayed_weights_by_leaf needs params")
        out = jax.tree.map(
            lambda f, u_sub, p_sub: jax.tree.map(
                lambda u, p: u if f == 0.0 else u + f * p, u_sub, p_sub),
            weight_decay, updates, params)
        return out, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
