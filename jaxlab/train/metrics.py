"""Metric writers: ``metrics.jsonl`` (always), TensorBoard event files, and optionally a
Weights & Biases run (:mod:`jaxlab.train.wandb_writer`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tensorboardX import SummaryWriter


def _plain(v: Any) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return f if math.isfinite(f) else str(f)


def read_metrics(path: str | Path) -> list[dict]:
    """All records of a ``metrics.jsonl`` file (missing file: empty list)."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


class MetricWriter:
    """Appends one JSON object per record to ``metrics.jsonl`` and mirrors scalars to
    TensorBoard under ``workdir/tb``.

    ``resume_step``: records with ``step > resume_step`` (written after the checkpoint a
    run resumes from) are dropped, so a resumed run's history equals an uninterrupted one.
    ``mirrors``: more writers (``write(step, record)``, ``close()``) that get every record,
    e.g. :class:`~jaxlab.train.wandb_writer.WandbWriter`.
    """

    def __init__(self, workdir: str | Path, resume_step: int | None = None,
                 tensorboard: bool = True, mirrors: tuple = ()):
        self.mirrors = tuple(mirrors)
        self.path = Path(workdir) / "metrics.jsonl"
        if resume_step is not None:
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        elif self.path.exists():
            self.path.unlink()
        self.file = self.path.open("a")
        self.tb = None
        if tensorboard:
            purge = None if resume_step is None else resume_step + 1
            self.tb = SummaryWriter(str(Path(workdir) / "tb"), purge_step=purge)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, float):
                    self.tb.add_scalar(k, v, step)
        for mirror in self.mirrors:
            mirror.write(step, record)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        for mirror in self.mirrors:
            mirror.close()
