"""Learning-rate schedules as optax schedules, selectable by name from gin."""

from __future__ import annotations

import gin
import optax


def warmup_cosine(peak_lr: float, total_steps: int, warmup_steps: int,
                  final_fraction: float = 0.1) -> optax.Schedule:
    """Linear warmup from 0 to ``peak_lr``, cosine decay to ``final_fraction * peak_lr``."""
    return optax.warmup_cosine_decay_schedule(
        0.0, peak_lr, max(warmup_steps, 1), max(total_steps, warmup_steps + 1),
        end_value=final_fraction * peak_lr,
    )


def constant(peak_lr: float, total_steps: int, warmup_steps: int) -> optax.Schedule:
    """Linear warmup then constant."""
    del total_steps
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak_lr, max(warmup_steps, 1)), optax.constant_schedule(peak_lr)],
        [max(warmup_steps, 1)],
    )


SCHEDULES = {"cosine": warmup_cosine, "constant": constant}


@gin.configurable
def make_schedule(peak_lr: float, total_steps: int, name: str = "cosine",
                  warmup_steps: int | float = 0.05) -> optax.Schedule:
    """A schedule by name. ``warmup_steps`` < 1 is a fraction of ``total_steps``."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid: {sorted(SCHEDULES)}")
    warmup = int(round(warmup_steps * total_steps)) if warmup_steps < 1 else int(warmup_steps)
    return SCHEDULES[name](peak_lr, total_steps, warmup)
