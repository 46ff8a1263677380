"""What a run trains: the :class:`Task` interface the loop, checkpoints, summaries, sweeps
and reports are written against.

A task builds its model, computes its loss and metrics on a batch, serves its training
stream (a grain dataset whose iterator state goes into every checkpoint) and its fixed
validation batches, and counts its parameters and FLOPs. Everything else about a run
(mesh, optimizer, schedule, loop, checkpoints) is the same for every task. Tasks:
:class:`jaxlab.tasks.LanguageModelTask` (next-token loss) and
:class:`jaxlab.tasks.ImageClassificationTask` (cross-entropy and accuracy).
"""

from __future__ import annotations

import abc
from typing import Any

import grain
import jax
from flax import nnx

# The key of ``loss_and_metrics``'s metrics under which a task returns the arrays an
# optimizer's update needs (``{name: array}``, see :meth:`Task.reporting`); the training
# step passes them to ``tx.update`` as extra arguments and logs only the scalars.
UPDATE_INPUTS_KEY = "update_inputs"
# A task whose training loss adds a regulariser (the MoE load-balancing loss) returns the
# bare objective as this metric; evaluation reports it as the loss.
BARE_LOSS_KEY = "ce_loss"


class Task(abc.ABC):
    """One kind of training problem. Subclasses are frozen dataclasses of their configs.

    A batch is a dict of arrays whose leading axis is the batch (sharded over the mesh's
    data axes). ``tokens_per_example`` is the sequence length the FLOP count is per
    token of: the LM's context, a ViT's patches (+ class token); the run's compute is
    ``flops_per_token()["train"] * batch_size * tokens_per_example`` per step.
    """

    name: str = "task"

    @property
    @abc.abstractmethod
    def tokens_per_example(self) -> int:
        """Tokens (positions) the model processes per example."""

    @abc.abstractmethod
    def make_model(self, seed: int) -> nnx.Module:
        """The model, its parameters initialised from ``seed``."""

    @abc.abstractmethod
    def loss_and_metrics(self, model: nnx.Module, batch: dict) -> tuple[jax.Array, dict]:
        """Scalar training loss (nats) and a dict of extra scalar metrics."""

    @abc.abstractmethod
    def train_dataset(self, batch_size: int, seed: int, process_index: int = 0,
                      process_count: int = 1) -> grain.IterDataset:
        """Infinite shuffled batches; each process gets ``batch_size // process_count`` rows."""

    @abc.abstractmethod
    def eval_batches(self, batch_size: int, num_batches: int) -> list[dict]:
        """A fixed list of validation batches (host arrays)."""

    @abc.abstractmethod
    def param_counts(self) -> dict[str, int]:
        """At least ``{"total", "non_embedding"}``."""

    @abc.abstractmethod
    def flops_per_token(self) -> dict[str, float]:
        """At least ``{"forward", "train"}`` FLOPs per token."""

    def check(self, batch_size: int) -> None:
        """Raises a clear error if the task cannot run as configured (data, shapes)."""
        del batch_size

    def with_block_sparse(self, block_size: int) -> Task:
        """This task with its hidden matrices multiplied through the block-sparse kernel."""
        raise ValueError(f"task {self.name!r} does not support block-sparse kernels "
                         f"(sparsity.kernel); got block size {block_size}")

    def reporting(self, inputs: tuple[str, ...]) -> Task:
        """This task with ``loss_and_metrics`` also returning ``inputs`` (e.g.
        ``attn_max_logits``, QK-clip's) under :data:`UPDATE_INPUTS_KEY`."""
        if not inputs:
            return self
        raise ValueError(f"task {self.name!r} cannot report {inputs}, which the optimizer's "
                         "update needs; use an optimizer without them or a task that has them")

    def summary(self) -> dict[str, Any]:
        """Fields for the run's ``summary.json`` (``task``, ``model`` config...)."""
        return {"task": self.name}
