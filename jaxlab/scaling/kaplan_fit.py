"""Robust many-start fit of Kaplan's L(N, D) (arXiv 2001.08361 eq. 1.5).

In log space with theta = (log N_c, log D_c, alpha_N, alpha_D):
    log L = alpha_D LSE((alpha_N / alpha_D)(log N_c - log N), log D_c - log D)
minimised as the SUM of Huber_delta (1e-3) residuals of log loss from a grid of starts.
"""
from __future__ import annotations

import dataclasses
import itertools

import jax.numpy as jnp
import numpy as np

from jaxlab.scaling.checks import positive_array, require_points, same_length
from jaxlab.scaling.laws import FittedLaw, KaplanLaw
from jaxlab.scaling.multistart import huber, minimize_multistart

__all__ = ["KaplanFit", "fit_kaplan"]


def kaplan_objective(theta_4, logN_n, logD_n, logL_n, delta):
    """SUM of Huber residuals of log loss for Kaplan's law (JAX)."""
    lNc, lDc, aN, aD = theta_4[0], theta_4[1], theta_4[2], theta_4[3]
    pred = aD * jnp.logaddexp(aN / aD * (lNc - logN_n), lDc - logD_n)
    return jnp.sum(huber(logL_n - pred, delta))


@dataclasses.dataclass(frozen=True)
class KaplanFit(FittedLaw):
    """Fitted Kaplan law, objective and search size."""

    law: KaplanLaw
    objective: float
    n_points: int
    n_starts: int

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {"law": "kaplan", **{k: float(getattr(self.law, k)) for k in self.law.param_names},
                "objective": self.objective, "n_points": self.n_points, "n_starts": self.n_starts}


def kaplan_grid() -> np.ndarray:
    """(108, 4) starts: log N_c, log D_c in {20, 27, 34}, alpha_N in {.05, .1, .2, .4},
    alpha_D in {.05, .1, .2} (fits the 128-row solver batch)."""
    logs = (20.0, 27.0, 34.0)
    return np.array(list(itertools.product(logs, logs, (0.05, 0.1, 0.2, 0.4), (0.05, 0.1, 0.2))))


def fit_kaplan(N, D, loss, *, delta: float = 1e-3, starts_SxP=None, name: str = "fit") -> KaplanFit:
    """Fit Kaplan's law to (n,) positive N, D, loss with n >= 5."""
    n = same_length(N=N, D=D, loss=loss)
    logN = np.log(positive_array("N", N)).reshape(-1)
    logD = np.log(positive_array("D", D)).reshape(-1)
    logL = np.log(positive_array("loss", loss)).reshape(-1)
    require_points(n, 5, "Kaplan's law (4 constants)")
    starts = kaplan_grid() if starts_SxP is None else np.asarray(starts_SxP, np.float64)
    res = minimize_multistart(kaplan_objective, starts, args=(logN, logD, logL, np.float64(delta)))
    lNc, lDc, aN, aD = res.best_params
    law = KaplanLaw(N_c=float(np.exp(lNc)), D_c=float(np.exp(lDc)), alpha_N=float(aN),
                    alpha_D=float(aD), name=name)
    return KaplanFit(law=law, objective=res.best_value, n_points=n, n_starts=len(starts))
