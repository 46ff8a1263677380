"""Fits of one-variable power laws: y = E + A x^-alpha (saturating) and y = k x^a (pure).

Saturating fits use Huber (delta 1e-3) on log y with many starts, like the Chinchilla
fit (arXiv 2404.10102); x is divided by its geometric mean first so the grid of starts
fits any unit (FLOPs, tokens, PFLOP/s-days). Pure power laws are a straight line in
log-log space and are fitted by least squares there (closed form).

Few points: `fit_saturating_power_law(mode="auto")` fits all three constants only with
>= 5 points; with 3-4 it fits the pure power law A x^-alpha (E = 0), or A and alpha with
E held at `fixed_E` when one is given (e.g. from a fit to more data), and records why in
`FitNote`. This is what a sweep report of 3-4 runs per optimizer gets.
"""
from __future__ import annotations

import dataclasses
import itertools

import jax.numpy as jnp
import numpy as np

from jaxlab.scaling.checks import positive_array, require_points, same_length
from jaxlab.scaling.laws import FittedLaw, PowerLaw, SaturatingPowerLaw
from jaxlab.scaling.multistart import huber, minimize_multistart

__all__ = [
    "MIN_POINTS_SATURATING",
    "PowerLawFit",
    "fit_power_law_in_compute",
    "fit_pure_power_law",
    "fit_saturating_power_law",
]

MIN_POINTS_SATURATING = 5  # 3 constants + 2 degrees of freedom before "auto" trusts E
MIN_POINTS_PURE = 3


@dataclasses.dataclass(frozen=True)
class PowerLawFit(FittedLaw):
    """A fitted one-variable law plus how it was fitted.

    Attributes:
      law: the fitted SaturatingPowerLaw (E = 0 for the pure form).
      objective: summed Huber objective on log y (least squares on log y for pure fits).
      n_points: points used.
      note: human-readable remark, e.g. why fewer constants were fitted ("" if none).
    """

    law: SaturatingPowerLaw
    objective: float
    n_points: int
    note: str = ""

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {"E": self.law.E, "A": self.law.A, "alpha": self.law.alpha,
                "free_constants": self.law.n_free, "objective": self.objective,
                "n_points": self.n_points, "note": self.note}


def _sat_objective(theta_3, logx_n, logy_n, delta):
    a, alpha, e = theta_3[0], theta_3[1], theta_3[2]
    r = logy_n - jnp.logaddexp(a - alpha * logx_n, e)
    return jnp.sum(huber(r, delta))


def _fixed_e_objective(theta_2, logx_n, logy_n, E, delta):
    a, alpha = theta_2[0], theta_2[1]
    r = logy_n - jnp.log(E + jnp.exp(a - alpha * logx_n))
    return jnp.sum(huber(r, delta))


def fit_pure_power_law(x, y, *, x_name: str = "x", y_name: str = "y",
                       name: str = "power_law") -> PowerLaw:
    """Least squares of log y on log x: y = k x^a. x, y: (n,) positive, n >= 2."""
    n = same_length(x=x, y=y)
    lx = np.log(positive_array(x_name, x)).reshape(-1)
    ly = np.log(positive_array(y_name, y)).reshape(-1)
    require_points(n, 2, f"the power law {y_name} = k {x_name}^a")
    if np.ptp(lx) == 0:
        raise ValueError(f"{x_name} must take at least two distinct values, got only {np.exp(lx[0])}")
    a, logk = np.polyfit(lx, ly, 1)
    return PowerLaw(k=float(np.exp(logk)), a=float(a), x_name=x_name, y_name=y_name, name=name)


def fit_saturating_power_law(
    x, y, *, mode: str = "auto", fixed_E: float | None = None, delta: float = 1e-3,
    x_name: str = "C", name: str = "power_law",
) -> PowerLawFit:
    """Fit y = E + A x^-alpha (alpha > 0 expected, not enforced).

    Args:
      x, y: (n,) positive arrays.
      mode: "saturating" (all 3 constants; n >= 4), "pure" (E = 0; n >= 3), or "auto"
        (saturating when n >= 5, else pure or fixed-E with a note).
      fixed_E: hold E at this value (0 <= E < min y) and fit A, alpha; n >= 3.
      delta: Huber delta on log y.

    Returns:
      PowerLawFit; `law.n_free` says how many constants were fitted.
    """
    n = same_length(x=x, y=y)
    x = positive_array(x_name, x).reshape(-1)
    y = positive_array("y", y).reshape(-1)
    if mode not in ("auto", "saturating", "pure"):
        raise ValueError(f"mode must be 'auto', 'saturating' or 'pure', got {mode!r}")
    if len(np.unique(x)) < 2:
        raise ValueError(f"{x_name} must take at least two distinct values, got only {x[0]!r}")
    note = ""
    if mode == "auto":
        if fixed_E is not None:
            mode = "fixed"
        elif n >= MIN_POINTS_SATURATING:
            mode = "saturating"
        else:
            require_points(n, MIN_POINTS_PURE, f"a power law in {x_name}")
            mode = "pure"
            note = (f"only {n} points (< {MIN_POINTS_SATURATING}): fitted the pure power law "
                    f"A {x_name}^-alpha with E = 0 instead of E + A {x_name}^-alpha")
    elif fixed_E is not None:
        raise ValueError("fixed_E is only used with mode='auto'")
    x_ref = float(np.exp(np.mean(np.log(x))))
    lx, ly = np.log(x / x_ref), np.log(y)

    if mode == "pure":
        require_points(n, MIN_POINTS_PURE, f"the pure power law in {x_name}")
        slope, intercept = np.polyfit(lx, ly, 1)
        alpha, A_ref = -slope, np.exp(intercept)
        law = SaturatingPowerLaw(0.0, float(A_ref * x_ref**alpha), float(alpha), x_name, name, 2)
        return PowerLawFit(law, float(np.sum((ly - intercept - slope * lx) ** 2)), n, note)

    if mode == "fixed":
        require_points(n, MIN_POINTS_PURE, f"a power law in {x_name} with E fixed")
        if not (np.isfinite(fixed_E) and 0 <= fixed_E < y.min()):
            raise ValueError(f"fixed_E must be finite and in [0, min y = {y.min():.6g}), got {fixed_E!r}")
        starts = np.array(list(itertools.product(np.linspace(-6, 2, 16), np.linspace(0, 1.75, 8))))
        res = minimize_multistart(_fixed_e_objective, starts,
                                  args=(lx, ly, np.float64(fixed_E), np.float64(delta)))
        a, alpha = res.best_params
        law = SaturatingPowerLaw(float(fixed_E), float(np.exp(a) * x_ref**alpha), float(alpha),
                                 x_name, name, 2)
        note = note or f"E held at {fixed_E:.6g}; fitted A and alpha"
        return PowerLawFit(law, res.best_value, n, note)

    require_points(n, 4, f"E + A {x_name}^-alpha (3 constants)")
    # 8 x 4 x 4 = 128 starts (one solver batch); x is normalised so log A is O(1).
    e_grid = np.log(y.min()) + np.log(np.array([0.1, 0.5, 0.8, 0.95]))
    starts = np.array(list(itertools.product(np.linspace(-6, 1, 8), (0.05, 0.2, 0.5, 1.0), e_grid)))
    res = minimize_multistart(_sat_objective, starts, args=(lx, ly, np.float64(delta)))
    a, alpha, e = res.best_params
    law = SaturatingPowerLaw(float(np.exp(e)), float(np.exp(a) * x_ref**alpha), float(alpha),
                             x_name, name, 3)
    return PowerLawFit(law, res.best_value, n, note)


def fit_power_law_in_compute(df_group, *, compute_col: str = "C", loss_col: str = "final_val_loss",
                             name: str | None = None, **kwargs) -> PowerLawFit:
    """L(C) = E + A C^-alpha for one group of runs (e.g. one optimizer) from a runs table.

    Args:
      df_group: pandas DataFrame with `compute_col` and `loss_col` (e.g. from `load_runs`).
      kwargs: passed to `fit_saturating_power_law` (mode, fixed_E, delta).
    """
    for col in (compute_col, loss_col):
        if col not in df_group.columns:
            raise ValueError(f"column {col!r} missing; available: {list(df_group.columns)}")
    sub = df_group[[compute_col, loss_col]].dropna()
    fit = fit_saturating_power_law(sub[compute_col].to_numpy(), sub[loss_col].to_numpy(),
                                   x_name=compute_col, name=name or "L(C)", **kwargs)
    dropped = len(df_group) - len(sub)
    if dropped:
        extra = f"{dropped} runs without {compute_col}/{loss_col} were left out"
        fit = dataclasses.replace(fit, note="; ".join(filter(None, [fit.note, extra])))
    return fit
