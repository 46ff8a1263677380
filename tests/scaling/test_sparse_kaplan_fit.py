"""Frantar's sparse law and Kaplan's law: recovery of known constants from synthetic data."""
import itertools

import numpy as np
import pytest

from jaxlab.scaling.kaplan_fit import fit_kaplan
from jaxlab.scaling.laws import KAPLAN_2020
from jaxlab.scaling.sparse_law import FRANTAR_T5, fit_frantar, frantar_starts


def _t5_grid():
    rows = list(itertools.product([0.0, 0.5, 0.75, 0.875], np.geomspace(1e6, 1e9, 5),
                                  np.geomspace(1e4, 1e6, 4)))
    S, N, D = (np.array(c) for c in zip(*rows))
    return S, N, D


def test_frantar_fit_recovers_t5_constants():
    S, N, D = _t5_grid()
    L = FRANTAR_T5.predict(S, N, D)
    fit = fit_frantar(S, N, D, L, starts_SxP=frantar_starts(128, seed=0))
    assert fit.objective < 1e-14
    for k in FRANTAR_T5.param_names:
        assert getattr(fit.law, k) == pytest.approx(getattr(FRANTAR_T5, k), rel=2e-3), k
    np.testing.assert_allclose(fit.law.capacity_multiplier([0.5, 0.75]),
                               FRANTAR_T5.capacity_multiplier([0.5, 0.75]), rtol=1e-3)


def test_frantar_fit_needs_several_sparsities():
    S, N, D = _t5_grid()
    m = S == 0
    with pytest.raises(ValueError, match="2 distinct sparsities"):
        fit_frantar(S[m], N[m], D[m], FRANTAR_T5.predict(S[m], N[m], D[m]))


def test_kaplan_fit_recovers_constants():
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(1e6), np.log(1e10), 60))
    D = np.exp(rng.uniform(np.log(1e8), np.log(1e12), 60))
    fit = fit_kaplan(N, D, KAPLAN_2020.predict(N, D))
    assert fit.law.alpha_N == pytest.approx(KAPLAN_2020.alpha_N, rel=1e-4)
    assert fit.law.alpha_D == pytest.approx(KAPLAN_2020.alpha_D, rel=1e-4)
    assert fit.law.N_c == pytest.approx(KAPLAN_2020.N_c, rel=1e-3)
    assert fit.law.D_c == pytest.approx(KAPLAN_2020.D_c, rel=1e-3)


def test_frantar_fit_with_huber_on_linear_loss_recovers_t5_constants():
    S, N, D = _t5_grid()
    fit = fit_frantar(S, N, D, FRANTAR_T5.predict(S, N, D), residuals="linear",
                      starts_SxP=frantar_starts(128, seed=0))
    for k in FRANTAR_T5.param_names:
        assert getattr(fit, k) == pytest.approx(getattr(FRANTAR_T5, k), rel=2e-3), k
    with pytest.raises(ValueError, match="residuals='l1'"):
        fit_frantar(S, N, D, FRANTAR_T5.predict(S, N, D), residuals="l1")


def test_sparse_report_fits_in_non_zero_parameters(tmp_path, monkeypatch):
    """The report's sparse fit uses each run's non-zero non-embedding count (the law's N),
    not its dense size: on runs generated from the T5 constants it recovers them."""
    import json

    import pandas as pd

    from jaxlab.scaling import sparse_law
    from jaxlab.scaling.report import write_fit_report

    monkeypatch.setattr(sparse_law, "frantar_starts", lambda: frantar_starts(128, seed=0))
    S, N_nz, D = _t5_grid()
    df = pd.DataFrame({"sparsity": S, "N": N_nz / (1 - S), "nonzero_N": N_nz, "D": D,
                       "C": 6 * N_nz * D, "final_val_loss": FRANTAR_T5.predict(S, N_nz, D)})
    out = write_fit_report(df, "sparse", tmp_path)
    fit = json.loads(open(out["json"]).read())["fit"]
    for k in ("b_S", "a_S", "b_N", "c"):
        assert fit[k] == pytest.approx(getattr(FRANTAR_T5, k), rel=1e-2), k
    with pytest.raises(ValueError, match="non-zero non-embedding parameters"):
        write_fit_report(df.drop(columns=["nonzero_N"]), "sparse", tmp_path / "x")
