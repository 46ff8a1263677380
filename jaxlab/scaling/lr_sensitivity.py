"""Learning-rate sensitivity of an optimizer: its stable basin over a peak-lr grid, and
the loss spikes of a training curve.

The basin is the range of peak learning rates whose final loss is within ``tolerance``
of the best on the grid (e.g. 0.05 nats, or 1 accuracy point with the sign flipped), read
off a piecewise-linear interpolation of the loss in ``log10(lr)``: the usual way to
compare how forgiving optimizers are to a mistuned lr (e.g. Wortsman et al., arXiv
2309.14322, "lr sensitivity"). A width that reaches the end of the grid is only a lower
bound and is flagged as open.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Basin:
    """The stable basin of one arm on an lr grid.

    Attributes:
      best_lr, best_loss: the grid point with the lowest loss.
      lo, hi: the lr range whose interpolated loss is <= ``best_loss + tolerance``.
      open_lo, open_hi: the range reaches that end of the grid (the true edge may be
        beyond it), so ``width_decades`` is a lower bound.
      tolerance: the loss margin that defines the basin.
    """

    best_lr: float
    best_loss: float
    lo: float
    hi: float
    open_lo: bool
    open_hi: bool
    tolerance: float

    @property
    def width_decades(self) -> float:
        """``log10(hi / lo)``."""
        return math.log10(self.hi / self.lo)

    def describe(self) -> str:
        """E.g. ``'1.23 decades (2.1e-03-3.6e-02)'``, ``'>= 0.85 decades (...)'`` if open."""
        bound = ">= " if (self.open_lo or self.open_hi) else ""
        return f"{bound}{self.width_decades:.2f} decades ({self.lo:.2g}-{self.hi:.2g})"


def _edge(x_in: float, y_in: float, x_out: float, y_out: float, threshold: float) -> float:
    """Where the segment from an inside point to an outside one crosses ``threshold`` (in
    log-lr); a non-finite outside loss (diverged) puts the edge at the inside point."""
    if not math.isfinite(y_out):
        return x_in
    return x_in + (threshold - y_in) / (y_out - y_in) * (x_out - x_in)


def stable_basin(lrs, losses, tolerance: float = 0.05) -> Basin:
    """The lr range within ``tolerance`` of the best loss on the grid.

    Args:
      lrs: (K,) peak learning rates, positive (any order; sorted here).
      losses: (K,) final losses (lower is better; NaN or inf for diverged runs). For a
        metric where higher is better pass its negative (e.g. ``-accuracy``).
      tolerance: the margin, in the losses' units.
    Returns the :class:`Basin` of the contiguous stretch of the grid around the best point
    whose losses are <= ``best + tolerance``, with its edges interpolated linearly in
    ``log10(lr)`` towards the first point outside.
    """
    lrs = np.asarray(lrs, np.float64).reshape(-1)
    losses = np.asarray(losses, np.float64).reshape(-1)
    if lrs.shape != losses.shape or lrs.size == 0:
        raise ValueError(f"lrs and losses need one equal, non-zero length; got {lrs.shape} "
                         f"and {losses.shape}")
    if np.any(lrs <= 0):
        raise ValueError(f"learning rates must be > 0, got {lrs.tolist()}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    order = np.argsort(lrs)
    x, y = np.log10(lrs[order]), losses[order]
    finite = np.isfinite(y)
    if not finite.any():
        raise ValueError("every run of this arm diverged: no basin")
    y = np.where(finite, y, np.inf)
    best = int(np.argmin(y))
    threshold = y[best] + tolerance
    i = best
    while i > 0 and y[i - 1] <= threshold:
        i -= 1
    j = best
    while j < len(y) - 1 and y[j + 1] <= threshold:
        j += 1
    lo = x[i] if i == 0 else _edge(x[i], y[i], x[i - 1], y[i - 1], threshold)
    hi = x[j] if j == len(y) - 1 else _edge(x[j], y[j], x[j + 1], y[j + 1], threshold)
    edge = lambda k, at: float(lrs[order][k]) if at == x[k] else float(10 ** at)  # noqa: E731
    return Basin(best_lr=float(lrs[order][best]), best_loss=float(y[best]), lo=edge(i, lo),
                 hi=edge(j, hi), open_lo=i == 0, open_hi=j == len(y) - 1,
                 tolerance=float(tolerance))


def loss_spikes(losses, jump: float = 0.05) -> np.ndarray:
    """(T,) bool: the points of a logged loss curve that rose by more than ``jump`` over
    the previous point (the first point is never a spike; non-finite points are)."""
    y = np.asarray(losses, np.float64).reshape(-1)
    out = np.zeros(y.shape, bool)
    if y.size > 1:
        rise = y[1:] - y[:-1]
        out[1:] = ~np.isfinite(y[1:]) | (rise > jump)
    return out


__all__ = ["Basin", "loss_spikes", "stable_basin"]
