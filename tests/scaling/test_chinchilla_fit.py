"""Chinchilla fit: recovery of known constants, parity with scipy, bootstrap, bad input."""
import numpy as np
import pytest
import scipy.special

from jaxlab.scaling.chinchilla_fit import (
    besiroglu_grid,
    bootstrap_chinchilla,
    fit_average_param_law,
    fit_chinchilla,
    fit_chinchilla_scipy,
)
from jaxlab.scaling.laws import BESIROGLU_2024, HOFFMANN_2022
from jaxlab.scaling.multistart import huber, minimize_multistart

N_POINTS = 240  # one data shape for every test: XLA programs are compiled once


def _data(law, noise, seed=0):
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(3e7), np.log(2e10), N_POINTS))
    D = np.exp(rng.uniform(np.log(1e9), np.log(2e12), N_POINTS))
    L = law.predict(N, D) * np.exp(noise * rng.standard_normal(N_POINTS))
    return N, D, L


def _rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def test_multistart_solves_rosenbrock_from_every_start():
    starts = np.array([[-1.2, 1.0], [2.0, 2.0], [0.0, 0.0], [-2.0, 3.0], [1.5, -1.0]])
    res = minimize_multistart(_rosenbrock, starts)
    assert res.converged_S.all()
    np.testing.assert_allclose(res.params_SxP, 1.0, atol=1e-6)
    assert res.best_value < 1e-12


def test_huber_matches_scipy():
    r = np.linspace(-0.01, 0.01, 41)
    np.testing.assert_allclose(np.asarray(huber(r, 1e-3)), scipy.special.huber(1e-3, r), rtol=1e-6,
                               atol=1e-12)


def test_grid_is_besiroglus_4500_starts():
    g = besiroglu_grid()
    assert g.shape == (4500, 5)
    assert set(np.unique(g[:, 0])) == {0.0, 5.0, 10.0, 15.0, 20.0, 25.0}
    assert set(np.unique(g[:, 2])) == {-1.0, -0.5, 0.0, 0.5, 1.0}
    assert set(np.unique(g[:, 3])) == {0.0, 0.5, 1.0, 1.5, 2.0}
    assert len(np.unique(g, axis=0)) == 4500


def test_noiseless_recovery_with_full_grid():
    N, D, L = _data(BESIROGLU_2024, 0.0)
    fit = fit_chinchilla(N, D, L)
    assert fit.n_starts == 4500
    assert fit.objective < 1e-18
    for k in ("E", "A", "B", "alpha", "beta"):
        assert getattr(fit.law, k) == pytest.approx(getattr(BESIROGLU_2024, k), rel=1e-5), k


def test_noisy_recovery_within_stated_tolerance():
    # 1% multiplicative noise on 240 points: exponents within 0.02, E within 3%, and the
    # compute-optimal N* at 1e22 FLOPs within 15%.
    N, D, L = _data(HOFFMANN_2022, 0.01, seed=1)
    law = fit_chinchilla(N, D, L).law
    assert law.alpha == pytest.approx(HOFFMANN_2022.alpha, abs=0.02)
    assert law.beta == pytest.approx(HOFFMANN_2022.beta, abs=0.02)
    assert law.E == pytest.approx(HOFFMANN_2022.E, rel=0.03)
    n_fit, _ = law.compute_optimal(1e22)
    n_true, _ = HOFFMANN_2022.compute_optimal(1e22)
    assert n_fit == pytest.approx(n_true, rel=0.15)


def test_same_optimum_as_scipy_lbfgsb_noiseless():
    N, D, L = _data(BESIROGLU_2024, 0.0)
    starts = besiroglu_grid()[::150]  # 30 starts keep the scipy loop short
    ours = fit_chinchilla(N, D, L, starts_SxP=starts)
    ref = fit_chinchilla_scipy(N, D, L, starts_SxP=starts)
    # The optimum is an exact fit (objective 0): both must get there, to the same point.
    assert ours.objective < 1e-16 and ref.objective < 1e-16
    np.testing.assert_allclose(ours.theta, ref.theta, rtol=1e-6, atol=1e-7)


def test_same_optimum_as_scipy_lbfgsb_noisy():
    N, D, L = _data(BESIROGLU_2024, 0.01, seed=2)
    starts = besiroglu_grid()[::150]
    ours = fit_chinchilla(N, D, L, starts_SxP=starts)
    ref = fit_chinchilla_scipy(N, D, L, starts_SxP=starts)
    assert ours.objective == pytest.approx(ref.objective, rel=1e-8)
    np.testing.assert_allclose(ours.theta, ref.theta, rtol=1e-4)


@pytest.mark.slow  # ~7 s on the loaded 2-core machine (compiles the batched-weights solver)
def test_bootstrap_intervals_cover_truth():
    N, D, L = _data(HOFFMANN_2022, 0.01, seed=1)
    boot = bootstrap_chinchilla(N, D, L, n_boot=32, seed=0, level=0.95)
    assert boot["samples"].shape == (32, 5)
    for k in ("alpha", "beta", "E"):
        lo, hi = boot["intervals"][k]
        assert lo < hi
        assert lo - 0.01 <= getattr(HOFFMANN_2022, k) <= hi + 0.01, (k, lo, hi)


def test_average_param_law_fit_recovers_constants():
    N, D, L = _data(HOFFMANN_2022, 0.0, seed=3)
    law = fit_average_param_law(N, D, L, starts_SxP=besiroglu_grid()[::15])
    assert law.law.alpha == pytest.approx(HOFFMANN_2022.alpha, rel=1e-4)


@pytest.mark.parametrize("change,match", [
    (lambda N, D, L: (N[:5], D[:5], L[:5]), "at least 6 data points, got 5"),
    (lambda N, D, L: (N, D, np.where(np.arange(len(L)) == 7, np.nan, L)), "loss has 1 non-finite"),
    (lambda N, D, L: (np.where(np.arange(len(N)) == 3, 0.0, N), D, L), "N must be > 0"),
    (lambda N, D, L: (N, -D, L), "D must be > 0"),
    (lambda N, D, L: (N[:-1], D, L), "same length"),
])
def test_bad_input_is_a_clear_error(change, match):
    N, D, L = _data(HOFFMANN_2022, 0.0)
    with pytest.raises(ValueError, match=match):
        fit_chinchilla(*change(N, D, L))
