"""Weight averaging as optax wrappers: EMA and windowed SWA (Hagele et al. arXiv 2405.18392).

The wrapper runs the inner transformation unchanged and keeps an average of the
*post-update* parameters ``params + updates`` in its state, so the average is jitted with
the step, sharded like the parameters, and checkpointed with the optimizer state. The
raw training trajectory is untouched; :func:`averaged_params` reads the average for
evaluation (``Optimizer.eval_params`` in the registry).

* ``ema(tx, decay)``: ``avg_0 = params_0``, ``avg_t = decay avg_{t-1} + (1 - decay) p_t``.
* ``swa(tx, horizon, interval)``: every ``interval`` steps the parameters join a running
  mean over the current window of ``horizon`` steps; when a window ends its mean becomes
  the evaluated average and the next window starts empty. Until the first sample of a
  window the previous window's mean is evaluated (the raw parameters before any).
  Two parameter copies of memory, whatever ``horizon / interval``.

Averages are kept in float32 whatever the parameter dtype and cast back when read.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class EmaState(NamedTuple):
    inner: Any
    avg: Any        # tree like params
    count: jax.Array  # int32 steps taken


class SwaState(NamedTuple):
    inner: Any
    window_avg: Any      # mean of the samples taken so far in the current window
    window_count: jax.Array  # samples in the current window (int32)
    last_avg: Any        # mean of the last complete window
    has_last: jax.Array  # bool: a window has completed
    count: jax.Array     # int32 steps taken


def _new_params(params: Any, updates: Any) -> Any:
    if params is None:
        raise ValueError("weight averaging needs params: call tx.update(grads, state, params)")
    return optax.apply_updates(params, updates)


def _copy(tree: Any) -> Any:
    """A float32 copy: a bf16 average could not absorb (1 - decay) sized increments."""
    return jax.tree.map(lambda x: jnp.array(x, jnp.float32), tree)


def ema(tx: optax.GradientTransformation, decay: float) -> optax.GradientTransformation:
    """``tx`` plus an exponential moving average of the parameters (state field ``avg``).

    Args:
      tx: the inner transformation (its updates are returned unchanged).
      decay: in [0, 1); the average spans about ``1 / (1 - decay)`` steps.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}")

    def init(params):
        return EmaState(tx.init(params), _copy(params), jnp.zeros((), jnp.int32))

    def update(updates, state, params=None, **extra):
        updates, inner = tx.update(updates, state.inner, params, **extra)
        new = _new_params(params, updates)
        avg = jax.tree.map(lambda a, p: decay * a + (1.0 - decay) * p.astype(a.dtype),
                           state.avg, new)
        return updates, EmaState(inner, avg, state.count + 1)

    return optax.GradientTransformationExtraArgs(init, update)


def swa(tx: optax.GradientTransformation, horizon: int, interval: int = 1
        ) -> optax.GradientTransformation:
    """``tx`` plus stochastic weight averaging over windows of ``horizon`` steps.

    After step ``t`` (1-based), ``p_t`` joins the window's mean when ``t % interval == 0``;
    when ``t % horizon == 0`` the window closes (its mean becomes ``last_avg``). E.g.
    ``horizon=500, interval=5`` (arXiv 2405.18392) averages 100 samples per window.
    """
    if interval < 1 or horizon < interval or horizon % interval:
        raise ValueError(f"need 1 <= interval <= horizon with horizon % interval == 0, "
                         f"got horizon={horizon}, interval={interval}")

    def init(params):
        return SwaState(tx.init(params), _copy(params), jnp.zeros((), jnp.int32), _copy(params),
                        jnp.zeros((), bool), jnp.zeros((), jnp.int32))

    def update(updates, state, params=None, **extra):
        updates, inner = tx.update(updates, state.inner, params, **extra)
        new = _new_params(params, updates)
        t = state.count + 1
        sample = t % interval == 0
        n = state.window_count + sample.astype(jnp.int32)
        weight = jnp.where(sample, 1.0 / jnp.maximum(n, 1), 0.0)
        window = jax.tree.map(lambda a, p: a + weight * (p.astype(a.dtype) - a),
                              state.window_avg, new)
        close = t % horizon == 0
        last = jax.tree.map(lambda l, w: jnp.where(close, w, l), state.last_avg, window)
        return updates, SwaState(inner, window, jnp.where(close, 0, n), last,
                                 state.has_last | close, t)

    return optax.GradientTransformationExtraArgs(init, update)


def _find_state(opt_state: Any) -> EmaState | SwaState | None:
    """The outermost averaging state inside ``opt_state`` (searched through tuples)."""
    if isinstance(opt_state, (EmaState, SwaState)):
        return opt_state
    if isinstance(opt_state, tuple):
        for s in opt_state:
            found = _find_state(s)
            if found is not None:
                return found
    return None


def averaged_params(opt_state: Any, params: Any) -> Any:
    """The averaged parameters held in ``opt_state`` (a tree like ``params``).

    EMA: the moving average. SWA: the current window's mean once it has a sample, else
    the last complete window's mean, else ``params``. Raises if ``opt_state`` holds no
    averaging state.
    """
    s = _find_state(opt_state)
    if s is None:
        raise ValueError("opt_state holds no EMA/SWA state: build the optimizer with "
                         "build_optimizer.averaging = 'ema' or 'swa'")
    if isinstance(s, EmaState):
        return jax.tree.map(lambda a, p: a.astype(p.dtype), s.avg, params)
    return jax.tree.map(
        lambda w, last, p: jnp.where(s.window_count > 0, w,
                                     jnp.where(s.has_last, last, p)).astype(p.dtype),
        s.window_avg, s.last_avg, params)


AVERAGING = ("ema", "swa")


def weight_averaging(tx: optax.GradientTransformation, kind: str | None,
                     ema_decay: float = 0.999, swa_horizon: int = 500, swa_interval: int = 5):
    """Wraps ``tx`` for ``build_optimizer.averaging = kind``.

    Returns ``(tx, eval_params)``: ``eval_params(params, opt_state)`` reads the average
    (None when ``kind`` is None, which returns ``tx`` unchanged).
    """
    if kind is None:
        return tx, None
    if kind == "ema":
        wrapped = ema(tx, ema_decay)
    elif kind == "swa":
        wrapped = swa(tx, swa_horizon, swa_interval)
    else:
        raise ValueError(f"unknown weight averaging {kind!r}; valid: {AVERAGING} or None")
    return wrapped, lambda params, opt_state: averaged_params(opt_state, params)
