"""The optional Weights & Biases writer, against a stand-in ``wandb`` module that records
its calls: one W&B run per run directory (the same id after a resume), every scalar of
metrics.jsonl logged at its step, the run's configuration attached, finish at the end."""

import sys
import types

import pytest

from jaxlab.data import DataConfig
from jaxlab.nn import ModelConfig
from jaxlab.tasks import LanguageModelTask
from jaxlab.train.config import TrainConfig
from jaxlab.train.loop import Run
from jaxlab.train.metrics import read_metrics

TINY = ModelConfig(d_model=32, n_layers=1, n_heads=2, max_seq_len=64)


class _FakeRun:
    def __init__(self, calls, kwargs):
        self.calls, self.kwargs = calls, kwargs

    def log(self, data, step):
        self.calls.append(("log", step, dict(data)))

    def finish(self):
        self.calls.append(("finish",))


@pytest.fixture
def fake_wandb(monkeypatch):
    calls = []

    def init(**kwargs):
        calls.append(("init", kwargs))
        return _FakeRun(calls, kwargs)

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    return calls


def _run(workdir, steps, **kw):
    cfg = TrainConfig(steps=steps, batch_size=4, seq_len=32, mesh="data=1", log_every=2,
                      eval_every=0, checkpoint_every=4, progress=False,
                      async_checkpoint=False, wandb_project="jaxlab-tests",
                      wandb_mode="offline", **kw)
    return Run(workdir, LanguageModelTask(TINY, DataConfig(), 32), cfg).run()


def test_every_scalar_reaches_wandb_at_its_step(tmp_path, fake_wandb):
    assert _run(tmp_path / "r", 8)["status"] == "done"
    init = fake_wandb[0][1]
    assert (init["project"], init["mode"], init["name"]) == ("jaxlab-tests", "offline", "r")
    assert init["resume"] == "allow" and init["dir"] == str(tmp_path / "r")
    assert init["config"]["optimizer"] == "adamw" and init["config"]["train"]["steps"] == 8
    logged = {c[1]: c[2] for c in fake_wandb if c[0] == "log"}
    records = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert sorted(logged) == sorted({r["step"] for r in records})
    for r in records:
        for k, v in r.items():
            if k != "step" and isinstance(v, float):
                assert logged[r["step"]][k] == v, (r["step"], k)
    assert fake_wandb[-1] == ("finish",)


def test_a_resumed_run_continues_the_same_wandb_run(tmp_path, fake_wandb):
    _run(tmp_path / "r", 4)
    _run(tmp_path / "r", 8)  # resumes from the step-4 checkpoint
    ids = [c[1]["id"] for c in fake_wandb if c[0] == "init"]
    assert len(ids) == 2 and ids[0] == ids[1] == (tmp_path / "r" / "wandb_id").read_text()
    second = fake_wandb[[c[0] for c in fake_wandb].index("init", 1):]
    assert min(c[1] for c in second if c[0] == "log") > 4


def test_missing_wandb_and_bad_mode_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails
    with pytest.raises(ImportError, match=r"wandb is not installed: pip install 'jaxlab\[wandb\]'"):
        _run(tmp_path / "r", 2)
    with pytest.raises(ValueError, match="TrainConfig.wandb_mode='cloud'"):
        TrainConfig(wandb_mode="cloud")


def test_offline_wandb_history_equals_metrics_jsonl(tmp_path, monkeypatch):
    """The real wandb, offline: the run's W&B history, read back from its transaction
    log, holds every scalar of metrics.jsonl at the same step with the same value."""
    import wandb  # noqa: F401  (a dev dependency: this test must not skip)

    from jaxlab.train.wandb_writer import offline_history

    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert _run(tmp_path / "r", 8)["status"] == "done"
    history = {row["_step"]: row for row in offline_history(tmp_path / "r")}
    records = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert sorted(history) == sorted(r["step"] for r in records) == [2, 4, 6, 8]
    for r in records:
        scalars = {k: v for k, v in r.items() if k != "step" and isinstance(v, float)}
        assert {"loss", "lr", "grad_norm"} <= set(scalars)
        assert {k: history[r["step"]][k] for k in scalars} == scalars, r["step"]
