"""Frantar et al.'s sparse scaling law L(S, N, D) (arXiv 2309.08520), its fit and uses.

    L(S, N, D) = (a_S (1 - S)^b_S + c_S) N^-b_N + (a_D / D)^b_D + c

S: sparsity in [0, 1), N: non-zero non-embedding parameters, D: training data in the
law's own unit (steps for T5/C4, images for ViT/JFT). Constants from the paper (also in
google-research/jaxpruner projects/bigsparse) are `FRANTAR_T5` and `FRANTAR_VIT`.

Fit: Huber (delta 1e-3) on log loss, many starts, as the paper did; in log space
theta = (log a_S, b_S, log c_S, b_N, log a_D, b_D, log c) and
log L = LSE(LSE(log a_S + b_S log(1 - S), log c_S) - b_N log N, b_D (log a_D - log D), log c).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from jaxlab.scaling.checks import finite_array, positive_array, require_points, same_length
from jaxlab.scaling.laws import FittedLaw
from jaxlab.scaling.multistart import huber, minimize_multistart

__all__ = ["FRANTAR_T5", "FRANTAR_VIT", "FrantarSparseLaw", "SparseFit", "fit_frantar"]


def _sparsity(S) -> np.ndarray:
    S = finite_array("sparsity", S)
    if np.any((S < 0) | (S >= 1)):
        raise ValueError(f"sparsity must lie in [0, 1), got values in [{S.min()}, {S.max()}]")
    return S


@dataclasses.dataclass(frozen=True)
class FrantarSparseLaw:
    """L(S, N, D) = (a_S (1-S)^b_S + c_S) N^-b_N + (a_D / D)^b_D + c (arXiv 2309.08520)."""

    a_S: float
    b_S: float
    c_S: float
    b_N: float
    a_D: float
    b_D: float
    c: float
    name: str = "frantar"

    param_names = ("a_S", "b_S", "c_S", "b_N", "a_D", "b_D", "c")

    def predict(self, S, N, D) -> np.ndarray:
        """Loss at sparsity S, non-zero params N, data D (broadcasting arrays)."""
        S = _sparsity(S)
        N = positive_array("N", N)
        D = positive_array("D", D)
        return ((self.a_S * (1 - S) ** self.b_S + self.c_S) * N ** (-self.b_N)
                + (self.a_D / D) ** self.b_D + self.c)

    def capacity_multiplier(self, S) -> np.ndarray:
        """N_eff / N: how many times more non-zeros a dense model needs for the same loss.

        ((a_S + c_S) / (a_S (1-S)^b_S + c_S))^(1 / b_N); T5: ~1.6x at S=0.5, ~2.2x at 0.75.
        """
        S = _sparsity(S)
        return ((self.a_S + self.c_S) / (self.a_S * (1 - S) ** self.b_S + self.c_S)) ** (1 / self.b_N)

    def loss_at_compute(self, S, N, C, flops_per_unit: float = 6.0) -> np.ndarray:
        """Loss with N non-zeros at sparsity S when compute C is costed at the dense size.

        D = C / (flops_per_unit N / (1 - S)); flops_per_unit is FLOPs per dense parameter
        per unit of D (6 per token; 6 x tokens-per-step when D counts steps, as for T5).
        """
        S = _sparsity(S)
        N = positive_array("N", N)
        C = positive_array("C", C)
        return self.predict(S, N, C * (1 - S) / (flops_per_unit * N))

    def optimal_sparsity(self, N, C, flops_per_unit: float = 6.0, s_max: float = 0.999) -> float:
        """argmin over S in [0, s_max] of `loss_at_compute(S, N, C)` for scalar N and C."""
        N = float(positive_array("N", N))
        C = float(positive_array("C", C))
        f = lambda s: float(self.loss_at_compute(s, N, C, flops_per_unit))
        grid = np.linspace(0.0, s_max, 1001)
        vals = np.array([f(s) for s in grid])
        i = int(np.argmin(vals))
        if i in (0, len(grid) - 1):
            return float(grid[i])
        res = optimize.minimize_scalar(f, bounds=(grid[i - 1], grid[i + 1]), method="bounded",
                                       options={"xatol": 1e-10})
        return float(res.x)

    def optimal_sparsity_grid(self, N, C, flops_per_unit: float = 6.0, s_max: float = 0.99,
                              n_grid: int = 991) -> np.ndarray:
        """`optimal_sparsity` on arrays: for N and C broadcast to one shape, the S of a
        uniform grid of ``n_grid`` points on [0, s_max] with the lowest loss at compute C
        (resolution ``s_max / (n_grid - 1)``; the scalar method refines between points)."""
        N, C = np.broadcast_arrays(positive_array("N", N), positive_array("C", C))
        grid = np.linspace(0.0, s_max, n_grid).reshape((-1,) + (1,) * N.ndim)
        return grid.reshape(-1)[np.argmin(self.loss_at_compute(grid, N, C, flops_per_unit),
                                          axis=0)]

    def table_row(self) -> dict[str, float | str]:
        """One row of a constants table."""
        return {"law": self.name, **{k: getattr(self, k) for k in self.param_names}}

    def __repr__(self) -> str:
        return (f"FrantarSparseLaw[{self.name}]: L = ({self.a_S:.4g} (1-S)^{self.b_S:.4g} + "
                f"{self.c_S:.4g}) N^-{self.b_N:.4g} + ({self.a_D:.4g}/D)^{self.b_D:.4g} + {self.c:.4g}")


FRANTAR_T5 = FrantarSparseLaw(a_S=16.8, b_S=0.722, c_S=45.0, b_N=0.245, a_D=1.05e4,
                              b_D=0.203, c=0.651, name="frantar_t5_c4")
FRANTAR_VIT = FrantarSparseLaw(a_S=294.0, b_S=0.821, c_S=468.0, b_N=0.392, a_D=2.37e8,
                               b_D=0.890, c=4.517, name="frantar_vit_jft")


def _log_pred(theta_7, log1mS_n, logN_n, logD_n):
    la_S, b_S, lc_S, b_N, la_D, b_D, lc = (theta_7[i] for i in range(7))
    cap = jnp.logaddexp(la_S + b_S * log1mS_n, lc_S)
    terms = jnp.stack([cap - b_N * logN_n, b_D * (la_D - logD_n), jnp.broadcast_to(lc, logN_n.shape)])
    return jax.nn.logsumexp(terms, axis=0)


def frantar_objective(theta_7, log1mS_n, logN_n, logD_n, logL_n, delta):
    """SUM of Huber_delta residuals of log loss for the sparse law (JAX)."""
    return jnp.sum(huber(logL_n - _log_pred(theta_7, log1mS_n, logN_n, logD_n), delta))


def frantar_objective_linear(theta_7, log1mS_n, logN_n, logD_n, logL_n, delta):
    """SUM of Huber_delta residuals of the loss itself (not its log), as Frantar et al.
    fitted their ViT/JFT law (arXiv 2309.08520, appendix)."""
    r = jnp.exp(logL_n) - jnp.exp(_log_pred(theta_7, log1mS_n, logN_n, logD_n))
    return jnp.sum(huber(r, delta))


@dataclasses.dataclass(frozen=True)
class SparseFit(FittedLaw):
    """Fitted sparse law, its objective and search size."""

    law: FrantarSparseLaw
    objective: float
    n_points: int
    n_starts: int

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {"law": "frantar", **{k: float(getattr(self.law, k)) for k in self.law.param_names},
                "objective": self.objective, "n_points": self.n_points, "n_starts": self.n_starts}


def frantar_starts(n_random: int = 2000, seed: int = 0) -> np.ndarray:
    """(n_random, 7) random starts over plausible ranges of the log-space constants."""
    rng = np.random.default_rng(seed)
    lo = np.array([0.0, 0.2, 0.0, 0.05, 0.0, 0.05, -2.0])
    hi = np.array([8.0, 1.5, 8.0, 0.6, 25.0, 1.0, 2.0])
    return lo + (hi - lo) * rng.random((n_random, 7))


def fit_frantar(S, N, D, loss, *, delta: float = 1e-3, starts_SxP=None,
                name: str = "fit", residuals: str = "log") -> SparseFit:
    """Fit Frantar's law by robust many-start L-BFGS (Huber, arXiv 2309.08520).

    Args:
      S, N, D, loss: (n,) arrays; S in [0, 1) with at least two distinct sparsities
        (otherwise a_S and c_S are not identifiable), N, D, loss > 0, n >= 8.
      starts_SxP: (K, 7) log-space starts; default 2,000 random ones (fixed seed).
      residuals: ``'log'`` Huber on log loss (the T5 fit), ``'linear'`` Huber on the loss
        (the paper's ViT fit); ``delta`` is in those units.
    """
    objectives = {"log": frantar_objective, "linear": frantar_objective_linear}
    if residuals not in objectives:
        raise ValueError(f"residuals={residuals!r}; valid: {sorted(objectives)}")
    n = same_length(S=S, N=N, D=D, loss=loss)
    S = _sparsity(S).reshape(-1)
    logN = np.log(positive_array("N", N)).reshape(-1)
    logD = np.log(positive_array("D", D)).reshape(-1)
    logL = np.log(positive_array("loss", loss)).reshape(-1)
    require_points(n, 8, "Frantar's sparse law (7 constants)")
    if len(np.unique(S)) < 2:
        raise ValueError(f"sparse law needs runs at >= 2 distinct sparsities, got only {np.unique(S)}")
    starts = frantar_starts() if starts_SxP is None else np.asarray(starts_SxP, np.float64)
    res = minimize_multistart(objectives[residuals], starts,
                              args=(np.log1p(-S), logN, logD, logL, np.float64(delta)))
    la_S, b_S, lc_S, b_N, la_D, b_D, lc = res.best_params
    law = FrantarSparseLaw(np.exp(la_S), b_S, np.exp(lc_S), b_N, np.exp(la_D), b_D, np.exp(lc),
                           name=name)
    return SparseFit(law=law, objective=res.best_value, n_points=n, n_starts=len(starts))
