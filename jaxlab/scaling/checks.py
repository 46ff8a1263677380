"""Input checks for scaling-law data: one place that turns bad numbers into clear errors.

Every fitter and law calls these before touching the data, so a non-positive parameter
count, a NaN loss or too few points fails with a message that names the bad value and
says what would be valid.
"""
from __future__ import annotations

import numpy as np

__all__ = ["finite_array", "positive_array", "require_points", "same_length"]


def _first_bad(x: np.ndarray, bad: np.ndarray) -> str:
    idx = int(np.flatnonzero(bad)[0])
    return f"index {idx} (value {x.reshape(-1)[idx]!r})"


def finite_array(name: str, x) -> np.ndarray:
    """float64 copy of `x` (any shape); raises ValueError on NaN/inf, naming the entry."""
    arr = np.asarray(x, dtype=np.float64)
    bad = ~np.isfinite(arr).reshape(-1)
    if bad.any():
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite entries, first at {_first_bad(arr, bad)}; "
            f"drop diverged or unfinished runs before fitting (every {name} must be finite)"
        )
    return arr


def positive_array(name: str, x) -> np.ndarray:
    """float64 copy of `x`; raises ValueError unless every entry is finite and > 0."""
    arr = finite_array(name, x)
    bad = (arr <= 0).reshape(-1)
    if bad.any():
        raise ValueError(
            f"{name} must be > 0 everywhere (it enters the law through its logarithm); "
            f"{int(bad.sum())} entries are not, first at {_first_bad(arr, bad)}"
        )
    return arr


def same_length(**arrays: np.ndarray) -> int:
    """Checks that all 1-D arrays have one common length and returns it."""
    lengths = {k: np.asarray(v).reshape(-1).shape[0] for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must have the same length, got {lengths}")
    return next(iter(lengths.values()))


def require_points(n: int, minimum: int, what: str) -> None:
    """Raises ValueError when `n` data points are too few to fit `what`."""
    if n < minimum:
        raise ValueError(
            f"{what} needs at least {minimum} data points, got {n}; add runs or use a law "
            "with fewer free parameters"
        )
