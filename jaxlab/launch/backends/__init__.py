"""Where a sweep's runs execute: ``local`` (worker threads driving training subprocesses
on this machine) or ``ray`` (one Ray task per run). Both take the same jobs and report
each run's start and result through callbacks, so the launcher writes the store."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

BACKENDS = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class Job:
    """A run to execute: its ``RunSpec.to_json()``, its directory and extra environment
    variables of its training process."""

    run: dict
    run_dir: Path
    env: dict = dataclasses.field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.run["run_id"]


OnStart = Callable[[Job, int | None, str], None]   # (job, resumed_from step, worker)
OnFinish = Callable[[Job, dict], None]             # (job, result of job.execute)


def make_backend(name: str, **options):
    """The backend called ``name`` (see :data:`BACKENDS`) built with ``options``."""
    if name == "local":
        from jaxlab.launch.backends.local import LocalBackend

        return LocalBackend(**options)
    if name == "ray":
        from jaxlab.launch.backends.ray import RayBackend

        return RayBackend(**options)
    raise ValueError(f"unknown backend {name!r}; valid: {BACKENDS}")
