"""The vit_digits compute-ladder sweep end to end: the tiny preset trains for real through
the launcher (4 runs of 120 steps), and its report gives accuracy and loss against
compute per optimizer."""

import json
from pathlib import Path

import gin

from jaxlab.launch.__main__ import main as launch_main

SWEEP = Path(__file__).resolve().parents[2] / "experiments" / "vit_digits" / "sweep.gin"


def test_tiny_sweep_and_report(tmp_path):
    gin.clear_config()
    args = ["--sweep", str(SWEEP), "--preset", "tiny", "--root", str(tmp_path)]
    assert launch_main([*args, "--report"]) == 0
    sweep_dir = tmp_path / "vit_digits-tiny"
    result = json.loads((sweep_dir / "report.json").read_text())
    assert result["runs"] == result["done"] == 4
    assert set(result["best"]) == {"adamw", "muon"}
    by = {(r["model"], r["optimizer"]): r for r in result["table"]}
    for opt in ("adamw", "muon"):
        small, big = by[("d16", opt)], by[("d32", opt)]
        assert small["C (FLOPs)"] < big["C (FLOPs)"]
        # 120 steps of 32 images: well past chance (loss ln 10 = 2.30, accuracy 10%)
        assert big["val loss"] < 2.10 and big["val acc (%)"] > 25.0, big
    for name in ("accuracy_vs_compute.png", "loss_vs_compute.png"):
        assert (sweep_dir / name).stat().st_size > 10_000
    report = (sweep_dir / "report.md").read_text()
    assert "adamw: best accuracy" in report and "muon: best accuracy" in report
