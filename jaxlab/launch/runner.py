"""Launching a sweep: register its runs in the store, skip finished ones, run the rest on
a backend and record each outcome as it arrives.

Relaunching the same sweep is the way to continue it: runs whose ``summary.json`` (or
store row) says ``done`` or ``diverged`` are skipped; any other run starts again and
resumes from its last checkpoint. Only one launcher may drive a sweep directory at a
time (an ``flock`` on ``<sweep dir>/launcher.lock``, freed by the kernel if the launcher
is killed).

A branched run (``init_from`` a sweep reference, :mod:`jaxlab.launch.expand`) starts in a
later wave than its parent, once the parent is ``done``; a branch whose parent ended
otherwise is recorded ``failed`` with the parent's status, and retried on relaunch.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from jaxlab.launch import job as job_lib
from jaxlab.launch.backends import Job, make_backend
from jaxlab.launch.expand import Plan
from jaxlab.launch.store import FINISHED, Store


def store_of(plan: Plan) -> Store:
    return Store(plan.sweep_dir / "sweep.db")


def _launcher_lock(sweep_dir: Path) -> int:
    fd = os.open(sweep_dir / "launcher.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        owner = (sweep_dir / "launcher.pid").read_text().strip() \
            if (sweep_dir / "launcher.pid").exists() else "?"
        raise RuntimeError(f"another launcher (pid {owner}) is running sweep {sweep_dir}; "
                           "wait for it or stop it first") from None
    (sweep_dir / "launcher.pid").write_text(str(os.getpid()))
    return fd


def register(plan: Plan, store: Store) -> None:
    """Adds every run of ``plan`` to the store and writes ``plan.json``."""
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    for run in plan.runs:
        store.register(run.run_id, run.name, plan.run_dir(run), dict(run.labels),
                       dict(run.bindings), list(run.gin_files))
    shutil.copyfile(plan.spec.path, plan.sweep_dir / "sweep.gin")
    (plan.sweep_dir / "plan.json").write_text(json.dumps(
        {"sweep": str(plan.spec.path), "preset": plan.spec.preset,
         "runs": [r.to_json() for r in plan.runs]}, indent=2))
    store.set_meta("sweep", {"path": str(plan.spec.path.resolve()), "preset": plan.spec.preset,
                             "study": plan.spec.study, "runs": [r.run_id for r in plan.runs]})


def todo(plan: Plan, store: Store, compile_cache: bool | str | Path = True) -> list[Job]:
    """Runs not yet finished; finished ones found on disk are recorded in the store.

    With ``compile_cache`` (True, or a folder), runs share JAX's persistent compilation
    cache, by default in ``<sweep dir>/.jax_cache``: a resumed run, a repeated seed or
    the same sweep on another backend skips recompiling (~4 s of a 10 s tiny CPU run).
    """
    rows = {r["run_id"]: r for r in store.rows()}
    cache = plan.sweep_dir / ".jax_cache" if compile_cache is True else compile_cache
    env = {"JAX_COMPILATION_CACHE_DIR": str(Path(cache).resolve())} if cache else {}
    jobs = []
    for run in plan.runs:
        run_dir = plan.run_dir(run)
        summary = job_lib.read_summary(run_dir)
        disk = (summary or {}).get("status")
        if disk in FINISHED:
            if rows[run.run_id]["status"] != disk:
                store.finish(run.run_id, disk, summary)
            continue
        jobs.append(Job(run.to_json(), run_dir.resolve(), env))
    return jobs


def launch(plan: Plan, backend: str = "local", log: Callable[[str], None] = print,
           compile_cache: bool | str | Path = True, **backend_options) -> dict[str, int]:
    """Runs every unfinished run of ``plan``; returns the store's count per status."""
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    lock = _launcher_lock(plan.sweep_dir)
    try:
        store = store_of(plan)
        register(plan, store)
        jobs = todo(plan, store, compile_cache)
        resuming = sum(job_lib.latest_checkpoint(j.run_dir) is not None for j in jobs)
        log(f"sweep {plan.sweep_dir}: {len(plan.runs)} runs, "
            f"{len(plan.runs) - len(jobs)} finished, {len(jobs)} to run "
            f"({resuming} resume from checkpoints)")
        if jobs:
            be = make_backend(backend, **backend_options)
            log(be.describe())
            names = {r.name: r for r in plan.runs}
            already = len(plan.runs) - len(jobs)
            while jobs:
                wave, jobs = _next_wave(plan, names, jobs, store, log)
                if wave:
                    _run(be, wave, store, log, already, len(plan.runs))
                already += len(wave)
        counts = store.counts()
        log("sweep finished: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
        return counts
    finally:
        os.close(lock)


def _next_wave(plan: Plan, names: dict, jobs: list[Job], store: Store,
               log) -> tuple[list[Job], list[Job]]:
    """(jobs to run now, jobs left for later waves): a branch waits while its parent is
    still to run; one whose parent finished other than ``done`` is recorded failed."""
    pending = {j.run["name"] for j in jobs}
    wave, later = [], []
    for j in jobs:
        parent = j.run.get("parent")
        if parent is None:
            wave.append(j)
        elif parent in pending:
            later.append(j)
        else:
            status = (job_lib.read_summary(plan.run_dir(names[parent])) or {}).get("status")
            if status == "done":
                wave.append(j)
            else:
                error = f"parent run {parent} is {status or 'missing'}; branch not started"
                store.finish(j.run_id, "failed", None, error=error)
                log(f"  failed   {j.run['name']}: {error}")
    if later and len(later) == len(jobs):
        raise RuntimeError(f"runs {[j.run['name'] for j in later]} branch from each other "
                           "in a cycle (TrainConfig.init_from sweep references)")
    return wave, later


def _run(be, jobs: list[Job], store: Store, log, already: int, total: int) -> None:
    t0 = time.perf_counter()
    finished = already

    def on_start(j: Job, resumed_from: int | None, worker: str) -> None:
        store.start(j.run_id, resumed_from, worker)
        note = f" (resuming from step {resumed_from})" if resumed_from else ""
        log(f"  start  {j.run['name']}{note}")

    def on_finish(j: Job, result: dict) -> None:
        nonlocal finished
        store.finish(j.run_id, result["status"], result["summary"], result["returncode"],
                     result["error"], result.get("worker"))
        finished += 1
        s = result["summary"] or {}
        loss = s.get("final_val_loss")
        loss_txt = f" val_loss={loss:.4f}" if isinstance(loss, float) else ""
        log(f"  [{finished}/{total}] {result['status']:<8} {j.run['name']}{loss_txt} "
            f"({result['wall_s']:.0f}s, sweep {time.perf_counter() - t0:.0f}s)")
        if result["status"] == "failed":
            first = (result["error"] or "").splitlines()[:1]
            log(f"    error: {first[0] if first else '?'} (log: {j.run_dir / 'train.log'})")

    try:
        be.run(jobs, on_start, on_finish)
    except KeyboardInterrupt:
        for row in store.rows():
            if row["status"] == "running":
                store.finish(row["run_id"], "interrupted", job_lib.read_summary(row["run_dir"]),
                             error="launcher interrupted")
        log("interrupted: relaunch the same command to resume")
        sys.exit(130)
