"""The trasmuon_stability study: its presets expand to the intended grids, and its report
recovers known basin widths, convergence speeds and diverged runs from a store filled
with synthetic results (the tiny preset runs for real in tests/colab)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from jaxlab.launch.__main__ import main as launch_main
from jaxlab.launch.expand import load_plan
from jaxlab.launch.runner import register, store_of

SWEEP = (Path(__file__).resolve().parents[2] / "experiments" / "trasmuon_stability"
         / "sweep_lm.gin")
ARMS = ["adamw", "muon", "trasmuon", "trasmuon_noclip"]


@pytest.mark.parametrize("preset,n_lr,warmups,seeds,model", [
    ("tiny", 2, {"w0"}, 1, "d32"),           # the test suite's: no warmup arm
    ("smoke", 7, {"w0", "w5"}, 1, "d64"),
    ("cpu", 7, {"w0", "w5"}, 1, "d128"),
    (None, 9, {"w0", "w5"}, 2, "d512")])
def test_presets_expand_to_the_grid(tmp_path, preset, n_lr, warmups, seeds, model):
    plan = load_plan(SWEEP, preset, tmp_path)
    assert len(plan.runs) == 4 * n_lr * len(warmups) * seeds
    labels = [dict(r.labels) for r in plan.runs]
    assert {x["arm"] for x in labels} == set(ARMS)
    assert {x["warmup"] for x in labels} == warmups
    assert {x["model"] for x in labels} == {model}
    lrs = sorted({dict(r.bindings)["build_optimizer.learning_rate"] for r in plan.runs},
                 key=float)
    assert len(lrs) == n_lr
    if n_lr >= 7:   # the issue asks for >= 7 lrs over 2 decades
        assert float(lrs[-1]) / float(lrs[0]) == pytest.approx(100.0)
    noclip = [r for r in plan.runs if dict(r.labels)["arm"] == "trasmuon_noclip"]
    assert all(dict(r.bindings)["trasmuon.alpha"] == "0.0" for r in noclip)
    assert all(dict(r.bindings)["build_optimizer.optimizer"] == "'trasmuon'" for r in noclip)


# V-shaped loss in log10(lr) around lr 1e-2 (a grid point of the cpu preset): the basin's
# half-width is 0.05 / slope decades exactly (piecewise-linear interpolation).
SLOPE = {"adamw": 0.2, "muon": 0.2, "trasmuon": 0.1, "trasmuon_noclip": 0.2}
BEST = {"adamw": 1.60, "muon": 1.55, "trasmuon": 1.52, "trasmuon_noclip": 1.56}
TAU = {"adamw": 120.0, "muon": 100.0, "trasmuon": 60.0, "trasmuon_noclip": 100.0}


def test_report_recovers_known_basins_convergence_and_divergence(tmp_path, capsys):
    plan = load_plan(SWEEP, "cpu", tmp_path)
    store = store_of(plan)
    register(plan, store)
    for r in plan.runs:
        lab = dict(r.labels)
        arm, lr = lab["arm"], float(dict(r.bindings)["build_optimizer.learning_rate"])
        final = BEST[arm] + SLOPE[arm] * abs(math.log10(lr) + 2)
        run_dir = plan.run_dir(r)
        run_dir.mkdir(parents=True)
        if arm == "adamw" and lr == 1e-1 and lab["warmup"] == "w0":
            store.finish(r.run_id, "diverged", {"status": "diverged", "lr": lr,
                                                 "final_val_loss": None, "diverged_step": 50})
            continue
        steps = np.arange(10, 610, 10)
        loss = final + (5.5 - final) * np.exp(-steps / TAU[arm])
        (run_dir / "metrics.jsonl").write_text("".join(
            json.dumps({"step": int(s), "train_loss": float(v)}) + "\n"
            for s, v in zip(steps, loss)))
        store.finish(r.run_id, "done", {"status": "done", "lr": lr, "final_val_loss": final,
                                        "model": {"vocab_size": 256}, "wall_time_s": 1.0})
    args = ["report", "--sweep", str(SWEEP), "--preset", "cpu", "--root", str(tmp_path)]
    assert launch_main(args) == 0
    out = capsys.readouterr().out
    result = json.loads((plan.sweep_dir / "report.json").read_text())
    for w in ("w0", "w5"):
        for arm in ARMS:
            b = result["basins"][f"{w}/{arm}"]
            assert b["best_lr"] == pytest.approx(1e-2)
            assert b["width_decades"] == pytest.approx(2 * 0.05 / SLOPE[arm])
            assert not (b["open_lo"] or b["open_hi"])
        # target: the highest best-lr final train loss, AdamW's curve at its last step
        conv = result["convergence"][w]
        assert conv["target"] == pytest.approx(1.60 + (5.5 - 1.60) * np.exp(-600 / 120))
        assert conv["steps"]["trasmuon"] < conv["steps"]["muon"] < conv["steps"]["adamw"]
    rows = {(x["warmup"], x["arm"]): x for x in result["table"]}
    assert rows[("no warmup", "adamw")]["diverged (NaN)"] == 1   # lr 0.1 (one seed in cpu)
    assert rows[("5% warmup", "adamw")]["diverged (NaN)"] == 0
    report = (plan.sweep_dir / "report.md").read_text()
    assert "Faster convergence (no warmup): held" in report
    assert "Wider stable basin without warmup: held" in report
    assert "TrasMuon 1.00 decades" in report and "muon 0.50 decades" in report
    assert "Wider stable basin without warmup: held" in out
    for name in ("loss_vs_lr.png", "loss_curves.png"):
        assert (plan.sweep_dir / name).stat().st_size > 10_000


def test_vision_report_judges_by_accuracy(tmp_path):
    """Classification runs (summaries with final_val_accuracy): basins within 1 accuracy
    point; V-shaped accuracy around lr 4.64e-3 (a grid point of the vision cpu preset)."""
    sweep = SWEEP.with_name("sweep_vision.gin")
    plan = load_plan(sweep, "cpu", tmp_path)
    store = store_of(plan)
    register(plan, store)
    drop = {"adamw": 0.04, "muon": 0.04, "trasmuon": 0.02, "trasmuon_noclip": 0.04}  # per decade
    for r in plan.runs:
        arm = dict(r.labels)["arm"]
        lr = float(dict(r.bindings)["build_optimizer.learning_rate"])
        acc = 0.97 - drop[arm] * abs(math.log10(lr) - math.log10(4.64e-3))
        run_dir = plan.run_dir(r)
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "train_loss": 2.3 * math.exp(-s / 100)}) + "\n"
            for s in range(10, 610, 10)))
        store.finish(r.run_id, "done", {"status": "done", "lr": lr, "final_val_loss": 0.1,
                                        "final_val_accuracy": acc,
                                        "model": {"num_classes": 10}, "wall_time_s": 1.0})
    assert launch_main(["report", "--sweep", str(sweep), "--preset", "cpu",
                        "--root", str(tmp_path)]) == 0
    result = json.loads((plan.sweep_dir / "report.json").read_text())
    assert result["metric"] == "final validation accuracy"
    for arm, d in drop.items():
        b = result["basins"][f"w0/{arm}"]
        assert b["best_value"] == pytest.approx(0.97)
        assert b["width_decades"] == pytest.approx(2 * 0.01 / d)
    report = (plan.sweep_dir / "report.md").read_text()
    assert "within 1 accuracy point" in report and "Wider stable basin without warmup: held" in report
