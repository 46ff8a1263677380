"""IsoFLOP analysis (Hoffmann et al. arXiv 2203.15556, approach 2).

For each compute budget C, runs of different sizes N (and D = C / 6N) trace a valley of
final loss against log N. A parabola in log N per budget gives the budget's optimum
N_opt(C) at its vertex; across budgets, N_opt = k C^a and D_opt = k' C^b are straight
lines in log-log space. `robust=True` fits each parabola with a Huber loss (as Marin
does) instead of least squares.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import optimize

from jaxlab.scaling.checks import positive_array, require_points, same_length
from jaxlab.scaling.laws import PowerLaw
from jaxlab.scaling.power_law_fit import fit_pure_power_law

__all__ = ["IsoflopFit", "IsoflopParabola", "fit_isoflop", "fit_isoflop_parabola"]


@dataclasses.dataclass(frozen=True)
class IsoflopParabola:
    """loss = c2 (log N)^2 + c1 log N + c0 at one budget; vertex at N_opt, loss_opt."""

    budget: float
    coeffs: tuple[float, float, float]  # (c2, c1, c0), highest power first
    N_opt: float
    loss_opt: float
    n_points: int
    inside: bool  # vertex within the sampled range of N
    label: str | None = None  # the budget's name in the sweep (None: grouped by C)

    def predict(self, N) -> np.ndarray:
        """Parabola value at N (array)."""
        return np.polyval(self.coeffs, np.log(positive_array("N", N)))


def fit_isoflop_parabola(N, loss, budget: float, *, robust: bool = False,
                         delta: float = 1e-2) -> IsoflopParabola:
    """Parabola of loss against log N for runs sharing one compute budget.

    Args:
      N, loss: (n,) positive arrays, n >= 3 distinct N.
      budget: the budget C (FLOPs) these runs share, for labelling.
      robust: Huber-loss fit (f_scale `delta` in loss units) instead of least squares.

    Raises ValueError when the parabola opens downward (no minimum: the sweep missed the
    valley; add smaller or larger models).
    """
    n = same_length(N=N, loss=loss)
    lN = np.log(positive_array("N", N)).reshape(-1)
    L = positive_array("loss", loss).reshape(-1)
    require_points(len(np.unique(lN)), 3, f"an isoFLOP parabola (budget {budget:.3g}, distinct N)")
    coeffs = np.polyfit(lN, L, 2)
    if robust:
        res = optimize.least_squares(lambda c: np.polyval(c, lN) - L, coeffs, loss="huber",
                                     f_scale=delta)
        coeffs = res.x
    c2, c1, c0 = (float(c) for c in coeffs)
    if not c2 > 0:
        raise ValueError(
            f"isoFLOP parabola at budget {budget:.3g} opens downward (curvature {c2:.3g} <= 0): "
            "the runs do not bracket the optimum; add smaller and larger models"
        )
    v = -c1 / (2 * c2)
    return IsoflopParabola(budget=float(budget), coeffs=(c2, c1, c0), N_opt=float(np.exp(v)),
                           loss_opt=float(np.polyval(coeffs, v)), n_points=n,
                           inside=bool(lN.min() <= v <= lN.max()))


@dataclasses.dataclass(frozen=True)
class IsoflopFit:
    """Per-budget parabolas and the N_opt(C), D_opt(C) power laws across budgets."""

    parabolas: list[IsoflopParabola]
    N_opt_law: PowerLaw
    D_opt_law: PowerLaw

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {
            "budgets": [{"label": p.label, "C": p.budget, "N_opt": p.N_opt, "loss_opt": p.loss_opt,
                         "n_points": p.n_points, "vertex_inside_range": p.inside}
                        for p in self.parabolas],
            "N_opt": {"k": self.N_opt_law.k, "a": self.N_opt_law.a},
            "D_opt": {"k": self.D_opt_law.k, "a": self.D_opt_law.a},
        }


def fit_isoflop(N, C, loss, *, budget=None, robust: bool = False,
                flops_per_param_token: float = 6.0) -> IsoflopFit:
    """IsoFLOP fit over budgets: a parabola per budget, then N_opt = k C^a across budgets.

    Args:
      N, C, loss: (n,) arrays of runs. Runs are grouped by `budget` labels (n,) when
        given (the sweep's own budget names: a run's FLOPs include attention and logits,
        so runs planned on one 6ND budget do not share one C), else by C rounded to 3
        significant digits.
      flops_per_param_token: D_opt = C / (k N_opt).
    """
    same_length(N=N, C=C, loss=loss)
    N = positive_array("N", N).reshape(-1)
    C = positive_array("C", C).reshape(-1)
    loss = positive_array("loss", loss).reshape(-1)
    labels = np.asarray(budget).reshape(-1) if budget is not None else np.array(
        [float(f"{c:.3g}") for c in C])
    parabolas = []
    for b in np.unique(labels):
        m = labels == b
        p = fit_isoflop_parabola(N[m], loss[m], float(np.median(C[m])), robust=robust)
        parabolas.append(dataclasses.replace(p, label=str(b)))
    require_points(len(parabolas), 2, "the N_opt(C) power law (budgets)")
    Cs = np.array([p.budget for p in parabolas])
    Ns = np.array([p.N_opt for p in parabolas])
    return IsoflopFit(
        parabolas=parabolas,
        N_opt_law=fit_pure_power_law(Cs, Ns, x_name="C", y_name="N_opt", name="isoflop_N_opt"),
        D_opt_law=fit_pure_power_law(Cs, Cs / (flops_per_param_token * Ns), x_name="C",
                                     y_name="D_opt", name="isoflop_D_opt"),
    )
