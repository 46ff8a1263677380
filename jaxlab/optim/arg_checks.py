"""Construction-time checks of optimizer arguments: a bad value fails when the optimizer
is built, with its name, the value and the valid range (not at the first update, or as an
unrelated error deep inside it)."""

from __future__ import annotations

import math
from typing import Any


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got nan")
    return value


def check_range(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
                hi_open: bool = False) -> float:
    """``value`` as a float if it lies in the interval; else ValueError naming it, e.g.
    ``momentum beta = 1.0 is outside [0, 1)``."""
    v = _number(name, value)
    below = v <= lo if lo_open else v < lo
    above = v >= hi if hi_open else v > hi
    if below or above:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{name} = {value!r} is outside {interval}")
    return v


def check_nonnegative(name: str, value: Any) -> float:
    """A finite value >= 0 (weight decay, lr)."""
    return check_range(name, value, 0.0, math.inf, hi_open=True)


def check_positive(name: str, value: Any) -> float:
    """A finite value > 0 (eps, tau)."""
    return check_range(name, value, 0.0, math.inf, lo_open=True, hi_open=True)


def check_rate(name: str, value: Any) -> float:
    """An EMA rate or momentum in [0, 1)."""
    return check_range(name, value, 0.0, 1.0, hi_open=True)


def check_learning_rate(name: str, value: Any) -> None:
    """A schedule (callable) passes; a number must be finite and >= 0."""
    if not callable(value):
        check_nonnegative(name, value)


def check_choice(name: str, value: Any, valid) -> Any:
    """``value`` if it is one of ``valid``, else ValueError listing them."""
    if value not in tuple(valid):
        raise ValueError(f"unknown {name} {value!r}; valid: {tuple(valid)}")
    return value


__all__ = ["check_choice", "check_learning_rate", "check_nonnegative", "check_positive",
           "check_range", "check_rate"]
