"""Robust Chinchilla fit, reproducing Besiroglu et al.'s procedure (arXiv 2404.10102).

Model (Hoffmann et al. arXiv 2203.15556, approach 3), written in log space with
theta = (a, b, e, alpha, beta), A = e^a, B = e^b, E = e^e:

    log L_hat(N, D) = LSE(a - alpha log N, b - beta log D, e)
    objective(theta) = SUM_i  w_i Huber_delta(log L_i - log L_hat(N_i, D_i)),  delta = 1e-3

minimised by L-BFGS from each of the 4,500 grid points alpha, beta in {0, .5, ..., 2},
e in {-1, -.5, ..., 1}, a, b in {0, 5, ..., 25}; the start with the lowest final objective
wins. All starts run at once (vmapped optax L-BFGS, `multistart.py`). `fit_chinchilla_scipy`
is the plain scipy L-BFGS-B loop over the same starts, kept as the reference.
Bootstrap intervals resample points with replacement (multinomial weights w_i) and refit
every resample in the same vmapped call.
"""
from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from jaxlab.scaling.checks import positive_array, require_points, same_length
from jaxlab.scaling.laws import AverageParamLaw, ChinchillaLaw, FittedLaw
from jaxlab.scaling.multistart import MultiStartResult, huber, minimize_multistart

__all__ = [
    "ChinchillaFit",
    "besiroglu_grid",
    "bootstrap_chinchilla",
    "chinchilla_objective",
    "chinchilla_value_and_grad",
    "fit_average_param_law",
    "fit_chinchilla",
    "fit_chinchilla_scipy",
]

HUBER_DELTA = 1e-3
MIN_POINTS = 6  # 5 constants + 1 degree of freedom


def besiroglu_grid() -> np.ndarray:
    """(4500, 5) starting points (a, b, e, alpha, beta) of Besiroglu et al.'s grid."""
    alphas = betas = np.arange(0.0, 2.0 + 1e-9, 0.5)
    es = np.arange(-1.0, 1.0 + 1e-9, 0.5)
    abs_ = np.arange(0.0, 25.0 + 1e-9, 5.0)
    rows = [(a, b, e, al, be) for al, be, e, a, b in itertools.product(alphas, betas, es, abs_, abs_)]
    return np.asarray(rows, dtype=np.float64)


def _log_pred(theta, logN, logD):
    a, b, e, alpha, beta = theta[0], theta[1], theta[2], theta[3], theta[4]
    terms = jnp.stack([a - alpha * logN, b - beta * logD, jnp.broadcast_to(e, logN.shape)])
    return jax.nn.logsumexp(terms, axis=0)


def chinchilla_objective(theta_5, weights_n, logN_n, logD_n, logL_n, delta):
    """Weighted SUM of Huber_delta residuals of log loss (JAX; theta = a, b, e, alpha, beta)."""
    r = logL_n - _log_pred(theta_5, logN_n, logD_n)
    return jnp.sum(weights_n * huber(r, delta))


def chinchilla_value_and_grad(theta_5, weights_n, logN_n, logD_n, logL_n, delta):
    """`chinchilla_objective` and its analytic gradient (5,), cheaper than autodiff."""
    a, b, e, alpha, beta = theta_5[0], theta_5[1], theta_5[2], theta_5[3], theta_5[4]
    t0, t1 = a - alpha * logN_n, b - beta * logD_n
    m = jnp.maximum(jnp.maximum(t0, t1), e)
    x0, x1, x2 = jnp.exp(t0 - m), jnp.exp(t1 - m), jnp.exp(e - m)
    s = x0 + x1 + x2
    r = logL_n - (m + jnp.log(s))
    c = jnp.clip(r, -delta, delta)
    value = jnp.sum(weights_n * c * (r - 0.5 * c))
    dp = -weights_n * c / s  # d objective / d log L_hat, divided by the LSE normaliser
    g0, g1 = dp * x0, dp * x1
    grad = jnp.stack([g0.sum(), g1.sum(), (dp * x2).sum(), -(g0 * logN_n).sum(),
                      -(g1 * logD_n).sum()])
    return value, grad


def _objective_np(theta, logN, logD, logL, delta):
    """numpy objective and analytic gradient, for the scipy reference loop."""
    a, b, e, alpha, beta = theta
    t = np.stack([a - alpha * logN, b - beta * logD, np.full_like(logN, e)])
    m = t.max(axis=0)
    ex = np.exp(t - m)
    s = ex.sum(axis=0)
    pred = m + np.log(s)
    p = ex / s
    r = logL - pred
    ar = np.abs(r)
    val = np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta)).sum()
    dpred = -np.clip(r, -delta, delta)  # d objective / d pred, per point
    grad = np.array([
        (dpred * p[0]).sum(),
        (dpred * p[1]).sum(),
        (dpred * p[2]).sum(),
        -(dpred * p[0] * logN).sum(),
        -(dpred * p[1] * logD).sum(),
    ])
    return val, grad


@dataclasses.dataclass(frozen=True)
class ChinchillaFit(FittedLaw):
    """A fitted Chinchilla law with how it was obtained.

    Attributes:
      law: the fitted constants.
      theta: (5,) best (a, b, e, alpha, beta).
      objective: best summed Huber objective.
      n_points, n_starts, n_converged: data and search sizes.
      delta: Huber delta used.
      optima_SxP: (S, 5) end points of every start, sorted by objective (best first).
    """

    law: ChinchillaLaw
    theta: np.ndarray
    objective: float
    n_points: int
    n_starts: int
    n_converged: int
    delta: float
    optima_SxP: np.ndarray = dataclasses.field(repr=False)

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {
            "law": "chinchilla",
            **{k: float(getattr(self.law, k)) for k in self.law.param_names},
            "objective": self.objective,
            "n_points": self.n_points,
            "n_starts": self.n_starts,
            "n_converged": self.n_converged,
            "huber_delta": self.delta,
        }


def _prepare(N, D, L):
    n = same_length(N=N, D=D, L=L)
    N = positive_array("N", N).reshape(-1)
    D = positive_array("D", D).reshape(-1)
    L = positive_array("loss", L).reshape(-1)
    require_points(n, MIN_POINTS, "the Chinchilla law (5 constants)")
    return np.log(N), np.log(D), np.log(L)


def _law_from_theta(theta, name) -> ChinchillaLaw:
    a, b, e, alpha, beta = (float(v) for v in theta)
    return ChinchillaLaw(E=np.exp(e), A=np.exp(a), B=np.exp(b), alpha=alpha, beta=beta, name=name)


def fit_chinchilla(
    N, D, loss, *, delta: float = HUBER_DELTA, starts_SxP: np.ndarray | None = None,
    max_iter: int = 1000, gtol: float = 1e-10, ftol: float = 1e-15, name: str = "fit",
) -> ChinchillaFit:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta by Besiroglu's robust many-start procedure.

    Args:
      N, D, loss: (n,) positive, finite arrays, n >= 6.
      delta: Huber delta on log loss (1e-3 in the paper).
      starts_SxP: (S, 5) starts (a, b, e, alpha, beta); default the 4,500-point grid.
      max_iter, gtol, ftol: per-start stopping rule (see `multistart.py`).
      name: label of the fitted law.

    Returns:
      ChinchillaFit for the start with the lowest objective.
    """
    logN, logD, logL = _prepare(N, D, loss)
    starts = besiroglu_grid() if starts_SxP is None else np.asarray(starts_SxP, np.float64)
    res = minimize_multistart(
        chinchilla_objective, starts, value_and_grad=chinchilla_value_and_grad,
        args=(np.ones_like(logN), logN, logD, logL, np.float64(delta)),
        max_iter=max_iter, gtol=gtol, ftol=ftol,
    )
    return _fit_from_result(res, len(logN), delta, name)


def _fit_from_result(res: MultiStartResult, n_points, delta, name) -> ChinchillaFit:
    order = np.argsort(np.where(np.isfinite(res.values_S), res.values_S, np.inf), kind="stable")
    return ChinchillaFit(
        law=_law_from_theta(res.best_params, name),
        theta=res.best_params.copy(),
        objective=res.best_value,
        n_points=n_points,
        n_starts=len(res.values_S),
        n_converged=int(res.converged_S.sum()),
        delta=delta,
        optima_SxP=res.params_SxP[order],
    )


def fit_chinchilla_scipy(
    N, D, loss, *, delta: float = HUBER_DELTA, starts_SxP: np.ndarray | None = None,
    gtol: float = 1e-10, ftol: float = 1e-15, maxiter: int = 1000, name: str = "scipy",
) -> ChinchillaFit:
    """Reference: `scipy.optimize.minimize(method="L-BFGS-B")` in a Python loop over starts.

    Same objective (analytic numpy gradient), same starts and tolerances as
    `fit_chinchilla`; kept for parity tests and the benchmark.
    """
    logN, logD, logL = _prepare(N, D, loss)
    starts = besiroglu_grid() if starts_SxP is None else np.asarray(starts_SxP, np.float64)
    xs, vals, conv = [], [], 0
    for x0 in starts:
        with np.errstate(over="ignore", invalid="ignore"):
            r = optimize.minimize(
                _objective_np, x0, args=(logN, logD, logL, delta), jac=True, method="L-BFGS-B",
                options={"gtol": gtol, "ftol": ftol, "maxiter": maxiter},
            )
        xs.append(r.x)
        vals.append(r.fun if np.isfinite(r.fun) else np.inf)
        conv += bool(r.success)
    vals = np.asarray(vals)
    res = MultiStartResult(np.asarray(xs), vals, np.zeros(len(vals), int),
                           np.zeros(len(vals), int), np.zeros(len(vals), bool),
                           int(np.argmin(vals)))
    fit = _fit_from_result(res, len(logN), delta, name)
    return dataclasses.replace(fit, n_converged=conv)


def bootstrap_chinchilla(
    N, D, loss, *, n_boot: int = 200, seed: int = 0, level: float = 0.95,
    fit: ChinchillaFit | None = None, starts_per_resample: int = 4,
    delta: float = HUBER_DELTA,
) -> dict:
    """Percentile bootstrap intervals for E, A, B, alpha, beta (arXiv 2404.10102 sec. 3).

    Each resample draws n points with replacement (multinomial weights) and is refitted
    from the `starts_per_resample` best distinct optima of the full-data fit; all
    resamples x starts run in one vmapped solve.

    Returns:
      {"level", "n_boot", "samples": (n_boot, 5) array of (E, A, B, alpha, beta),
       "intervals": {name: (lo, hi)}, "point": {name: value}}.
    """
    logN, logD, logL = _prepare(N, D, loss)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot!r}")
    fit = fit or fit_chinchilla(N, D, loss, delta=delta)
    starts = fit.optima_SxP[:1]  # distinct optima, best objective first
    for row in fit.optima_SxP[1:]:
        if len(starts) >= starts_per_resample:
            break
        if np.min(np.max(np.abs(starts - row), axis=1)) > 1e-4:
            starts = np.vstack([starts, row])
    n = len(logN)
    rng = np.random.default_rng(seed)
    W = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    k = len(starts)
    res = minimize_multistart(
        chinchilla_objective, np.tile(starts, (n_boot, 1)),
        value_and_grad=chinchilla_value_and_grad,
        batched_args=(np.repeat(W, k, axis=0),),
        args=(logN, logD, logL, np.float64(delta)),
    )
    vals = res.values_S.reshape(n_boot, k)
    best = res.params_SxP.reshape(n_boot, k, 5)[np.arange(n_boot), np.argmin(vals, axis=1)]
    samples = np.column_stack([np.exp(best[:, 2]), np.exp(best[:, 0]), np.exp(best[:, 1]),
                               best[:, 3], best[:, 4]])
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    names = ChinchillaLaw.param_names
    return {
        "level": level,
        "n_boot": n_boot,
        "samples": samples,
        "intervals": {nm: tuple(np.quantile(samples[:, i], q)) for i, nm in enumerate(names)},
        "point": {nm: float(getattr(fit.law, nm)) for nm in names},
    }


def fit_average_param_law(N_bar, D, loss, **kwargs) -> AverageParamLaw:
    """Fit the Chinchilla law in N_bar (arXiv 2501.12486); kwargs go to `fit_chinchilla`."""
    fit = fit_chinchilla(N_bar, D, loss, name=kwargs.pop("name", "avg_params"), **kwargs)
    return AverageParamLaw(fit.law)
