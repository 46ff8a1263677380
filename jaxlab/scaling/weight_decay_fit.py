"""tau_opt against tokens-per-parameter from a weight-decay sweep (Power Lines arXiv 2505.13738).

AdamW's weight EMA spans tau = B / (lr wd D) of training (Wang & Aitchison arXiv
2405.13698). For each (N, D) in a sweep over wd (or lr), a parabola of final loss in
log tau locates tau_opt; then tau_opt = k TPP^a across TPP = D / N. Power Lines reports
k = 1.084, a = -0.527 (`laws.POWER_LINES_TAU`, UNVERIFIED second-hand constants).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from jaxlab.scaling.checks import positive_array, require_points, same_length
from jaxlab.scaling.laws import PowerLaw
from jaxlab.scaling.power_law_fit import fit_pure_power_law

__all__ = ["TauOpt", "around_best", "fit_tau_law", "tau_opt_from_sweep", "timescale"]


def timescale(B, lr, wd, D) -> np.ndarray:
    """tau = B / (lr wd D): fraction of training the AdamW weight EMA spans (B, D tokens)."""
    return positive_array("B", B) / (positive_array("lr", lr) * positive_array("wd", wd)
                                     * positive_array("D", D))


@dataclasses.dataclass(frozen=True)
class TauOpt:
    """Optimal timescale at one (N, D): from the vertex of loss vs log tau."""

    N: float
    D: float
    tau_opt: float
    loss_opt: float
    inside: bool  # vertex within the swept tau range (else clamped to the best run)

    @property
    def tpp(self) -> float:
        """Tokens per parameter D / N."""
        return self.D / self.N


def tau_opt_from_sweep(N, D, tau, loss, *, neighbours: int | None = None) -> list[TauOpt]:
    """tau_opt per (N, D) group of a sweep. Arrays (n,); each group needs >= 3 distinct tau.

    ``neighbours``: fit each parabola to the best run and up to this many runs on each
    side of it in log tau (None: every run of the group), so that a wide, asymmetric
    sweep does not pull the vertex. A vertex outside the fitted range (or an upside-down
    parabola) falls back to the best run's tau with `inside=False`.
    """
    if neighbours is not None and neighbours < 1:
        raise ValueError(f"neighbours must be >= 1 (runs on each side of the best), got "
                         f"{neighbours!r}")
    same_length(N=N, D=D, tau=tau, loss=loss)
    N = positive_array("N", N).reshape(-1)
    D = positive_array("D", D).reshape(-1)
    lt = np.log(positive_array("tau", tau)).reshape(-1)
    L = positive_array("loss", loss).reshape(-1)
    out = []
    keys = np.stack([N, D], axis=1)
    for n, d in np.unique(keys, axis=0):
        m = (N == n) & (D == d)
        require_points(len(np.unique(lt[m])), 3, f"tau_opt at N={n:.4g}, D={d:.4g} (distinct tau)")
        x, y = lt[m], L[m]
        if neighbours is not None:
            x, y = around_best(x, y, neighbours)
        c2, c1, c0 = np.polyfit(x, y, 2)
        v = -c1 / (2 * c2) if c2 > 0 else np.nan
        inside = bool(c2 > 0 and x.min() <= v <= x.max())
        if inside:
            out.append(TauOpt(n, d, float(np.exp(v)), float(np.polyval([c2, c1, c0], v)), True))
        else:
            i = int(np.argmin(y))
            out.append(TauOpt(n, d, float(np.exp(x[i])), float(y[i]), False))
    return out


def around_best(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The runs whose log tau is among the best run's and the k distinct values on each
    side of it (repeated tau values all kept). x, y: (n,)."""
    values = np.unique(x)
    j = int(np.searchsorted(values, x[np.argmin(y)]))
    lo, hi = max(0, j - k), min(len(values), j + k + 1)
    if hi - lo < 3:  # at least 3 distinct tau for a parabola
        lo, hi = (0, min(3, len(values))) if lo == 0 else (max(0, len(values) - 3), len(values))
    keep = (x >= values[lo]) & (x <= values[hi - 1])
    return x[keep], y[keep]


def fit_tau_law(optima: list[TauOpt], *, inside_only: bool = True) -> PowerLaw:
    """tau_opt = k TPP^a by least squares in log-log space over the per-group optima."""
    use = [o for o in optima if o.inside or not inside_only]
    require_points(len(use), 2, "the tau_opt(TPP) power law (groups with an interior optimum)")
    return fit_pure_power_law([o.tpp for o in use], [o.tau_opt for o in use], x_name="TPP",
                              y_name="tau_opt", name="fitted_tau")
