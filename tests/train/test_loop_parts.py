"""The loop's small parts: when a step evaluates / checkpoints, and the one-step-late
metric read."""

from jaxlab.train.config import TrainConfig
from jaxlab.train.loop import PendingMetrics, due


def _steps_where(cfg: TrainConfig, field: str) -> list[int]:
    return [d for d in range(1, cfg.steps + 1) if getattr(due(d, cfg), field)]


def test_due_evaluates_and_saves_on_their_periods_and_at_the_end():
    cfg = TrainConfig(steps=10, eval_every=4, checkpoint_every=3, spectral_every=5)
    assert _steps_where(cfg, "evaluate") == [4, 8, 10]
    assert _steps_where(cfg, "save") == [3, 6, 9, 10]
    assert _steps_where(cfg, "spectral") == [5, 10]


def test_zero_periods_leave_only_the_last_step():
    cfg = TrainConfig(steps=7, eval_every=0, checkpoint_every=0, spectral_every=0)
    assert _steps_where(cfg, "evaluate") == [7]
    assert _steps_where(cfg, "save") == [7]
    assert _steps_where(cfg, "spectral") == []


def test_pending_metrics_are_read_once():
    pending = PendingMetrics()
    assert pending.take() is None
    pending.hold(3, {"loss": 1.0})
    pending.hold(4, {"loss": 0.5})      # a newer step replaces the held one
    assert pending.take() == (4, {"loss": 0.5})
    assert pending.take() is None
