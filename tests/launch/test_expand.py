"""Sweep files: parsing, product and zip of axes, derived bindings, presets, and errors
raised before anything launches."""

import math
import textwrap

import pytest

from jaxlab.launch.__main__ import main as launch_main
from jaxlab.launch.derive import DeriveError, evaluate
from jaxlab.launch.expand import load_plan, run_hash
from jaxlab.launch.spec import SweepError, load_spec
from jaxlab.nn import ModelConfig, param_counts

SWEEP = """
include 'jaxlab/configs/train/cpu_smoke.gin'

TrainConfig.seq_len = 64
TrainConfig.batch_size = 8
var.tokens_per_param = 2        # a variable

axis.model = {
    'gin_file': ['jaxlab/configs/models/d64.gin', 'jaxlab/configs/models/d96.gin'],
}
axis.opt = {'build_optimizer.optimizer': ['adamw', 'adamw'],
            'build_optimizer.learning_rate': [1e-3, 3e-3],
            'label': ['slow', 'fast']}
axis.seed = {'TrainConfig.seed': [0, 1]}
axis.tau = {'tau': [0.5, 0.25]}
sweep.product = ['model', 'opt', 'seed']
sweep.zip = [['seed', 'tau']]

derived.tokens = 'tokens_per_param * N'
derived.TrainConfig.steps = 'ceil(tokens / batch_tokens)'
derived.adamw.weight_decay = 'hp.weight_decay_for_timescale(tau, lr, batch_tokens, steps * batch_tokens)'

smoke/var.tokens_per_param = 1
smoke/axis.seed = {'TrainConfig.seed': [7, 8]}
smoke/sweep.workers = 2
"""


def write(tmp_path, text, name="sweep.gin"):
    path = tmp_path / "study" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


N = {m: param_counts(ModelConfig(**kw))["non_embedding"] for m, kw in
     {"d64": {"d_model": 64, "n_layers": 1, "n_heads": 2},
      "d96": {"d_model": 96, "n_layers": 2, "n_heads": 3}}.items()}


def expected_table(tpp, seeds):
    """The run table written out by hand: model x opt x (seed zip tau)."""
    rows = []
    for model in ("d64", "d96"):
        for opt, lr in (("slow", 1e-3), ("fast", 3e-3)):
            for seed, tau in zip(seeds, (0.5, 0.25)):
                steps = math.ceil(tpp * N[model] / 512)
                wd = 512 / (lr * (steps * 512) * tau)
                rows.append({
                    "labels": {"model": model, "opt": opt, "seed": f"seed{seed}",
                               "tau": f"tau{tau}"},
                    "gin_files": ["jaxlab/configs/train/cpu_smoke.gin",
                                  f"jaxlab/configs/models/{model}.gin"],
                    "bindings": {"TrainConfig.seq_len": "64", "TrainConfig.batch_size": "8",
                                 "build_optimizer.optimizer": "'adamw'",
                                 "build_optimizer.learning_rate": repr(lr),
                                 "TrainConfig.seed": repr(seed),
                                 "TrainConfig.steps": repr(steps),
                                 "adamw.weight_decay": repr(wd)},
                    "steps": steps,
                })
    return rows


@pytest.mark.parametrize("preset,tpp,seeds", [(None, 2, (0, 1)), ("smoke", 1, (7, 8))])
def test_product_zip_and_derived_give_the_exact_run_table(tmp_path, preset, tpp, seeds):
    plan = load_plan(write(tmp_path, SWEEP), preset, tmp_path / "sweeps")
    want = expected_table(tpp, seeds)
    got = [{"labels": dict(r.labels), "gin_files": list(r.gin_files),
            "bindings": dict(r.bindings), "steps": r.figure("steps")} for r in plan.runs]
    assert got == want
    assert len({r.run_id for r in plan.runs}) == 8
    for r in plan.runs:
        labels = dict(r.labels)
        assert r.name == "-".join([*labels.values(), r.run_id])
        assert r.figure("tokens") == r.figure("steps") * 512
        assert r.figure("params_non_embedding") == N[labels["model"]]
    assert plan.sweep_dir == tmp_path / "sweeps" / ("study-smoke" if preset else "study")
    assert plan.setting("workers") == (2 if preset else None)


def test_run_hash_ignores_binding_order_but_not_values():
    a = run_hash(["x.gin"], [("A.b", "1"), ("C.d", "2")])
    assert a == run_hash(["x.gin"], [("C.d", "2"), ("A.b", "1")])
    assert a != run_hash(["x.gin"], [("A.b", "1"), ("C.d", "3")])
    assert a != run_hash(["y.gin"], [("A.b", "1"), ("C.d", "2")])


def test_axis_with_unknown_binding_fails_before_launch(tmp_path, capsys):
    path = write(tmp_path, """
        include 'jaxlab/configs/models/d64.gin'
        axis.lr = {'build_optimizer.learnig_rate': [1e-3, 3e-3]}
    """)
    with pytest.raises(SweepError) as e:
        load_plan(path, None, tmp_path / "sweeps")
    msg = str(e.value)
    assert "axis.lr" in msg and "build_optimizer.learnig_rate" in msg
    assert "learning_rate" in msg  # the valid parameters are listed
    root = tmp_path / "sweeps"
    assert launch_main(["--sweep", str(path), "--root", str(root)]) == 2
    assert "build_optimizer.learnig_rate" in capsys.readouterr().err
    assert not root.exists()  # nothing was created, nothing launched


def test_axis_with_unknown_configurable_fails(tmp_path):
    path = write(tmp_path, "axis.x = {'NoSuchThing.value': [1, 2]}\n")
    with pytest.raises(SweepError, match=r"axis\.x.*NoSuchThing\.value.*no such configurable"):
        load_plan(path, None, tmp_path)


@pytest.mark.parametrize("text,match", [
    ("axis.a = {'TrainConfig.seed': [0, 1]\n", "never closed"),
    ("sweep.nope = 3\n", r"unknown setting sweep\.nope; valid"),
    ("axis.a = {'TrainConfig.seed': [0, 1], 'TrainConfig.steps': [5]}\n", "one length"),
    (("axis.a = {'TrainConfig.seed': [0, 1]}\naxis.b = {'TrainConfig.steps': [5, 6, 7]}\n"
     "sweep.zip = [['a', 'b']]\n"), "zipped axes must have one length"),
    ("axis.a = {'TrainConfig.seed': [0, 1]}\nsweep.product = ['b']\n",
     "sweep.product names axis 'b'"),
    (("axis.a = {'TrainConfig.seed': [0, 1]}\naxis.b = {'TrainConfig.steps': [5]}\n"
     "sweep.product = ['a']\n"), r"axes \['b'\] are declared but missing"),
    ("TrainConfig.seed = 1\nTrainConfig.seed = 2\n", "set twice"),
    ("derived.TrainConfig.steps = 'ceil(nope * 2)'\n", "unknown name 'nope'"),
    ("derived.TrainConfig.stepz = '3'\n", "has no parameter 'stepz'"),
    ("axis.a = {'tau': [1, 2]}\n", "identical bindings"),
    ("include 'missing.gin'\n", "not found"),
    ("TrainConfig.seed 1\n", "expected 'KEY = VALUE'"),
    ("a/b/TrainConfig.seed = 1\n", "one plain PRESET"),
])
def test_bad_sweep_files_name_the_problem(tmp_path, text, match):
    with pytest.raises(SweepError, match=match):
        load_plan(write(tmp_path, text), None, tmp_path)


def test_unknown_preset_lists_the_valid_ones(tmp_path):
    with pytest.raises(SweepError, match=r"preset 'ful' .* valid: \['smoke'\]"):
        load_spec(write(tmp_path, SWEEP), "ful")


def test_gin_references_pass_through_as_written(tmp_path):
    spec = load_spec(write(tmp_path, "ModelConfig.d_model = %WIDTH\nTrainConfig.mesh = 'data=1'\n"))
    assert spec.bindings == {"ModelConfig.d_model": "%WIDTH", "TrainConfig.mesh": "'data=1'"}


def test_derive_evaluates_arithmetic_only():
    names = {"N": 1000, "a.b": 3}
    assert evaluate("ceil(2.5 * N / 7) + a.b", names) == math.ceil(2500 / 7) + 3
    assert evaluate("max(1, N // 300) if N > 10 else 0", names) == 3
    for bad in ("__import__('os')", "N.__class__", "[1, 2]", "lambda: 1"):
        with pytest.raises(DeriveError):
            evaluate(bad, names)


def test_derive_calls_namespaced_library_functions():
    assert evaluate("sparse.equal_compute_steps(d, S, 'oneshot')", {"d": 300, "S": 0.5}) == 525
    with pytest.raises(DeriveError, match=r"sparse.count is not a function of "
                                          r"jaxlab.sparse.accounting; valid: \['compute_"):
        evaluate("sparse.count(1)", {})
    with pytest.raises(DeriveError, match="not a function") as err:  # imported, not its own
        evaluate("sparse.Callable(1)", {})
    assert "'Callable'" not in str(err.value)
    with pytest.raises(DeriveError, match=r"unknown function 'np.log'.*hp.NAME, sparse.NAME"):
        evaluate("np.log(2)", {})


def test_derive_boolean_operators_short_circuit_like_python():
    names = {"N": 1000, "zero": 0}
    assert evaluate("N > 10 and zero == 0", names) is True
    assert evaluate("N < 10 or zero", names) == 0           # the last operand, as Python
    assert evaluate("not zero and -1 <= zero <= 1", names) is True
    # the right side is never evaluated once the left decides
    assert evaluate("zero == 0 or missing", names) is True
    assert evaluate("zero != 0 and missing", names) is False
    with pytest.raises(DeriveError, match="unknown name 'missing'"):
        evaluate("zero == 0 and missing", names)


WHERE = """
include 'jaxlab/configs/train/cpu_smoke.gin'
TrainConfig.steps = 5
axis.width = {'ModelConfig.d_model': [32, 64], 'width': [32, 64], 'label': ['d32', 'd64']}
axis.lr = {'build_optimizer.learning_rate': [1e-3, 3e-3, 1e-2], 'lr_i': [-1, 0, 1],
           'label': ['1e-3', '3e-3', '1e-2']}
sweep.product = ['width', 'lr']
sweep.where = 'width == 32 or lr_i == 0'
"""


def test_sweep_where_keeps_only_the_combinations_it_accepts(tmp_path):
    plan = load_plan(write(tmp_path, WHERE), None, tmp_path / "sweeps")
    assert [dict(r.labels) for r in plan.runs] == [
        {"width": "d32", "lr": "1e-3"}, {"width": "d32", "lr": "3e-3"},
        {"width": "d32", "lr": "1e-2"}, {"width": "d64", "lr": "3e-3"}]


@pytest.mark.parametrize("where,match", [
    ("width > 100", "leaves no run"),
    ("widht == 32", "sweep.where for run .*unknown name 'widht'"),
])
def test_sweep_where_errors_name_the_problem(tmp_path, where, match):
    path = write(tmp_path, WHERE.replace("'width == 32 or lr_i == 0'", repr(where)))
    with pytest.raises(SweepError, match=match):
        load_plan(path, None, tmp_path / "sweeps")


BRANCHED = """
include 'jaxlab/configs/train/cpu_smoke.gin'
axis.arm = {'make_schedule.name': ['constant', 'wsd'], 'branched': [0, 1],
            'label': ['constant', 'cooldown']}
axis.lr = {'build_optimizer.learning_rate': [1e-3, 3e-3], 'label': ['1e-3', '3e-3']}
sweep.product = ['arm', 'lr']
derived.make_schedule.decay_start_step = '8 if branched else None'
derived.TrainConfig.init_from = "'sweep:arm=constant@' + str(8) if branched else None"
"""


def test_branch_names_its_parent_and_resolves_to_its_directory(tmp_path):
    from jaxlab.launch.expand import resolve_init_from

    plan = load_plan(write(tmp_path, BRANCHED), root=tmp_path / "sweeps")
    runs = {dict(r.labels)["arm"] + "/" + dict(r.labels)["lr"]: r for r in plan.runs}
    assert runs["constant/1e-3"].parent is None
    for lr in ("1e-3", "3e-3"):
        child, parent = runs[f"cooldown/{lr}"], runs[f"constant/{lr}"]
        assert child.parent == parent.name  # the constant run of the same lr
        bindings = resolve_init_from(child.to_json(), plan.run_dir(child))
        assert bindings["TrainConfig.init_from"] == repr(f"{plan.run_dir(parent)}@8")
    # the run's identity holds the reference, not the machine's path
    assert "sweep:arm=constant@8" in dict(runs["cooldown/1e-3"].bindings)["TrainConfig.init_from"]


@pytest.mark.parametrize("ref, match", [
    ("'sweep:arm=nope@8'", "is not a run of this sweep"),
    ("'sweep:model=d64@8'", r"names axes \['model'\]"),
    ("'sweep:arm=cooldown@8'", "is the run itself"),
    ("'sweep:arm@8'", "must look like"),
])
def test_bad_branch_reference_fails_before_launch(tmp_path, ref, match):
    text = BRANCHED.replace("\"'sweep:arm=constant@' + str(8) if branched else None\"",
                            f"\"{ref} if branched else None\"")
    with pytest.raises(SweepError, match=match):
        load_plan(write(tmp_path, text), root=tmp_path / "sweeps")


def test_branch_of_a_failed_parent_is_recorded_failed_not_run(tmp_path):
    from jaxlab.launch import runner

    plan = load_plan(write(tmp_path, BRANCHED), root=tmp_path / "sweeps")
    store = runner.store_of(plan)
    runner.register(plan, store)
    jobs = runner.todo(plan, store, compile_cache=False)
    names = {r.name: r for r in plan.runs}
    wave, later = runner._next_wave(plan, names, jobs, store, print)
    assert {j.run["labels"]["arm"] for j in wave} == {"constant"}
    assert {j.run["labels"]["arm"] for j in later} == {"cooldown"}
    # the parents "ran" and diverged: their branches are failed with the reason
    for j in wave:
        (j.run_dir).mkdir(parents=True, exist_ok=True)
        (j.run_dir / "summary.json").write_text('{"status": "diverged"}')
    wave2, later2 = runner._next_wave(plan, names, later, store, print)
    assert wave2 == [] and later2 == []
    rows = {r["name"]: r for r in store.rows()}
    for j in later:
        assert rows[j.run["name"]]["status"] == "failed"
        assert "is diverged; branch not started" in rows[j.run["name"]]["error"]
