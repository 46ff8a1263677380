"""Learning-rate schedules as optax schedules, by name (gin name `make_schedule`).

Every schedule is ``step -> lr`` (jit-friendly, ``step`` an int or int32 array) built from
one linear warmup followed by a named shape:

* ``constant``: warmup, then ``peak`` forever.
* ``cosine``: warmup, then cosine decay to ``final_fraction * peak`` at ``total_steps``.
* ``linear``: warmup, then linear decay to ``final_fraction * peak`` at ``total_steps``.
* ``wsd``: warmup-stable-decay (Hagele et al. arXiv 2405.18392): constant until the
  cooldown starts, then a cooldown of ``cooldown_steps`` to ``final_fraction * peak`` whose
  shape in ``u in [0, 1]`` is ``linear`` ``1 - u``, ``1-sqrt`` ``1 - sqrt(u)`` (the paper's
  best) or ``cosine`` ``(1 + cos(pi u)) / 2``.

Cooldown branching: a run restored from step ``k`` of a constant-lr parent and trained to
``k + n`` uses ``make_schedule.name = 'wsd'`` with ``make_schedule.decay_start_step = k``
(the cooldown then spans the remaining ``n`` steps). Give ``warmup_steps`` as an integer
in both runs so the two schedules agree before ``k``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import optax

COOLDOWN_SHAPES = ("linear", "1-sqrt", "cosine")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def cooldown_factor(u, shape: str):
    """Fraction of the way from the final lr back to the peak at cooldown progress ``u``.

    ``u`` in [0, 1] (array or float): ``linear`` 1 - u, ``1-sqrt`` 1 - sqrt(u), ``cosine``
    (1 + cos(pi u)) / 2 (arXiv 2405.18392, section 3). Equals 1 at u = 0 and 0 at u = 1.
    """
    if shape == "linear":
        return 1.0 - u
    if shape == "1-sqrt":
        return 1.0 - jnp.sqrt(u)
    if shape == "cosine":
        return 0.5 * (1.0 + jnp.cos(math.pi * u))
    raise ValueError(f"unknown cooldown shape {shape!r}; valid: {COOLDOWN_SHAPES}")


def _with_warmup(peak_lr: float, warmup_steps: int, init_fraction: float, after) -> optax.Schedule:
    """Linear warmup from ``init_fraction * peak`` to ``peak`` over ``warmup_steps`` steps
    (lr(warmup_steps) = peak), then ``after(step)``."""
    _check(warmup_steps >= 0, f"warmup_steps must be >= 0, got {warmup_steps}")
    _check(0.0 <= init_fraction <= 1.0,
           f"warmup_init_fraction must be in [0, 1], got {init_fraction}")
    init = init_fraction * peak_lr

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        if warmup_steps == 0:
            return after(step)
        warm = init + (peak_lr - init) * jnp.minimum(step / warmup_steps, 1.0)
        return jnp.where(step < warmup_steps, warm, after(step))

    return schedule


def constant(peak_lr: float, total_steps: int, warmup_steps: int,
             warmup_init_fraction: float = 0.0) -> optax.Schedule:
    """Linear warmup, then constant ``peak_lr``."""
    del total_steps
    return _with_warmup(peak_lr, warmup_steps, warmup_init_fraction,
                        lambda step: jnp.full_like(step, peak_lr))


def _decay(peak_lr: float, total_steps: int, warmup_steps: int, final_fraction: float,
           warmup_init_fraction: float, shape: str) -> optax.Schedule:
    _check(total_steps > warmup_steps,
           f"total_steps={total_steps} must exceed warmup_steps={warmup_steps}")
    _check(0.0 <= final_fraction <= 1.0, f"final_fraction must be in [0, 1], got {final_fraction}")
    final = final_fraction * peak_lr
    span = total_steps - warmup_steps

    def after(step):
        u = jnp.clip((step - warmup_steps) / span, 0.0, 1.0)
        return final + (peak_lr - final) * cooldown_factor(u, shape)

    return _with_warmup(peak_lr, warmup_steps, warmup_init_fraction, after)


def cosine(peak_lr: float, total_steps: int, warmup_steps: int, final_fraction: float = 0.1,
           warmup_init_fraction: float = 0.0) -> optax.Schedule:
    """Warmup, then ``final + (peak - final) (1 + cos(pi u)) / 2`` with
    ``u = (step - warmup) / (total - warmup)``; ``final = final_fraction * peak``."""
    return _decay(peak_lr, total_steps, warmup_steps, final_fraction, warmup_init_fraction,
                  "cosine")


def linear(peak_lr: float, total_steps: int, warmup_steps: int, final_fraction: float = 0.0,
           warmup_init_fraction: float = 0.0) -> optax.Schedule:
    """Warmup, then ``final + (peak - final) (1 - u)``, u as in :func:`cosine` (linear decay
    to zero by default, the Power Lines setting, arXiv 2505.13738)."""
    return _decay(peak_lr, total_steps, warmup_steps, final_fraction, warmup_init_fraction,
                  "linear")


def wsd(peak_lr: float, total_steps: int, warmup_steps: int, cooldown_steps: int,
        cooldown_shape: str = "1-sqrt", final_fraction: float = 0.0,
        warmup_init_fraction: float = 0.0) -> optax.Schedule:
    """Warmup-stable-decay (arXiv 2405.18392).

    lr = peak on ``[warmup_steps, s)`` with ``s = total_steps - cooldown_steps``, then
    ``final + (peak - final) * cooldown_factor(u, cooldown_shape)`` with
    ``u = (step - s) / cooldown_steps``; lr(total_steps) = final, held after that.
    """
    _check(cooldown_shape in COOLDOWN_SHAPES,
           f"unknown cooldown_shape {cooldown_shape!r}; valid: {COOLDOWN_SHAPES}")
    _check(0 <= cooldown_steps <= total_steps - warmup_steps,
           f"cooldown_steps={cooldown_steps} must be in [0, total_steps - warmup_steps = "
           f"{total_steps - warmup_steps}]")
    _check(0.0 <= final_fraction <= 1.0, f"final_fraction must be in [0, 1], got {final_fraction}")
    final = final_fraction * peak_lr
    start = total_steps - cooldown_steps

    def after(step):
        if cooldown_steps == 0:
            return jnp.full_like(step, peak_lr)
        u = jnp.clip((step - start) / cooldown_steps, 0.0, 1.0)
        return final + (peak_lr - final) * cooldown_factor(u, cooldown_shape)

    return _with_warmup(peak_lr, warmup_steps, warmup_init_fraction, after)


SCHEDULES = ("constant", "cosine", "linear", "wsd")


def _steps(value: float, total_steps: int, name: str) -> int:
    """``value`` < 1 is a fraction of ``total_steps``, otherwise a step count."""
    _check(value >= 0, f"{name} must be >= 0, got {value}")
    return round(value * total_steps) if value < 1 else int(value)


def make_schedule(peak_lr: float, total_steps: int, name: str = "cosine",
                  warmup_steps: float = 0.05, final_fraction: float | None = None,
                  cooldown_shape: str = "1-sqrt", cooldown_fraction: float = 0.2,
                  cooldown_steps: int | None = None, decay_start_step: int | None = None,
                  warmup_init_fraction: float = 0.0) -> optax.Schedule:
    """A schedule by name (see the module docstring). At the entry points the gin name
    ``make_schedule`` binds every argument but the first two.

    Args:
      peak_lr: the peak learning rate.
      total_steps: length of the run (the train loop's ``TrainConfig.steps``).
      name: one of :data:`SCHEDULES`.
      warmup_steps: steps of linear warmup; a value < 1 is a fraction of ``total_steps``.
      final_fraction: final lr / peak; None gives 0.1 for cosine, 0 for linear and wsd.
      cooldown_shape: ``wsd`` only: ``'linear'``, ``'1-sqrt'`` or ``'cosine'``.
      cooldown_fraction: ``wsd`` only: cooldown length / ``total_steps`` (0.2 matches
        cosine in arXiv 2405.18392), used when neither of the next two is set.
      cooldown_steps: ``wsd`` only: cooldown length in steps.
      decay_start_step: ``wsd`` only: the step the cooldown starts (a branch point); the
        cooldown then lasts ``cooldown_steps`` if set, else until ``total_steps``.
      warmup_init_fraction: lr at step 0 / peak (arXiv 2405.18392 warms up from 1/100).
    """
    _check(peak_lr > 0, f"peak_lr must be > 0, got {peak_lr}")
    _check(total_steps >= 1, f"total_steps must be >= 1, got {total_steps}")
    warmup = _steps(warmup_steps, total_steps, "warmup_steps")
    if name != "wsd" and (cooldown_steps is not None or decay_start_step is not None):
        raise ValueError(f"cooldown_steps / decay_start_step apply to name='wsd' only, "
                         f"not to schedule {name!r}")
    if name == "constant":
        return constant(peak_lr, total_steps, warmup, warmup_init_fraction)
    if name == "cosine":
        final = 0.1 if final_fraction is None else final_fraction
        return cosine(peak_lr, total_steps, warmup, final, warmup_init_fraction)
    if name == "linear":
        final = 0.0 if final_fraction is None else final_fraction
        return linear(peak_lr, total_steps, warmup, final, warmup_init_fraction)
    if name == "wsd":
        final = 0.0 if final_fraction is None else final_fraction
        if decay_start_step is not None:
            _check(warmup <= decay_start_step <= total_steps,
                   f"decay_start_step={decay_start_step} must be in [warmup_steps={warmup}, "
                   f"total_steps={total_steps}]")
            n = total_steps - decay_start_step if cooldown_steps is None else cooldown_steps
            _check(decay_start_step + n == total_steps,
                   f"decay_start_step={decay_start_step} + cooldown_steps={n} must equal "
                   f"total_steps={total_steps} (TrainConfig.steps of the branched run)")
        elif cooldown_steps is not None:
            n = cooldown_steps
        else:
            _check(0.0 <= cooldown_fraction <= 1.0,
                   f"cooldown_fraction must be in [0, 1], got {cooldown_fraction}")
            n = round(cooldown_fraction * total_steps)
        return wsd(peak_lr, total_steps, warmup, n, cooldown_shape, final, warmup_init_fraction)
    raise ValueError(f"unknown schedule {name!r}; valid: {SCHEDULES}")
