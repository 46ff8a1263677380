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
    "adamw_timescale.ipynb": (
        ROOT / "experiments" / "adamw_timescale" / "sweep.gin", "tiny", "adamw_timescale-tiny",
        ("report.md", "report.json", "tau_opt_vs_tpp.png", "tau_opt_vs_tpp.svg",
         "loss_vs_tau.png", "batch.png")),
    "layerwise_wd.ipynb": (
        ROOT / "experiments" / "layerwise_wd" / "sweep.gin", "tiny", "layerwise_wd-tiny",
        ("report.md", "report.json", "transfer.png", "transfer.svg", "grid.png",
         "sigma_max.png")),
    "muon_family.ipynb": (
        ROOT / "experiments" / "muon_family" / "sweep.gin", "tiny", "muon_family-tiny",
        ("report.md", "report.json", "step_cost.png", "step_cost.svg")),
    "sparse_ablation.ipynb": (
        ROOT / "experiments" / "sparse_ablation" / "sweep.gin", "tiny", "sparse_ablation-tiny",
        ("report.md", "report.json", "ablation.png", "ablation.svg")),
    "sparse_scaling.ipynb": (
        ROOT / "experiments" / "sparse_scaling" / "sweep.gin", "tiny", "sparse_scaling-tiny",
        ("report.md", "report.json", "loss_vs_nonzeros.png", "loss_vs_nonzeros.svg",
         "residuals.png", "optimal_sparsity.png")),
    "sparsity_schedule.ipynb": (
        ROOT / "experiments" / "sparsity_schedule" / "sweep.gin", "tiny",
        "sparsity_schedule-tiny",
        ("report.md", "report.json", "loss_vs_compute.png", "loss_vs_compute.svg",
         "residuals.png", "density_traces.png")),
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


def check_muon_family(sweep_dir: Path) -> None:
    """Every arm trained on both models: past chance (ln 256 = 5.55 nats/byte) after 40
    steps; each MoE run is paired with its dense twin at equal steps, stores more parameters
    than it activates, and reports its dropped tokens; MuonClip's clip figures are read
    from its runs' logs, and where the clip never acted its run equals Muon's; AdamW's
    step-cost ratio to itself is 1."""
    result = json.loads((sweep_dir / "report.json").read_text())
    assert result["runs"] == result["done"] == 8
    table = {(r["model"], r["arm"]): r for r in result["table"]}
    assert set(table) == {(m, a) for m in ("d32", "moe32")
                          for a in ("adamw", "muon", "dion", "muonclip")}
    assert all(r["val loss"] < 5.2 for r in table.values()), table
    moe = {r["arm"]: r for r in result["moe_vs_dense"]}
    assert set(moe) == {"adamw", "muon", "dion", "muonclip"}
    for r in moe.values():
        assert r["steps"] == r["twin steps"] == 40
        assert r["N stored"] > r["N active"]
        assert 0.0 <= r["dropped tokens"] < 1.0
        assert r["moe gain"] == pytest.approx(r["dense loss"] - r["moe loss"])
    assert len(result["qk_clip"]) == 2
    assert all(r["max logit (max)"] > 0 for r in result["qk_clip"])
    # tiny logits stay far below tau = 15: a clip that never acts leaves Muon's run as is
    assert all(r["clipped heads (mean frac)"] == 0.0 for r in result["qk_clip"])
    for model in ("d32", "moe32"):
        assert table[(model, "muonclip")]["val loss"] == pytest.approx(
            table[(model, "muon")]["val loss"], abs=1e-6)
    costs = {(r["model"], r["arm"]): r["step time / adamw's"] for r in result["step_costs"]}
    assert costs[("d32", "adamw")] == costs[("moe32", "adamw")] == 1.0
    assert "## Verdict" in (sweep_dir / "report.md").read_text()


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


def check_adamw_timescale(sweep_dir: Path) -> None:
    """Each run's recorded weight decay gives the timescale the sweep asked for
    (tau_mult x Power Lines' tau_opt at the run's own N and D); the batch cell's decay at
    equal tau is twice that of its half-batch cell; a run marked diverged in the store is left out of the
    fits and listed in the report."""
    from jaxlab.launch.report import load_analysis
    from jaxlab.launch.store import Store
    from jaxlab.scaling.laws import POWER_LINES_TAU

    result = json.loads((sweep_dir / "report.json").read_text())
    assert result["runs"] == result["used"] == 9 and not result["left_out"]
    assert {c["cell"] for c in result["cells"]} == {"d32_tpp2", "d32_tpp6", "d32_tpp2_b16"}
    study = load_analysis(ROOT / "experiments" / "adamw_timescale" / "analysis.py")
    runs = Store(sweep_dir / "sweep.db").dataframe()
    runs["run_dir"] = [str(sweep_dir / n) for n in runs["name"]]
    df, _ = study.frame(sweep_dir, runs)
    want = df["var.tau_mult"] * POWER_LINES_TAU.predict(df["D"] / df["N"])
    assert df["tau"].to_numpy() == pytest.approx(want.to_numpy(), rel=1e-9)
    # the batch cell: twice the batch at (about) the same D and tau, so twice the decay
    one = df[df["label.tau"] == "x1"].set_index("cell")
    assert one.loc["d32_tpp2_b16", "B"] == 2 * one.loc["d32_tpp2", "B"]
    assert one.loc["d32_tpp2_b16", "wd"] / one.loc["d32_tpp2", "wd"] == pytest.approx(2.0, rel=0.03)
    runs.loc[0, "status"] = "diverged"
    (sweep_dir / "with_diverged").mkdir()
    out = study.report(sweep_dir / "with_diverged", runs, n_boot=20)
    again = json.loads((sweep_dir / "with_diverged" / "report.json").read_text())
    assert again["used"] == 8 and [r["run"] for r in again["left_out"]] == [runs.loc[0, "name"]]
    assert runs.loc[0, "name"] in Path(out["report"]).read_text()


def check_layerwise_wd(sweep_dir: Path) -> None:
    """sweep.where kept the 2-lr grid at d16 and both arms of it at d32 (6 runs);
    the transferred setting is d16's best run; at d32 the rule's smaller matrix lr and
    larger decay give hidden matrices a smaller top singular value than plain AdamW at the
    same base setting, for every one of the 7 hidden matrices."""
    result = json.loads((sweep_dir / "report.json").read_text())
    assert result["runs"] == result["done"] == 6
    table = {(t["width"], t["arm"]): t for t in result["transfer"]["table"]}
    assert set(table) == {(16, "plain"), (16, "layerwise"), (32, "plain"), (32, "layerwise")}
    assert table[(16, "plain")]["gap"] == 0.0
    assert result["transfer"]["setting"]["loss"] == table[(16, "plain")]["local best loss"]
    for t in table.values():
        assert t["local best loss"] <= t["transferred loss"]
    sig = result["sigma_max"]
    assert len(sig["plain"]["per_matrix"]) == 7
    for name, (_, plain_d32) in sig["plain"]["per_matrix"].items():
        assert sig["layerwise"]["per_matrix"][name][1] < plain_d32, name
    assert sig["layerwise"]["predicted_slope"] == pytest.approx(0.0, abs=1e-9)
    assert sig["plain"]["predicted_slope"] == pytest.approx(0.75, abs=1e-9)


def check_sparse_scaling(sweep_dir: Path) -> None:
    """All 8 runs fitted; every sparse run's non-zeros are counted in its saved weights
    (the norms stay dense, so slightly fewer zeros than the target) and a dense run's are
    its parameters; the report carries an interval for every constant and multiplier and
    a verdict on each claim."""
    result = json.loads((sweep_dir / "report.json").read_text())
    assert result["runs"] == result["fitted"] == 8
    for r in result["runs_table"]:
        if r["S"] == 0.0:
            assert r["N"] == r["N_dense"]
        else:
            assert 0.0 <= r["S"] - r["measured_S"] < 0.01, r
            assert r["N"] < (1.0 - r["S"]) * r["N_dense"] + 0.01 * r["N_dense"]
    for k in ("a_S", "b_S", "c_S", "b_N", "a_D", "b_D", "c", "mult@0.5", "mult@0.75"):
        lo, hi = result["intervals"][k]["0.95"]
        assert lo <= hi, k
    assert set(result["claims"]) == {"capacity", "direct", "optimal_sparsity"}
    assert result["paper"]["mult@0.5"] == pytest.approx(1.59, abs=0.01)
    assert result["paper"]["mult@0.75"] == pytest.approx(2.16, abs=0.01)


def check_sparsity_schedule(sweep_dir: Path) -> None:
    """Each sparse arm trained for the steps that spend its dense run's compute (one-shot
    at 25%: 0.25 x 30 + 0.75 x 30 / 0.5 = 52.5 -> 53 steps) and spent it, as measured from
    its logged non-zeros; N_bar lies between the final and the initial count."""
    from jaxlab.sparse import equal_compute_steps

    result = json.loads((sweep_dir / "report.json").read_text())
    assert result["runs"] == result["done"] == 8
    for t in result["table"]:
        kind = "oneshot" if t["arm"] == "dense" else t["arm"].split("_")[0]
        assert t["steps"] == equal_compute_steps(30, t["S"], kind, 0.25, 0.75, 1)
        assert 1.0 <= t["C / dense C"] < 1.05, t
    assert {t["steps"] for t in result["table"] if t["arm"] == "oneshot_s50"} == {53}
    assert {g["group"] for g in result["groups"]} == {"dense", "oneshot", "cubic", "geometric"}
    assert set(result["claims"]) == {"n_bar_law", "window", "best_schedule"}
    assert result["claims"]["window"]["held"] is None  # the tiny preset has no early / late arm


def check_sparse_ablation(sweep_dir: Path) -> None:
    """Every arm ran; the sparse arms hold S = 0.5 in their saved hidden matrices (the
    norms stay dense) and the dense ones none; each arm is compared with the dense run of
    its own optimizer and with the arm it changes one thing against."""
    result = json.loads((sweep_dir / "report.json").read_text())
    assert result["runs"] == result["done"] == 10
    table = {t["arm"]: t for t in result["table"]}
    assert set(table) == {"dense_adamw", "dense_muon", "unstructured", "unstructured_oneshot",
                          "nm_2of4", "block16", "erk", "srste_2of4", "adams_2of4",
                          "unstructured_muon"}
    for arm, t in table.items():
        if arm.startswith("dense"):
            assert t["measured S"] == 0.0
        else:
            assert 0.49 < t["measured S"] <= 0.5, t
    loss = {arm: t["loss"] for arm, t in table.items()}
    muon = table["unstructured_muon"]
    assert muon["vs dense"] == pytest.approx(loss["unstructured_muon"] - loss["dense_muon"])
    assert muon["vs reference"] == pytest.approx(loss["unstructured_muon"] - loss["unstructured"])
    assert table["nm_2of4"]["reference"] == "unstructured_oneshot"
    assert table["srste_2of4"]["vs reference"] == pytest.approx(loss["srste_2of4"]
                                                                - loss["nm_2of4"])
    assert len(result["findings"]) == 8  # every sparse arm against its reference


CHECKS = {"adamw_timescale.ipynb": check_adamw_timescale,
          "sparse_scaling.ipynb": check_sparse_scaling,
          "sparsity_schedule.ipynb": check_sparsity_schedule,
          "sparse_ablation.ipynb": check_sparse_ablation, "muon_family.ipynb": check_muon_family, "layerwise_wd.ipynb": check_layerwise_wd, "vit_digits.ipynb": check_vit_digits, "wsd_cooldown.ipynb": check_wsd_cooldown}


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
