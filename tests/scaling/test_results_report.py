"""Run-directory loading, fit reports and the CLI."""
import json
import os

import numpy as np
import pytest

from jaxlab.scaling.__main__ import main
from jaxlab.scaling.laws import SaturatingPowerLaw
from jaxlab.scaling.report import markdown_table, optimizer_comparison, write_fit_report
from jaxlab.scaling.results import load_metrics, load_runs, summaries_to_frame


def _write_run(root, name, status="done", **extra):
    d = os.path.join(root, name)
    os.makedirs(d)
    summary = {"status": status, "final_train_loss": 3.1, "final_val_loss": 3.2,
               "tokens_seen": 1e7, "params_total": 2e6, "params_non_embedding": 1e6,
               "train_flops": 6e13, "batch_tokens": 8192, "steps": 1220, "wall_time_s": 60.0}
    summary.update(extra)
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump(summary, f)
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        f.write('{"step": 0, "tokens": 0, "train_loss": 5.5}\n')
        f.write('{"step": 10, "tokens": 81920, "train_loss": 4.0, "val_loss": 4.1}\n')
        f.write('{"step": 20, "tokens": 16')  # killed mid-write
    return d


def test_load_runs_tolerates_missing_keys_and_reports_diverged(tmp_path):
    _write_run(tmp_path, "a", optimizer="muon", lr=0.02, weight_decay=0.1)
    _write_run(tmp_path, "b")  # no optional keys
    _write_run(tmp_path, "c", status="diverged", final_val_loss=None)
    df = load_runs([tmp_path])
    assert len(df) == 2
    assert df.attrs["excluded"] == [(os.path.join(tmp_path, "c"), "diverged")]
    a = df.set_index("optimizer", drop=False).loc["muon"]
    assert a["N"] == 1e6 and a["D"] == 1e7 and a["C"] == 6e13 and a["TPP"] == 10.0
    assert a["tau"] == pytest.approx(8192 / (0.02 * 0.1 * 1e7))
    b = df[df["optimizer"].isna()].iloc[0]
    assert np.isnan(b["lr"]) and np.isnan(b["sparsity"]) and np.isnan(b["tau"])
    both = load_runs([tmp_path], include_status=("done", "diverged"))
    assert len(both) == 3 and np.isnan(both["final_val_loss"]).sum() == 1


def test_load_runs_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no summary.json"):
        load_runs([tmp_path])
    with pytest.raises(ValueError, match="unknown status"):
        summaries_to_frame([], include_status=("finished",))
    with pytest.raises(ValueError, match="status 'ok' is not one of"):
        summaries_to_frame([{"status": "ok"}])


def test_load_metrics_skips_truncated_last_line(tmp_path):
    m = load_metrics(_write_run(tmp_path, "a"))
    assert list(m["step"]) == [0, 10]
    assert np.isnan(m["val_loss"][0]) and m["val_loss"][1] == 4.1


def _optimizer_runs(tmp_path, k=1.9, n=4):
    a = SaturatingPowerLaw(0.0, 8.0, 0.06)
    C = np.geomspace(1e13, 1e15, n)
    for opt, mult in (("adamw", 1.0), ("muon", k)):
        for i, c in enumerate(C):
            _write_run(tmp_path, f"{opt}{i}", optimizer=opt, train_flops=c,
                       final_val_loss=float(a.predict(mult * c)))
    _write_run(tmp_path, "bad", status="diverged", optimizer="muon")
    return a, C


def test_optimizer_comparison_with_four_runs_each(tmp_path):
    _optimizer_runs(tmp_path)
    cmp = optimizer_comparison(load_runs([tmp_path]))
    assert cmp["ratios"]["muon"] == pytest.approx(1 / 1.9, rel=1e-6)
    assert cmp["ratios"]["adamw"] == pytest.approx(1.0)
    assert any("only 4 points" in n for n in cmp["notes"])


def test_cli_power_law_report(tmp_path, capsys):
    _optimizer_runs(tmp_path / "runs")
    out = tmp_path / "fit"
    assert main(["fit", "--runs", str(tmp_path / "runs"), "--law", "power-law", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["compute_ratio_vs_adamw"]["muon"] == pytest.approx(1 / 1.9, rel=1e-6)
    assert rep["excluded_runs"][0][1] == "diverged"
    assert {os.path.basename(p) for p in rep["plots"]} == {"power_law.png", "power_law.svg"}
    for p in rep["plots"]:
        assert os.path.getsize(p) > 1000
    md = (out / "report.md").read_text()
    assert "| law |" in md and "pure power law" in md and "diverged" in md
    assert "Compute ratio" in capsys.readouterr().out


def test_chinchilla_report_from_table(tmp_path):
    import pandas as pd

    from jaxlab.scaling.laws import BESIROGLU_2024
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(3e7), np.log(2e10), 240))
    D = np.exp(rng.uniform(np.log(1e9), np.log(2e12), 240))
    df = pd.DataFrame({"N": N, "D": D, "final_val_loss": BESIROGLU_2024.predict(N, D)})
    paths = write_fit_report(df, "chinchilla", tmp_path)
    with open(paths["json"]) as f:
        rep = json.load(f)
    assert rep["fit"]["alpha"] == pytest.approx(BESIROGLU_2024.alpha, rel=1e-5)
    assert rep["fit"]["n_starts"] == 4500
    assert all(os.path.exists(p) for p in paths["plots"])


def test_markdown_table():
    assert markdown_table([{"a": 1.23456, "b": "x"}]) == "| a | b |\n|---|---|\n| 1.235 | x |\n"
