"""Orbax checkpoints of the train state (params, optimizer state, step) and data position.

A checkpoint is restored onto whatever mesh the restoring run uses: the restore target is
an abstract tree whose ``ShapeDtypeStruct`` leaves carry the *new* shardings, so a run
saved on ``data=8`` continues on ``fsdp=4,tensor=2`` or on one device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp


class Checkpointer:
    """Async ``CheckpointManager`` keeping the last ``keep`` checkpoints of a run."""

    def __init__(self, directory: str | Path, keep: int | None = 3, use_async: bool = True,
                 read_only: bool = False):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=use_async, create=not read_only,
            read_only=read_only,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict) -> None:
        """Saves ``state`` (a pytree of arrays) and the JSON-able data-iterator state."""
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)))

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """Restores checkpoint ``step`` into the shapes, dtypes and shardings of
        ``abstract_state`` (a tree of ``jax.ShapeDtypeStruct`` with ``sharding``)."""
        if step not in self.manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; "
                f"available steps: {sorted(self.manager.all_steps())}"
            )
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return out["state"], out["data"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
