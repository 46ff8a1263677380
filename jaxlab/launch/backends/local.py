"""The local backend: N worker threads on this machine, each driving one training
subprocess at a time, with the machine's cores divided between them."""

from __future__ import annotations

import concurrent.futures as cf
import os
import queue

from jaxlab.launch import job as job_lib
from jaxlab.launch.backends import Job, OnFinish, OnStart


def available_cpus() -> list[int]:
    """Core ids this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def cpu_slots(workers: int, threads_per_run: int | None = None,
              cpus: list[int] | None = None) -> tuple[int, list[list[int] | None]]:
    """(threads per run, cores of each worker slot).

    The cores are split evenly between workers; each slot lists its own cores (None,
    no pinning, when workers x threads exceed the cores).
    """
    cpus = cpus if cpus is not None else available_cpus()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    threads = threads_per_run or max(1, len(cpus) // workers)
    if workers * threads > len(cpus):
        return threads, [None] * workers
    return threads, [cpus[i * threads:(i + 1) * threads] for i in range(workers)]


class LocalBackend:
    """Runs jobs in ``workers`` parallel training subprocesses on this machine.

    Each run uses ``threads_per_run`` threads (default: cores // workers). ``pin=True``
    also pins each worker to its own cores (``taskset``-style). That can help on a
    machine of one's own; on the shared 2-core machine pinned tiny runs took about twice
    as long as unpinned ones (not a controlled comparison: the scheduler cannot move a
    pinned run off a core another user keeps busy), so it is off by default.
    """

    name = "local"

    def __init__(self, workers: int = 1, threads_per_run: int | None = None,
                 pin: bool = False, python: str | None = None, processes_per_run: int = 1,
                 cpu_devices_per_process: int | None = None):
        if processes_per_run < 1:
            raise ValueError(f"sweep.processes_per_run must be >= 1, got {processes_per_run}")
        self.processes = processes_per_run
        self.cpu_devices = cpu_devices_per_process
        self.workers = workers
        self.threads, slots = cpu_slots(workers, threads_per_run)
        self.slots = slots if pin else [None] * workers
        self.python = python

    def describe(self) -> str:
        pinned = ", ".join(str(s) for s in self.slots) if any(self.slots) else "not pinned"
        procs = f", {self.processes} processes per run" if self.processes > 1 else ""
        return (f"local: {self.workers} worker(s) x {self.threads} thread(s), cores "
                f"{pinned}{procs}")

    def run(self, jobs: list[Job], on_start: OnStart, on_finish: OnFinish) -> None:
        free: queue.Queue[int] = queue.Queue()
        for i in range(self.workers):
            free.put(i)

        def work(j: Job) -> dict:
            slot = free.get()
            try:
                on_start(j, job_lib.latest_checkpoint(j.run_dir), f"local:{slot}")
                return job_lib.execute(j.run, j.run_dir, self.threads, self.slots[slot],
                                       self.python, j.env, processes=self.processes,
                                       cpu_devices=self.cpu_devices)
            except Exception as e:  # noqa: BLE001  (the sweep goes on; the run is recorded failed)
                return job_lib.launch_failure(j.run, e)
            finally:
                free.put(slot)

        pool = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="jaxlab-run")
        futures = {pool.submit(work, j): j for j in jobs}
        reported = set()
        try:
            for fut in cf.as_completed(futures):
                on_finish(futures[fut], fut.result())
                reported.add(fut)
        except BaseException:
            # Stop the running trainings (each saves an 'interrupted' summary), record them.
            job_lib.interrupt_all()
            pool.shutdown(wait=True, cancel_futures=True)
            for fut, j in futures.items():
                if fut not in reported and fut.done() and not fut.cancelled():
                    on_finish(j, fut.result())
            raise
        pool.shutdown(wait=True)
