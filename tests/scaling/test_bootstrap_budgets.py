"""Bootstrap intervals of every law, isoFLOP budgets grouped by the sweep's labels, CSV
input, and ``fit.E``-style access to fitted constants."""

import json

import numpy as np
import pandas as pd
import pytest

from jaxlab.scaling.__main__ import main as scaling_main
from jaxlab.scaling.bootstrap import bootstrap_fit
from jaxlab.scaling.chinchilla_fit import fit_chinchilla
from jaxlab.scaling.laws import HOFFMANN_2022 as H
from jaxlab.scaling.report import fit_constants, write_fit_report
from jaxlab.scaling.results import load_csv

BUDGETS = (1e18, 1e19, 1e20)


def isoflop_runs(jitter: float = 0.004, noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """5 model sizes per budget around the Chinchilla optimum; each run's C is off its
    budget by up to +-jitter (a trainer counting attention and logits), as in real sweeps."""
    rng = np.random.default_rng(seed)
    rows = []
    for b in BUDGETS:
        n_opt = H.compute_optimal(b)[0]
        for i, n in enumerate(n_opt * np.geomspace(0.25, 4, 5)):
            d = b / (6 * n)
            c = b * (1 + jitter * (-1) ** i)
            rows.append({"run": f"{b:g}/{i}", "N": n, "D": d, "C": c, "label.budget": f"{b:g}",
                         "final_val_loss": float(H.predict(n, d)) + noise * rng.standard_normal()})
    return pd.DataFrame(rows)


def test_budget_labels_group_runs_whose_C_jitters(tmp_path):
    df = isoflop_runs()
    with pytest.raises(ValueError, match="needs at least 3"):
        write_fit_report(df, "isoflop", tmp_path / "by_C")  # C to 3 digits splits budgets
    out = write_fit_report(df, "isoflop", tmp_path / "by_label", budget_key="label.budget",
                           n_boot=50)
    report = json.loads(open(out["json"]).read())
    assert [b["label"] for b in report["fit"]["budgets"]] == [f"{b:g}" for b in BUDGETS]
    a_true = H.beta / (H.alpha + H.beta)
    assert report["fit"]["N_opt"]["a"] == pytest.approx(a_true, abs=0.01)
    # noise-free runs: every resample refits to nearly the same exponent
    lo, hi = report["bootstrap"]["N_opt.a"]["0.95"]
    assert lo <= report["fit"]["N_opt"]["a"] + 1e-9 and hi >= report["fit"]["N_opt"]["a"] - 1e-9
    assert hi - lo < 0.02
    assert report["bootstrap_ok"] == 50
    md = open(out["markdown"]).read()
    assert "68% lo" in md and "95% hi" in md and "within groups of `label.budget`" in md
    with pytest.raises(ValueError, match="budget key 'label.nope' is not a column"):
        write_fit_report(df, "isoflop", tmp_path / "x", budget_key="label.nope")


def test_bootstrap_interval_covers_the_truth_under_noise():
    """With 0.01-nat noise the 95% interval of the N_opt exponent contains the noise-free
    fit's exponent, and the 68% interval sits inside the 95% one."""
    clean = fit_constants(isoflop_runs(), "isoflop", budget_key="label.budget")["N_opt.a"]
    noisy = isoflop_runs(noise=0.01, seed=3)
    fit = lambda d: fit_constants(d, "isoflop", budget_key="label.budget")  # noqa: E731
    boot = bootstrap_fit(noisy, fit, 200, group_col="label.budget", distinct=("N", 3))
    lo95, hi95 = boot["intervals"]["N_opt.a"][0.95]
    lo68, hi68 = boot["intervals"]["N_opt.a"][0.68]
    assert lo95 <= lo68 <= hi68 <= hi95
    assert lo95 < clean < hi95
    # failed refits (a resample whose parabola opens downward) are counted, not hidden
    assert boot["n_ok"] + sum(boot["failures"].values()) == 200


def test_csv_input_recovers_constants_and_fit_attributes(tmp_path):
    N = np.geomspace(1e7, 1e9, 5).repeat(4)
    D = np.tile(np.geomspace(1e9, 1e11, 4), 5)
    pd.DataFrame({"N": N, "D": D, "C": 6 * N * D, "final_val_loss": H.predict(N, D)}).to_csv(
        tmp_path / "paper.csv", index=False)
    df = load_csv(tmp_path / "paper.csv")
    assert len(df) == 20 and set(df["status"]) == {"done"} and df["TPP"][0] == D[0] / N[0]
    assert scaling_main(["fit", "--csv", str(tmp_path / "paper.csv"), "--law", "chinchilla",
                         "--out", str(tmp_path / "fit")]) == 0
    report = json.loads((tmp_path / "fit" / "report.json").read_text())
    assert report["fit"]["E"] == pytest.approx(H.E, rel=1e-3)
    fit = fit_chinchilla(N, D, H.predict(N, D))
    assert fit.E == fit.law.E and fit.alpha == pytest.approx(H.alpha, rel=1e-3)
    with pytest.raises(AttributeError, match="nor has its law ChinchillaLaw"):
        fit.gamma
    (tmp_path / "bad.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="no known columns"):
        load_csv(tmp_path / "bad.csv")


def write_run(path, n, d_final, law, points: int = 60):
    """A run directory as the trainer writes it: its train loss follows ``law`` along D."""
    path.mkdir(parents=True)
    fpt = 6.0 * n
    D = np.geomspace(d_final / 300, d_final, points)
    with open(path / "metrics.jsonl", "w") as f:
        for i, d in enumerate(D):
            f.write(json.dumps({"step": i + 1, "tokens": d, "train_loss": float(law.predict(n, d))})
                    + "\n")
    (path / "summary.json").write_text(json.dumps({
        "status": "done", "params_non_embedding": n, "params_total": n, "tokens_seen": d_final,
        "train_flops": fpt * d_final, "flops_per_token": fpt, "batch_tokens": 1.0, "steps": points,
        "final_val_loss": float(law.predict(n, d_final)),
        "final_train_loss": float(law.predict(n, d_final))}))


def test_envelope_recovers_the_compute_optimal_exponent(tmp_path):
    """Approach 1 on curves that follow the Chinchilla law: 9 sizes over 2 decades, each
    trained to 2000 tokens per parameter (past the optimum); N_opt(C) follows C^(beta / (alpha + beta))."""
    sizes = np.geomspace(1e7, 1e9, 9)
    for i, n in enumerate(sizes):
        write_run(tmp_path / "runs" / f"r{i}", n, 2000 * n, H)
    assert scaling_main(["fit", "--runs", str(tmp_path / "runs"), "--law", "envelope",
                         "--bootstrap", "5", "--out", str(tmp_path / "fit")]) == 0
    report = json.loads((tmp_path / "fit" / "report.json").read_text())
    a_true = H.beta / (H.alpha + H.beta)
    assert report["fit"]["N_opt"]["a"] == pytest.approx(a_true, abs=0.05)
    # the envelope is the lowest curve: never above any run's loss at the same C
    for p in report["fit"]["points"]:
        n = p["N_opt"]
        assert p["loss"] == pytest.approx(float(H.predict(n, p["C"] / (6 * n))), rel=1e-2)
    assert (tmp_path / "fit" / "envelope.png").stat().st_size > 10_000
    assert "95% lo" in (tmp_path / "fit" / "report.md").read_text()


def test_smooth_is_a_centred_running_mean():
    from jaxlab.scaling.envelope import smooth

    np.testing.assert_allclose(smooth([1, 2, 3, 4, 5], 3), [1.5, 2, 3, 4, 4.5])
    np.testing.assert_allclose(smooth([4, 0, 2], 1), [4, 0, 2])
