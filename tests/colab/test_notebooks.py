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


def test_there_are_notebooks():
    assert NOTEBOOKS
