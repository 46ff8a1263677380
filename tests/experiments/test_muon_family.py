"""The muon_family study's presets expand to the intended grids: every arm on every rung,
the lr grid only on the marked rung, the MoE rung at its dense twin's steps with equal
active parameters, and one decay timescale for every run of a rung (the tiny preset runs
for real in tests/colab)."""

from pathlib import Path

import pytest

from jaxlab.launch.expand import load_plan

SWEEP = Path(__file__).resolve().parents[2] / "experiments" / "muon_family" / "sweep.gin"
ARMS = {"adamw", "muon", "muon_aol", "normuon", "adamuon", "dion", "muonclip", "trasmuon"}


LR_GRID = {"lr0.5": 3e-3, "lr1": 6e-3, "lr2": 1.2e-2, "lr4": 2.4e-2}
CPU_LR_GRID = {**LR_GRID, "lr8": 4.8e-2}


@pytest.mark.parametrize("preset,swept,rest,moe,twin,grid,fixed", [
    ("smoke", ["d32"], ["d48", "d64"], "moe64", "d64", LR_GRID, "lr2"),
    ("cpu", ["d64"], ["d96", "d128"], "moe128", "d128", CPU_LR_GRID, "lr4"),
    (None, ["d256", "d384", "d512"], [], "moe512", "d512", LR_GRID, "lr2")])
def test_presets_expand_to_the_grid(tmp_path, preset, swept, rest, moe, twin, grid, fixed):
    plan = load_plan(SWEEP, preset, tmp_path)
    runs = {tuple(dict(r.labels)[k] for k in ("model", "optimizer", "lr")): r
            for r in plan.runs}
    lr_sweep_rungs = swept + ([moe] if preset is None else [])
    n_rungs = len(swept) + len(rest) + 1
    assert len(plan.runs) == len(ARMS) * (len(grid) * len(lr_sweep_rungs)
                                          + n_rungs - len(lr_sweep_rungs))
    assert {k[1] for k in runs} == ARMS
    for arm in ARMS:
        for model in swept:
            assert {k[2] for k in runs if k[:2] == (model, arm)} == set(grid)
            for label, lr in grid.items():
                bound = _bindings(runs[(model, arm, label)])["build_optimizer.learning_rate"]
                assert float(bound) == pytest.approx(lr, rel=1e-12)
        for model in rest:
            assert {k[2] for k in runs if k[:2] == (model, arm)} == {fixed}
        m, d = runs[(moe, arm, fixed)], runs[(twin, arm, fixed)]
        # equal steps; active parameters equal but for the router (E x d per layer)
        assert _bindings(m)["TrainConfig.steps"] == _bindings(d)["TrainConfig.steps"]
        extra = dict(m.figures)["params_non_embedding"] - dict(d.figures)["params_non_embedding"]
        n_layers = int(_bindings(d)["ModelConfig.n_layers"])
        d_model = int(_bindings(d)["ModelConfig.d_model"])
        assert extra == n_layers * 8 * d_model
        assert dict(m.variables)["twin_N"] == dict(d.figures)["params_non_embedding"]
    # one decay timescale per rung: lr x wd is the same for every arm and lr, on both
    # groups of every optimizer
    for model in swept:
        products = set()
        for k, r in runs.items():
            if k[0] != model:
                continue
            b = _bindings(r)
            lr = float(b["build_optimizer.learning_rate"])
            products |= {round(lr * float(v), 12) for key, v in b.items()
                         if key.endswith("weight_decay")}
        assert len(products) == 1, products


def _bindings(run) -> dict:
    return dict(run.bindings)


def test_arms_bind_what_they_say():
    plan = load_plan(SWEEP, "tiny", Path("/tmp/unused"))
    names = {dict(r.labels)["optimizer"] for r in plan.runs}
    assert names == {"adamw", "muon", "dion", "muonclip"}
    arm_files = {p.stem for p in (SWEEP.parent / "arms").glob("*.gin")}
    assert arm_files == ARMS
    aol = (SWEEP.parent / "arms" / "muon_aol.gin").read_text()
    assert "muon.ns_precondition = 'aol'" in aol and "muon.ns_steps = 4" in aol
