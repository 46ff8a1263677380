"""Optimizer diagnostics live in the optimizer state, as ``stats`` fields.

Any state node that is a NamedTuple with a ``stats`` field (``{name: scalar}``) reports
those figures: :class:`~jaxlab.optim.muon.MuonState`, TrasMuon's state, and
:func:`with_stats`, which adds figures computed from any transformation's state (the
sparse wrappers' non-zero counts). :func:`collect_stats` gathers every one of them, at any
depth of chains, partitions and wrappers, so no wrapper has to re-point a diagnostics
function at its inner state. The training step logs what it collects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax


class WithStats(NamedTuple):
    """State of :func:`with_stats`: the wrapped state and the figures read off it."""

    inner: Any
    stats: dict[str, jax.Array]


def with_stats(tx: optax.GradientTransformation,
               stats_fn: Callable[[Any], dict[str, jax.Array]]
               ) -> optax.GradientTransformationExtraArgs:
    """``tx`` whose state also holds ``stats_fn(tx_state)`` after init and every update."""

    def init(params):
        state = tx.init(params)
        return WithStats(state, dict(stats_fn(state)))

    def update(updates, state: WithStats, params=None, **extra):
        updates, inner = optax.with_extra_args_support(tx).update(
            updates, state.inner, params, **extra)
        return updates, WithStats(inner, dict(stats_fn(inner)))

    return optax.GradientTransformationExtraArgs(init, update)


def collect_stats(opt_state: Any) -> dict[str, jax.Array]:
    """Every ``stats`` dict inside ``opt_state`` merged (outer wrappers first, so a
    figure a wrapper computes about its inner state is not shadowed by a duplicate)."""
    out: dict[str, jax.Array] = {}

    def visit(x: Any) -> None:
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            fields = dict(zip(x._fields, x))
            if isinstance(fields.get("stats"), dict):
                for k, v in fields.pop("stats").items():
                    out.setdefault(k, v)
            for value in fields.values():
                visit(value)
        elif isinstance(x, (tuple, list)):
            for value in x:
                visit(value)
        elif isinstance(x, dict):
            for value in x.values():
                visit(value)

    visit(opt_state)
    return out
