"""The Ray backend: one Ray task per run, each training in a subprocess on its node.

Needs ``pip install 'jaxlab[ray]'``. Connects to ``address`` (or ``$RAY_ADDRESS``),
starts a local Ray instance when neither is set, or reuses the one this process already
initialised. Each task reserves ``resources`` (Ray task options, default
``{"num_cpus": 1}``; e.g. ``{"num_gpus": 1}`` on a GPU cluster), trains with as many
CPU threads as CPUs it reserved, and returns its result to the driver, which is the only
writer of the store. Run directories must be on storage that every node sees.
"""

from __future__ import annotations

import os

from jaxlab.launch import job as job_lib
from jaxlab.launch.backends import Job, OnFinish, OnStart

DEFAULT_RESOURCES = {"num_cpus": 1}
TASK_OPTIONS = ("num_cpus", "num_gpus", "memory", "resources", "accelerator_type",
                "max_retries", "scheduling_strategy", "runtime_env")


def _execute_task(run: dict, run_dir: str, threads: int, env: dict) -> dict:
    """Ray task body: trains ``run``; never raises, so one bad run cannot stop the sweep.
    The result names the node it ran on (``worker``: ``ray:<node id>``) for the store."""
    import ray

    try:
        result = job_lib.execute(run, run_dir, threads, env=env)
    except Exception as e:  # noqa: BLE001  (recorded as a failed run)
        result = job_lib.launch_failure(run, e)
    return {**result, "worker": f"ray:{ray.get_runtime_context().get_node_id()[:12]}"}


def _result(ref, j: Job) -> dict:
    """The task's result; a task lost with its node or worker is ``interrupted`` (its run
    resumes from its last checkpoint when the sweep is relaunched)."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        lost = job_lib.launch_failure(j.run, e)
        return {**lost, "status": "interrupted", "error": (
            f"the Ray task was lost ({type(e).__name__}: {str(e).splitlines()[0][:300]})")}


class RayBackend:
    """Runs each job as a Ray task with ``resources``."""

    name = "ray"

    def __init__(self, address: str | None = None, resources: dict | None = None,
                 threads_per_run: int | None = None, workers: int | None = None):
        import ray  # noqa: F401  (fails early, naming the extra, if Ray is missing)

        self.address = address or os.environ.get("RAY_ADDRESS")
        self.resources = dict(resources or DEFAULT_RESOURCES)
        bad = sorted(set(self.resources) - set(TASK_OPTIONS))
        if bad:
            raise ValueError(f"Ray resources {bad} are not task options; valid: {TASK_OPTIONS}")
        self.resources.setdefault("max_retries", 0)  # a crash is recorded, not retried
        self.threads = threads_per_run or max(1, int(self.resources.get("num_cpus", 1)))
        self.workers = workers  # None: as many tasks at once as the cluster fits

    def describe(self) -> str:
        return (f"ray: address={self.address or 'local'}, per run {self.resources}, "
                f"{self.threads} thread(s)")

    def run(self, jobs: list[Job], on_start: OnStart, on_finish: OnFinish) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        task = ray.remote(_execute_task).options(**self.resources)
        pending = list(jobs)
        running: dict = {}
        limit = self.workers or len(jobs)
        try:
            while pending or running:
                while pending and len(running) < limit:
                    j = pending.pop(0)
                    on_start(j, job_lib.latest_checkpoint(j.run_dir), "ray")
                    running[task.remote(j.run, str(j.run_dir), self.threads, j.env)] = j
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    j = running.pop(ref)
                    on_finish(j, _result(ref, j))
        except BaseException:
            for ref in running:
                ray.cancel(ref, force=True)
            raise
