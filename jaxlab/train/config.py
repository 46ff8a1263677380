"""Training-run configuration, configurable from gin."""

from __future__ import annotations

import dataclasses
from typing import Any

import gin


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How long and how to train one model.

    Attributes:
      task: what is trained: ``'lm'`` (the transformer LM on ``DataConfig``, the
        default), ``'image_classification'`` (the ViT on ``ImageDataConfig``), or a
        :class:`jaxlab.tasks.Task` (e.g. a gin reference); see :mod:`jaxlab.tasks`.
      steps: optimizer steps.
      batch_size: sequences per step (global, across all devices).
      seq_len: tokens per sequence T (the LM; a ViT's sequence is its patches).
      seed: seeds parameter init and the data order.
      mesh: mesh spec, e.g. ``"data=-1"`` or ``"data=2,fsdp=2,tensor=2"``.
      log_every: steps between metric lines (train loss is averaged over the window).
      eval_every: steps between validation losses (0: only at the end).
      eval_batches: validation batches per evaluation.
      checkpoint_every: steps between checkpoints (0: only at the end).
      keep_checkpoints: checkpoints kept (oldest deleted), None keeps all.
      async_checkpoint: write checkpoints in a background thread.
      spectral_every: steps between top-singular-value diagnostics (0: off).
      init_from: ``"PARENT_WORKDIR@STEP"``: start from that checkpoint of another run
        (params, optimizer state, step and data position), e.g. to branch a cooldown.
      progress: show a progress bar.
      wandb_project: also send the metrics to this Weights & Biases project (None: off;
        needs ``pip install 'jaxlab[wandb]'``, see :mod:`jaxlab.train.wandb_writer`).
      wandb_mode: ``'online'``, ``'offline'`` (written under the run directory for a later
        ``wandb sync``) or ``'disabled'``.
    """

    task: Any = "lm"
    steps: int = 400
    batch_size: int = 16
    seq_len: int = 128
    seed: int = 0
    mesh: str = "data=-1"
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = 100
    keep_checkpoints: int | None = 3
    async_checkpoint: bool = True
    spectral_every: int = 0
    init_from: str | None = None
    progress: bool = True
    wandb_project: str | None = None
    wandb_mode: str = "online"

    def __post_init__(self):
        for name in ("steps", "batch_size", "seq_len", "log_every", "eval_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "checkpoint_every", "spectral_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if isinstance(self.task, str):
            from jaxlab.tasks import TASKS

            if self.task not in TASKS:
                raise ValueError(f"TrainConfig.task={self.task!r}; valid: {sorted(TASKS)} "
                                 "or a Task")
        if self.wandb_mode not in ("online", "offline", "disabled"):
            raise ValueError(f"TrainConfig.wandb_mode={self.wandb_mode!r}; valid: "
                             "('online', 'offline', 'disabled')")
        if self.init_from is not None and "@" not in self.init_from:
            raise ValueError(
                f"TrainConfig.init_from={self.init_from!r} must look like 'PARENT_WORKDIR@STEP'"
            )

    @property
    def tokens_per_step(self) -> int:
        """``batch_size * seq_len``: the LM's tokens per step (a Task's own figure is
        ``batch_size * task.tokens_per_example``)."""
        return self.batch_size * self.seq_len
