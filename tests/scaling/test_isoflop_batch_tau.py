"""IsoFLOP parabolas, McCandlish critical batch, and the tau_opt(TPP) law."""
import numpy as np
import pytest

from jaxlab.scaling.critical_batch import CriticalBatchLaw, fit_critical_batch, steps_to_target
from jaxlab.scaling.isoflop import fit_isoflop, fit_isoflop_parabola
from jaxlab.scaling.laws import HOFFMANN_2022, POWER_LINES_TAU
from jaxlab.scaling.weight_decay_fit import fit_tau_law, tau_opt_from_sweep, timescale


def _isoflop_runs(budgets, n_sizes=9, spread=2.5):
    N, C, L = [], [], []
    for c in budgets:
        n_opt, _ = HOFFMANN_2022.compute_optimal(c)
        ns = n_opt * np.geomspace(1 / spread, spread, n_sizes)
        N += list(ns)
        C += [c] * n_sizes
        L += list(HOFFMANN_2022.predict(ns, c / (6 * ns)))
    return np.array(N), np.array(C), np.array(L)


def test_isoflop_recovers_chinchilla_allocation():
    budgets = np.geomspace(1e18, 1e22, 5)
    N, C, L = _isoflop_runs(budgets)
    iso = fit_isoflop(N, C, L)
    assert len(iso.parabolas) == 5 and all(p.inside for p in iso.parabolas)
    for p in iso.parabolas:
        n_true, _ = HOFFMANN_2022.compute_optimal(p.budget)
        assert p.N_opt == pytest.approx(n_true, rel=0.03)
    a_true = HOFFMANN_2022.beta / (HOFFMANN_2022.alpha + HOFFMANN_2022.beta)
    assert iso.N_opt_law.a == pytest.approx(a_true, abs=0.01)
    assert iso.N_opt_law.a + iso.D_opt_law.a == pytest.approx(1.0, abs=1e-9)


def test_isoflop_robust_fit_ignores_an_outlier():
    N, _, L = _isoflop_runs([1e20])
    L = L.copy()
    L[2] += 0.3
    # One crashed-looking run 0.3 nats high bends the least-squares parabola upside down.
    with pytest.raises(ValueError, match="opens downward"):
        fit_isoflop_parabola(N, L, 1e20)
    robust = fit_isoflop_parabola(N, L, 1e20, robust=True, delta=1e-3)
    n_true, _ = HOFFMANN_2022.compute_optimal(1e20)
    assert robust.N_opt == pytest.approx(n_true, rel=0.05)


def test_isoflop_bad_input():
    with pytest.raises(ValueError, match="opens downward"):
        fit_isoflop_parabola([1e6, 1e7, 1e8], [2.0, 3.0, 2.0], 1e18)
    with pytest.raises(ValueError, match="at least 3 data points"):
        fit_isoflop_parabola([1e6, 1e7], [3.0, 2.9], 1e18)


def test_critical_batch_exact_and_noisy():
    true = CriticalBatchLaw(S_min=2000.0, B_crit=3e5)
    B = np.geomspace(2**14, 2**21, 8)
    fit = fit_critical_batch(B, true.steps(B))
    assert fit.S_min == pytest.approx(2000.0, rel=1e-10)
    assert fit.B_crit == pytest.approx(3e5, rel=1e-10)
    # Data-step trade-off of arXiv 1812.06162: (S/S_min - 1)(D/D_min - 1) = 1.
    S, D = true.steps(B), true.data(B)
    np.testing.assert_allclose((S / true.S_min - 1) * (D / true.D_min - 1), 1.0)
    rng = np.random.default_rng(0)
    noisy = fit_critical_batch(B, true.steps(B) * np.exp(0.01 * rng.standard_normal(8)))
    assert noisy.B_crit == pytest.approx(3e5, rel=0.1)


def test_critical_batch_rejects_steps_growing_with_batch():
    with pytest.raises(ValueError, match="must be > 0"):
        fit_critical_batch([1e3, 1e4, 1e5], [100.0, 200.0, 400.0])


def test_steps_to_target_interpolates():
    steps = np.array([0, 100, 200, 300])
    loss = np.array([5.0, 4.0, 3.0, 2.5])
    assert steps_to_target(steps, loss, 3.5) == pytest.approx(150.0)
    assert np.isnan(steps_to_target(steps, loss, 2.0))


def test_timescale_formula():
    # tau = B / (lr wd D): 65536 tokens per step, lr 1e-3, wd 0.1, 1e9 tokens.
    assert timescale(65536, 1e-3, 0.1, 1e9) == pytest.approx(65536 / (1e-3 * 0.1 * 1e9))


def test_tau_law_recovered_from_weight_decay_sweep():
    N_list, D_list, tau_list, L_list = [], [], [], []
    for N, tpp in [(1e6, 10), (1e6, 40), (4e6, 150), (4e6, 600)]:
        D = N * tpp
        t_opt = POWER_LINES_TAU.predict(tpp)
        taus = t_opt * np.geomspace(0.2, 4.0, 6)
        N_list += [N] * 6
        D_list += [D] * 6
        tau_list += list(taus)
        L_list += list(3.0 + 0.05 * np.log(taus / t_opt) ** 2)
    optima = tau_opt_from_sweep(N_list, D_list, tau_list, L_list)
    assert all(o.inside for o in optima)
    law = fit_tau_law(optima)
    assert law.k == pytest.approx(POWER_LINES_TAU.k, rel=1e-8)
    assert law.a == pytest.approx(POWER_LINES_TAU.a, rel=1e-8)


def test_tau_vertex_from_the_neighbourhood_of_the_best_run():
    """Loss that is quadratic in log tau near the optimum but climbs steeply at the
    smallest tau (a huge decay): a parabola through all 8 runs is pulled ~0.33 in log tau
    off the optimum; one through the best run and one neighbour each side is within 0.03."""
    t_opt = 0.2
    taus = t_opt * np.geomspace(1 / 16, 8, 8)

    def loss(x):  # x = log(tau / t_opt)
        return 3.0 + 0.05 * x ** 2 + 0.5 * np.exp(-3.0 * (x + 2.0))

    grid = np.linspace(-1.0, 1.0, 200_001)
    exact = grid[np.argmin(loss(grid))]  # 0.034
    N, D = [1e6] * 8, [2e7] * 8
    L = loss(np.log(taus / t_opt))
    full = tau_opt_from_sweep(N, D, taus, L)[0]
    near = tau_opt_from_sweep(N, D, taus, L, neighbours=1)[0]
    assert near.inside and full.inside
    assert abs(np.log(full.tau_opt / t_opt) - exact) > 0.3
    assert abs(np.log(near.tau_opt / t_opt) - exact) < 0.03
    with pytest.raises(ValueError, match="neighbours must be >= 1"):
        tau_opt_from_sweep(N, D, taus, L, neighbours=0)
