"""The muon_vs_adamw study: its sweep file expands to the intended ladder, and its report
recovers a known compute ratio from a store filled with synthetic results."""

from pathlib import Path

import pytest

from jaxlab.launch.__main__ import main as launch_main
from jaxlab.launch.expand import load_plan
from jaxlab.launch.runner import register, store_of

SWEEP = Path(__file__).resolve().parents[2] / "experiments" / "muon_vs_adamw" / "sweep.gin"


@pytest.mark.parametrize("preset,models", [("smoke", ["d64", "d80", "d96", "d128"]),
                                           ("full", ["d256", "d384", "d512"])])
def test_study_sweep_expands_to_the_ladder(tmp_path, preset, models):
    plan = load_plan(SWEEP, preset, tmp_path)
    assert [dict(r.labels) for r in plan.runs] == [
        {"model": m, "optimizer": o} for m in models for o in ("adamw", "muon")]
    tpp = 5 if preset == "smoke" else 20
    for r in plan.runs:
        b = dict(r.bindings)
        n, batch = r.figure("params_non_embedding"), r.figure("batch_tokens")
        assert r.figure("steps") == -(-tpp * n // batch)  # ceil
        assert b["adamw.weight_decay"] == b["muon.weight_decay"] == b["muon.adam_weight_decay"]
        assert b["build_optimizer.optimizer"] == repr(dict(r.labels)["optimizer"])
    assert plan.sweep_dir == tmp_path / f"muon_vs_adamw-{preset}"


def test_report_recovers_a_known_compute_ratio(tmp_path, capsys):
    """Losses on exact power laws with Muon needing half the compute: ratio 0.5."""
    plan = load_plan(SWEEP, "smoke", tmp_path)
    store = store_of(plan)
    register(plan, store)
    for r in plan.runs:
        arm = dict(r.labels)["optimizer"]
        c = r.figure("train_flops")
        loss = 30.0 * (c * (2.0 if arm == "muon" else 1.0)) ** -0.1
        store.finish(r.run_id, "done", {
            "status": "done", "optimizer": arm, "final_val_loss": loss, "train_flops": c,
            "params_non_embedding": r.figure("params_non_embedding"),
            "tokens_seen": r.figure("tokens"), "batch_tokens": r.figure("batch_tokens"),
            "steps": r.figure("steps"), "lr": 3e-3, "wall_time_s": 1.0})
    args = ["report", "--sweep", str(SWEEP), "--preset", "smoke", "--root", str(tmp_path)]
    assert launch_main(args) == 0
    out = capsys.readouterr().out
    assert "compute ratio Muon/AdamW at equal loss" in out and ": 0.500" in out
    report = (plan.sweep_dir / "report.md").read_text()
    assert "**0.500x**" in report and "| L(C) adamw | 0 | 30 | 0.1 |" in report
    assert (plan.sweep_dir / "loss_vs_compute.png").stat().st_size > 10_000
    assert f"plot:   {plan.sweep_dir.resolve() / 'loss_vs_compute.png'}" in out


def test_runs_frame_points_into_the_sweep_folder_wherever_it_was_launched(tmp_path,
                                                                           monkeypatch):
    """A store written by a launcher in another directory (relative run_dirs) or on another
    machine: the report's rows point at the run folders as found now."""
    from jaxlab.launch.report import runs_frame

    monkeypatch.chdir(tmp_path)
    plan = load_plan(SWEEP, "smoke", Path("sweeps"))     # relative, as a launcher records
    register(plan, store_of(plan))
    moved = tmp_path / "elsewhere"
    (tmp_path / "sweeps").rename(moved)
    monkeypatch.chdir(moved.parent.parent)
    plan = load_plan(SWEEP, "smoke", moved)
    df = runs_frame(plan)
    assert len(df) == len(plan.runs)
    assert all(Path(d).parent == plan.sweep_dir for d in df["run_dir"])
    assert all(Path(d).name == n for d, n in zip(df["run_dir"], df["name"]))
