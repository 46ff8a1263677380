"""Optional Weights & Biases mirror of a run's metrics (``TrainConfig.wandb_project``).

The JSONL and TensorBoard writers stay the record; this sends the same scalars to W&B.
``mode='offline'`` writes the W&B run under ``workdir/wandb`` for a later ``wandb sync``.
The W&B run id is kept in ``workdir/wandb_id``, so a resumed run continues the same W&B
run. W&B cannot take back steps it has seen: the steps a killed run logged after its last
checkpoint stay there and the resumed run's repeats of them are dropped by W&B (the
JSONL record is rewound exactly, :class:`~jaxlab.train.metrics.MetricWriter`).
Needs ``pip install 'jaxlab[wandb]'``.
"""

from __future__ import annotations

import importlib
import uuid
from pathlib import Path
from typing import Any

MODES = ("online", "offline", "disabled")


class WandbWriter:
    """``write(step, record)`` and ``close()``, like the metric writers, into one W&B run
    of ``project`` named after the run directory; ``config`` is shown with the run."""

    def __init__(self, workdir: str | Path, project: str, mode: str = "online",
                 config: dict[str, Any] | None = None):
        if mode not in MODES:
            raise ValueError(f"TrainConfig.wandb_mode={mode!r}; valid: {MODES}")
        try:
            wandb = importlib.import_module("wandb")
        except ImportError:
            raise ImportError("TrainConfig.wandb_project is set but wandb is not installed: "
                              "pip install 'jaxlab[wandb]'") from None
        workdir = Path(workdir)
        id_file = workdir / "wandb_id"
        if not id_file.exists():
            id_file.write_text(uuid.uuid4().hex[:12])
        self.run = wandb.init(project=project, name=workdir.name, id=id_file.read_text(),
                              resume="allow", dir=str(workdir), mode=mode,
                              config=config or {})

    def write(self, step: int, record: dict[str, Any]) -> None:
        scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, float)}
        if scalars:
            self.run.log(scalars, step=int(step))

    def close(self) -> None:
        self.run.finish()
