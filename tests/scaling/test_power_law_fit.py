"""One-variable power laws, few-point fallbacks, and compute ratios at equal loss."""
import numpy as np
import pandas as pd
import pytest

from jaxlab.scaling.laws import MOONLIGHT_ADAMW, MOONLIGHT_MUON, SaturatingPowerLaw
from jaxlab.scaling.power_law_fit import (
    fit_power_law_in_compute,
    fit_pure_power_law,
    fit_saturating_power_law,
)
from jaxlab.scaling.speedup import compute_ratio_at_equal_loss, effective_data_speedup

TRUE = SaturatingPowerLaw(E=2.0, A=3.0e3, alpha=0.25)
C8 = np.geomspace(1e14, 1e19, 8)


def test_saturating_recovery_noiseless():
    fit = fit_saturating_power_law(C8, TRUE.predict(C8))
    assert fit.law.n_free == 3 and fit.note == ""
    assert fit.law.E == pytest.approx(2.0, rel=1e-5)
    assert fit.law.A == pytest.approx(3.0e3, rel=1e-4)
    assert fit.law.alpha == pytest.approx(0.25, rel=1e-5)


def test_saturating_recovery_with_noise():
    rng = np.random.default_rng(0)
    y = TRUE.predict(C8) * np.exp(0.002 * rng.standard_normal(8))
    law = fit_saturating_power_law(C8, y).law
    assert law.alpha == pytest.approx(0.25, abs=0.05)
    assert law.E == pytest.approx(2.0, abs=0.1)
    # Predictions inside the data range stay within the noise level.
    np.testing.assert_allclose(law.predict(C8), TRUE.predict(C8), rtol=0.01)


def test_pure_power_law_is_exact_least_squares():
    x = np.geomspace(10, 1e4, 6)
    law = fit_pure_power_law(x, 1.084 * x**-0.527)
    assert law.k == pytest.approx(1.084, rel=1e-10)
    assert law.a == pytest.approx(-0.527, rel=1e-10)


def test_few_points_fall_back_to_pure_power_law_and_say_so():
    C4 = C8[::2]
    y = MOONLIGHT_MUON.predict(C4)
    fit = fit_saturating_power_law(C4, y)
    assert fit.law.n_free == 2 and fit.law.E == 0.0
    assert "only 4 points" in fit.note and "pure power law" in fit.note
    assert fit.law.A == pytest.approx(MOONLIGHT_MUON.A, rel=1e-8)
    assert fit.law.alpha == pytest.approx(MOONLIGHT_MUON.alpha, rel=1e-8)


def test_fixed_E_fit_with_three_points():
    C3 = C8[[0, 3, 7]]
    fit = fit_saturating_power_law(C3, TRUE.predict(C3), fixed_E=2.0)
    assert fit.law.n_free == 2 and "E held at 2" in fit.note
    assert fit.law.alpha == pytest.approx(0.25, rel=1e-5)
    assert fit.law.A == pytest.approx(3.0e3, rel=1e-4)


def test_too_few_points_and_bad_values_are_errors():
    with pytest.raises(ValueError, match="at least 3 data points, got 2"):
        fit_saturating_power_law(C8[:2], TRUE.predict(C8[:2]))
    with pytest.raises(ValueError, match="at least 4 data points"):
        fit_saturating_power_law(C8[:3], TRUE.predict(C8[:3]), mode="saturating")
    with pytest.raises(ValueError, match="non-finite"):
        fit_saturating_power_law(C8, np.r_[TRUE.predict(C8[:7]), np.nan])
    with pytest.raises(ValueError, match=r"fixed_E must be finite and in \[0, min y"):
        fit_saturating_power_law(C8[:3], TRUE.predict(C8[:3]), fixed_E=5.0)


def test_compute_ratio_recovers_known_multiplier_from_three_runs_each():
    # Optimizer b reaches at compute C what a reaches at k C: C_b / C_a = 1 / k at any loss.
    k = 1.9
    a = SaturatingPowerLaw(0.0, 8.0, 0.06)
    b = SaturatingPowerLaw(0.0, 8.0 * k**-0.06, 0.06)
    C3 = np.geomspace(1e15, 1e17, 3)
    df = pd.DataFrame({"optimizer": ["adamw"] * 3 + ["muon"] * 3, "C": np.r_[C3, C3],
                       "final_val_loss": np.r_[a.predict(C3), b.predict(C3)]})
    fits = {g: fit_power_law_in_compute(sub) for g, sub in df.groupby("optimizer")}
    ratio = compute_ratio_at_equal_loss(fits["muon"], fits["adamw"], 1.0 * a.predict(3e16))
    assert ratio == pytest.approx(1 / k, rel=1e-8)


def test_moonlight_published_laws_give_about_half_the_compute():
    # Moonlight reports Muon needs ~52% of AdamW's FLOPs over its range (arXiv 2502.16982).
    loss = MOONLIGHT_ADAMW.predict(1.0)
    ratio = compute_ratio_at_equal_loss(MOONLIGHT_MUON, MOONLIGHT_ADAMW, loss)
    assert 0.4 < ratio < 0.65


def test_effective_data_speedup():
    base = SaturatingPowerLaw(1.8, 400.0, 0.3, x_name="D")
    D = np.array([1e9, 4e9])
    # A run whose loss equals the baseline's at 1.5 D has speed-up 1.5.
    np.testing.assert_allclose(effective_data_speedup(base, D, base.predict(1.5 * D)), 1.5)
    with pytest.raises(ValueError, match="never reaches"):
        effective_data_speedup(base, D, [1.7, 1.7])
