"""Training with the Muon family through the real loop: the loss falls, diagnostics logged."""

import pytest

from jaxlab.data import DataConfig
from jaxlab.nn import ModelConfig
from jaxlab.tasks import LanguageModelTask
from jaxlab.train.config import TrainConfig
from jaxlab.train.loop import Run
from jaxlab.train.metrics import read_metrics
from jaxlab.train.optimizer import OptimizerConfig

TINY = ModelConfig(d_model=32, n_layers=2, n_heads=4, max_seq_len=64)


@pytest.mark.parametrize("optimizer,diag_key", [
    ("muon", "muon/update_norm"), ("normuon", "normuon/update_norm"),
    ("adamuon", "adamuon/update_norm"), ("dion", "dion/update_norm"),
    pytest.param("trasmuon", "trasmuon/clip_mean", marks=pytest.mark.slow)])
def test_loss_falls_and_diagnostics_are_logged(tmp_path, optimizer, diag_key):
    cfg = TrainConfig(steps=40, batch_size=8, seq_len=32, mesh="data=1", log_every=1,
                      eval_every=0, checkpoint_every=0, progress=False, async_checkpoint=False)
    opt = OptimizerConfig(optimizer=optimizer, learning_rate=0.01)
    summary = Run(tmp_path, LanguageModelTask(TINY, DataConfig(), cfg.seq_len), cfg, opt).run()
    assert summary["status"] == "done"
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    first = rows[0]["loss"]
    last = sum(r["loss"] for r in rows[-5:]) / 5
    assert last < first - 1.0, (first, last)  # bytes: ~5.5 nats at init
    assert diag_key in rows[-1] and rows[-1][diag_key] > 0
