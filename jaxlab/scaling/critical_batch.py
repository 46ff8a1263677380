"""Critical batch size from a batch-size sweep (McCandlish et al. arXiv 1812.06162).

For one target loss, the optimisation steps S and examples D = S B needed at batch B
follow (S / S_min - 1)(D / D_min - 1) = 1, i.e.

    S(B) = S_min (1 + B_crit / B),   D(B) = D_min (1 + B / B_crit),   B_crit = D_min / S_min.

S(B) is linear in 1/B, so S_min and S_min B_crit come from weighted least squares of S
on 1/B (weights 1/S^2: relative errors). Across targets, B_crit grows as loss falls;
`fit_pure_power_law` of B_crit against D_min gives Power Lines' B_crit ~ D^0.47 form.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from jaxlab.scaling.checks import positive_array, require_points, same_length

__all__ = ["CriticalBatchLaw", "fit_critical_batch", "steps_to_target"]


@dataclasses.dataclass(frozen=True)
class CriticalBatchLaw:
    """S(B) = S_min (1 + B_crit / B) for one target loss; B and D in the same unit."""

    S_min: float
    B_crit: float
    target: float = float("nan")

    @property
    def D_min(self) -> float:
        """Least data to reach the target (infinitesimal batch): S_min B_crit."""
        return self.S_min * self.B_crit

    def steps(self, B) -> np.ndarray:
        """Steps to the target at batch B."""
        return self.S_min * (1 + self.B_crit / positive_array("B", B))

    def data(self, B) -> np.ndarray:
        """Data to the target at batch B."""
        return self.D_min * (1 + positive_array("B", B) / self.B_crit)

    def __repr__(self) -> str:
        return (f"CriticalBatchLaw(target={self.target:.4g}): S = {self.S_min:.4g} "
                f"(1 + {self.B_crit:.4g} / B)")


def fit_critical_batch(B, steps, *, target: float = float("nan")) -> CriticalBatchLaw:
    """Fit S(B) = S_min (1 + B_crit / B) to steps-to-target at >= 3 batch sizes.

    Args:
      B: (n,) batch sizes (tokens or sequences per step), >= 2 distinct values.
      steps: (n,) steps each run needed to reach the target loss.

    Raises ValueError when the fit gives S_min <= 0 or B_crit <= 0 (steps do not fall
    with batch size as the model requires: check the runs reached the target).
    """
    same_length(B=B, steps=steps)
    B = positive_array("B", B).reshape(-1)
    S = positive_array("steps", steps).reshape(-1)
    require_points(len(np.unique(B)), 3, "the McCandlish critical-batch fit (distinct B)")
    X = np.column_stack([np.ones_like(B), 1.0 / B]) / S[:, None]
    coef, *_ = np.linalg.lstsq(X, np.ones_like(S), rcond=None)
    s_min, s_min_bcrit = coef
    if not (s_min > 0 and s_min_bcrit > 0):
        raise ValueError(
            f"critical-batch fit gave S_min={s_min:.4g}, S_min*B_crit={s_min_bcrit:.4g}; both "
            "must be > 0 (steps must shrink as the batch grows)"
        )
    return CriticalBatchLaw(S_min=float(s_min), B_crit=float(s_min_bcrit / s_min),
                            target=float(target))


def steps_to_target(steps, losses, target: float) -> float:
    """First step at which a loss curve reaches `target`, linearly interpolated.

    Args:
      steps, losses: (T,) a run's metric curve (e.g. from `load_metrics`), steps ascending.
    Returns NaN when the curve never reaches the target.
    """
    same_length(steps=steps, losses=losses)
    s = np.asarray(steps, np.float64).reshape(-1)
    L = np.asarray(losses, np.float64).reshape(-1)
    ok = np.isfinite(L)
    s, L = s[ok], L[ok]
    hit = np.flatnonzero(L <= target)
    if hit.size == 0:
        return float("nan")
    i = int(hit[0])
    if i == 0:
        return float(s[0])
    frac = (L[i - 1] - target) / (L[i - 1] - L[i])
    return float(s[i - 1] + frac * (s[i] - s[i - 1]))
