"""Every notebook under colab/ runs top to bottom (code cells executed in one namespace).

A study's notebook loads a finished sweep from ``$JAXLAB_SWEEP_DIR``: the test launches
that study's ``tiny`` preset first (the whole pipeline: sweep, training, store, report)
and checks what the notebook wrote next to the sweep.
"""

import json
from pathlib import Path

import gin
import matplotlib
import pytest

from jaxlab.launch.__main__ import main as launch_main

ROOT = Path(__file__).parents[2]
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
# notebook -> (sweep file, preset, sweep folder name, files the report must write)
STUDIES = {
    "trasmuon_stability.ipynb": (
        ROOT / "experiments" / "trasmuon_stability" / "sweep_lm.gin", "tiny",
        "trasmuon_stability_lm-tiny",
        ("report.md", "report.json", "loss_vs_lr.png", "loss_vs_lr.svg", "loss_curves.png",
         "trasmuon_histograms.png")),
    "vit_digits.ipynb": (
        ROOT / "experiments" / "vit_digits" / "sweep.gin", "tiny", "vit_digits-tiny",
        ("report.md", "report.json", "accuracy_vs_compute.png", "loss_vs_compute.png")),
    "wsd_cooldown.ipynb": (
        ROOT / "experiments" / "wsd_cooldown" / "sweep.gin", "tiny", "wsd_cooldown-tiny",
        ("report.md", "report.json", "loss_vs_lr.png", "loss_vs_lr.svg", "branches.png",
         "lr_schedules.png")),
}


def check_vit_digits(sweep_dir: Path) -> None:
    """The tiny ViT ladder (d16 / d32 x AdamW / Muon, 120 steps of 32 images) learned:
    compute grows with width, and the d32 runs are well past chance (loss ln 10 = 2.30,
    accuracy 10%)."""
    result = json.loads((sweep_dir / "report.json").read_text())
    assert result["runs"] == result["done"] == 4
    assert set(result["best"]) == {"adamw", "muon"}
    by = {(r["model"], r["optimizer"]): r for r in result["table"]}
    for opt in ("adamw", "muon"):
        small, big = by[("d16", opt)], by[("d32", opt)]
        assert small["C (FLOPs)"] < big["C (FLOPs)"]
        assert big["val loss"] < 2.10 and big["val acc (%)"] > 25.0, big
    report = (sweep_dir / "report.md").read_text()
    assert "adamw: best accuracy" in report and "muon: best accuracy" in report


def check_wsd_cooldown(sweep_dir: Path) -> None:
    """Every arm ran; a branch restored from the constant run equals the one-run WSD
    schedule it reproduces; the longer branch is lower; the compute is counted as the
    constant run to its last branch point plus the cooldowns."""
    result = json.loads((sweep_dir / "report.json").read_text())
    assert result["runs"] == result["done"] == 7
    best = {b["arm"]: b for b in result["best"]}
    points = {p["length"]: p for p in result["branches"]["points"]}
    assert points["100%"]["branch_loss"] == pytest.approx(best["wsd_1sqrt"]["val loss"],
                                                          abs=1e-5)
    assert points["100%"]["branch_loss"] < points["50%"]["branch_loss"]
    # family 0.8 T + 0.2 (0.5 + 1) T = 1.1 T against cosine runs of 0.5 T + T
    assert result["branches"]["saved_fraction"] == pytest.approx(1 - 1.1 / 1.5, abs=1e-6)


CHECKS = {"vit_digits.ipynb": check_vit_digits, "wsd_cooldown.ipynb": check_wsd_cooldown}


def _execute(path: Path) -> dict:
    cells = json.loads(path.read_text())["cells"]
    namespace: dict = {"__name__": "__main__"}
    for i, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
        source = "".join(cell["source"])
        exec(compile(source, f"{path.name}[cell {i}]", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    study = STUDIES.get(path.name)
    if study is not None:
        sweep, preset, folder, outputs = study
        gin.clear_config()
        assert launch_main(["--sweep", str(sweep), "--preset", preset,
                            "--root", str(tmp_path / "sweeps")]) == 0
        sweep_dir = tmp_path / "sweeps" / folder
        monkeypatch.setenv("JAXLAB_SWEEP_DIR", str(sweep_dir))
    namespace = _execute(path)
    if study is not None:
        runs = namespace["runs"]
        assert set(runs["status"]) == {"done"}, runs[["name", "status"]]
        for name in outputs:
            assert (sweep_dir / name).stat().st_size > 1000, name
        if path.name in CHECKS:
            CHECKS[path.name](sweep_dir)


def test_there_are_notebooks():
    assert NOTEBOOKS
