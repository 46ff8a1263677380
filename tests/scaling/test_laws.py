"""Laws as data: closed forms, published constants, readable output, bad input."""
import numpy as np
import pytest

from jaxlab.scaling.laws import (
    BESIROGLU_2024,
    HOFFMANN_2022,
    KAPLAN_2020,
    POWER_LINES_TAU,
    AverageParamLaw,
    SaturatingPowerLaw,
    numeric_compute_optimal,
)
from jaxlab.scaling.sparse_law import FRANTAR_T5, FRANTAR_VIT


@pytest.mark.parametrize("law", [HOFFMANN_2022, BESIROGLU_2024])
@pytest.mark.parametrize("C", [1e18, 5.76e23])
def test_chinchilla_compute_optimal_matches_numeric_minimum(law, C):
    n, d = law.compute_optimal(C)
    assert np.isclose(6 * n * d, C, rtol=1e-12)
    n_num, d_num = numeric_compute_optimal(law.predict, C)
    assert np.isclose(n, n_num, rtol=1e-5)
    assert np.isclose(d, d_num, rtol=1e-5)
    # The closed form is a minimum along the isoFLOP line.
    for k in (0.9, 1.1):
        assert law.predict(n * k, d / k) > law.predict(n, d)


def test_chinchilla_allocation_exponents():
    c = np.array([1e20, 1e22])
    n, d = BESIROGLU_2024.compute_optimal(c)
    a = np.log(n[1] / n[0]) / np.log(100)
    b = np.log(d[1] / d[0]) / np.log(100)
    law = BESIROGLU_2024
    assert np.isclose(a, law.beta / (law.alpha + law.beta), rtol=1e-10)
    assert np.isclose(a + b, 1.0, rtol=1e-10)
    # Besiroglu's refit gives roughly 20 tokens per parameter at Chinchilla's budget.
    assert 15 < law.tokens_per_param_optimal(5.76e23) < 35


def test_kaplan_compute_optimal_matches_numeric_minimum():
    for C in (1e18, 1e21):
        n, d = KAPLAN_2020.compute_optimal(C)
        n_num, _ = numeric_compute_optimal(KAPLAN_2020.predict, C)
        assert np.isclose(n, n_num, rtol=1e-5)
        assert np.isclose(6 * n * d, C)


def test_frantar_t5_capacity_multipliers():
    m = FRANTAR_T5.capacity_multiplier([0.0, 0.5, 0.75])
    assert m[0] == pytest.approx(1.0)
    assert m[1] == pytest.approx(1.6, abs=0.05)
    assert m[2] == pytest.approx(2.2, abs=0.07)
    # Definition: the dense model with m x the non-zeros has the same loss.
    N, D = 1e8, 1e5
    for s, mult in zip((0.5, 0.75), m[1:]):
        assert FRANTAR_T5.predict(s, N, D) == pytest.approx(FRANTAR_T5.predict(0.0, mult * N, D),
                                                            rel=1e-12)


@pytest.mark.parametrize("law,unit", [(FRANTAR_T5, 6 * 65536), (FRANTAR_VIT, 6.0)])
def test_optimal_sparsity_increases_with_compute(law, unit):
    N = 1e8 if law is FRANTAR_T5 else 3e7
    budgets = np.geomspace(1e19, 1e25, 7) if law is FRANTAR_T5 else np.geomspace(1e17, 1e22, 7)
    s = np.array([law.optimal_sparsity(N, c, unit) for c in budgets])
    assert np.all(np.diff(s) >= -1e-6)
    assert s[-1] > s[0] + 0.2
    # Each is a minimum of the loss over sparsity at that compute.
    c = budgets[3]
    s3 = s[3]
    if 0.01 < s3 < 0.99:
        for ds in (-0.01, 0.01):
            assert law.loss_at_compute(s3 + ds, N, c, unit) >= law.loss_at_compute(s3, N, c, unit)


def test_optimal_sparsity_grid_matches_the_scalar_search():
    N = np.array([1e7, 1e8, 1e9])[:, None]
    C = np.geomspace(1e19, 1e24, 6)[None, :] * 65536
    grid = FRANTAR_T5.optimal_sparsity_grid(N, C, 6 * 65536, s_max=0.999, n_grid=1000)
    scalar = np.array([[FRANTAR_T5.optimal_sparsity(n, c, 6 * 65536) for c in C[0]]
                       for n in N[:, 0]])
    assert grid.shape == (3, 6)
    np.testing.assert_allclose(grid, scalar, atol=0.999 / 999 + 1e-9)


def test_power_lines_tau_worked_values():
    assert POWER_LINES_TAU.predict(20) == pytest.approx(0.224, abs=0.002)
    assert POWER_LINES_TAU.predict(100) == pytest.approx(0.096, abs=0.002)
    assert POWER_LINES_TAU.predict(1000) == pytest.approx(0.028, abs=0.001)


def test_saturating_power_law_inverse_and_floor():
    law = SaturatingPowerLaw(E=2.0, A=50.0, alpha=0.2)
    x = np.array([1e3, 1e9])
    assert np.allclose(law.x_at(law.predict(x)), x, rtol=1e-10)
    with pytest.raises(ValueError, match="floor E=2"):
        law.x_at(1.9)


def test_average_param_law_uses_mean_nonzero_count():
    law = AverageParamLaw(HOFFMANN_2022)
    trace = np.linspace(1e8, 2.5e7, 1000)
    assert law.n_bar(trace) == pytest.approx(trace.mean())
    assert law.predict(6.25e7, 1e10) == pytest.approx(HOFFMANN_2022.predict(6.25e7, 1e10))
    assert "N_bar^" in repr(law)


def test_repr_and_table_rows_are_readable():
    assert repr(HOFFMANN_2022) == "ChinchillaLaw[hoffmann2022]: L = 1.69 + 406.4 / N^0.34 + 410.7 / D^0.28"
    row = BESIROGLU_2024.table_row()
    assert row == {"law": "besiroglu2024", "E": 1.8172, "A": 482.01, "B": 2085.43,
                   "alpha": 0.3478, "beta": 0.3658}
    assert "a_S" in FRANTAR_T5.table_row() and "frantar_t5" in repr(FRANTAR_T5)


@pytest.mark.parametrize("N,D,match", [
    (0.0, 1e9, "N must be > 0"),
    (-5.0, 1e9, "N must be > 0"),
    (1e8, np.nan, "D has 1 non-finite"),
])
def test_bad_inputs_raise_clear_errors(N, D, match):
    with pytest.raises(ValueError, match=match):
        HOFFMANN_2022.predict(N, D)


def test_sparsity_out_of_range_is_rejected():
    with pytest.raises(ValueError, match=r"sparsity must lie in \[0, 1\)"):
        FRANTAR_T5.predict(1.0, 1e8, 1e5)
