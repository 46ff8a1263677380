"""Running one run of a sweep: ``python -m jaxlab.train`` in a subprocess, and its outcome.

Shared by the backends (a local worker thread or a Ray task calls :func:`execute`). The
run directory is locked (``flock`` on ``<run dir>/.lock``, inherited by the training
process) for as long as any process of the run lives, so a relaunched sweep cannot start
a second process on a run whose old one is still dying.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from jaxlab.launch.expand import resolve_init_from

LOCK_WAIT_S = 60.0
DIVERGED_EXIT_CODE = 3   # jaxlab.train exits 3 when the run diverged
_LIVE: set[subprocess.Popen] = set()   # training processes started by this process
_LIVE_LOCK = threading.Lock()


def interrupt_all() -> None:
    """Sends SIGINT to every live training process of this launcher: each writes an
    ``interrupted`` summary (its last checkpoint stays) and exits."""
    with _LIVE_LOCK:
        for proc in _LIVE:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)


def latest_checkpoint(run_dir: str | Path) -> int | None:
    """Step of the newest finished checkpoint in ``run_dir/checkpoints`` (orbax layout)."""
    d = Path(run_dir) / "checkpoints"
    steps = [int(p.name) for p in d.iterdir() if p.name.isdigit()] if d.is_dir() else []
    return max(steps) if steps else None


def read_summary(run_dir: str | Path) -> dict | None:
    """``run_dir/summary.json`` as a dict, or None when absent or half written."""
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def train_env(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a training process using ``threads`` CPU threads.

    Drops the fake-device flag (tests set it) from ``XLA_FLAGS``; with one thread turns
    off Eigen's thread pool. XLA sizes its CPU pools from the process's CPU affinity,
    which :mod:`jaxlab.launch.child` sets.
    """
    env = dict(os.environ if base is None else base)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith(("--xla_force_host_platform_device_count",
                                  "--xla_cpu_multi_thread_eigen"))]
    if threads == 1:
        flags.append("--xla_cpu_multi_thread_eigen=false")
    env["XLA_FLAGS"] = " ".join(flags)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    return env


def train_command(run: dict, run_dir: str | Path, python: str | None = None) -> list[str]:
    """The ``python -m jaxlab.train`` command line of ``run`` (a ``RunSpec.to_json()``)."""
    cmd = [python or sys.executable, "-m", "jaxlab.train", "--workdir", str(run_dir)]
    for f in run["gin_files"]:
        cmd += ["--gin_file", f]
    for k, v in resolve_init_from(run, run_dir).items():
        cmd += ["--gin_bindings", f"{k} = {v}"]
    return cmd


def _lock(run_dir: Path):
    """Opens and exclusively locks ``run_dir/.lock``; waits for a dying old run."""
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise RuntimeError(f"run directory {run_dir} is locked by another process "
                                   f"for over {LOCK_WAIT_S:.0f}s (a second launcher?)") from None
            time.sleep(0.2)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def outcome(returncode: int, summary: dict | None, log: Path) -> tuple[str, str | None]:
    """(status, error) of a finished training process."""
    s = (summary or {}).get("status")
    if returncode == 0 and s == "done":
        return "done", None
    if returncode == DIVERGED_EXIT_CODE and s == "diverged":
        return "diverged", None
    if returncode < 0:
        error = f"killed by signal {-returncode}"
    else:
        error = (summary or {}).get("error") or f"exit code {returncode}"
    status = "interrupted" if s == "interrupted" else "failed"
    return status, f"{error}\n--- last lines of {log}:\n{_tail(log)}"


def free_port() -> int:
    """A TCP port on localhost that is free now (for a run's coordinator)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def process_commands(cmd: list[str], env: dict[str, str], processes: int,
                     cpu_devices: int | None = None) -> list[tuple[list[str], dict]]:
    """``(command, environment)`` of each process of a run: the run's command itself for
    one process; for several, each joins one JAX run on a coordinator on localhost
    (:mod:`jaxlab.train.distributed`), with ``cpu_devices`` fake CPU devices if given."""
    if processes == 1 and cpu_devices is None:
        return [(cmd, env)]
    if cpu_devices is not None:  # replaces a device count already in XLA_FLAGS
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        env = {**env, "XLA_FLAGS": " ".join(
            [*flags, f"--xla_force_host_platform_device_count={cpu_devices}"])}
    if processes == 1:
        return [(cmd, env)]
    port = free_port()
    return [(cmd + ["--coordinator_address", f"localhost:{port}", "--num_processes",
                    str(processes), "--process_id", str(p)], env) for p in range(processes)]


def execute(run: dict, run_dir: str | Path, threads: int = 1, cpus: list[int] | None = None,
            python: str | None = None, env: dict[str, str] | None = None,
            processes: int = 1, cpu_devices: int | None = None) -> dict:
    """Trains (or resumes) ``run`` in ``run_dir``; returns its result.

    The result: ``{"run_id", "status", "returncode", "error", "summary",
    "resumed_from", "wall_s"}`` with status done, diverged, failed or interrupted.
    ``env`` adds variables to the training process's environment (already set ones win).
    ``processes > 1`` trains the run as that many processes of one JAX run (process 0
    logs to ``train.log``, process p to ``train.p<p>.log``); if one fails, the others are
    stopped and the first non-zero exit status is the run's.
    """
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps(run, indent=2))
    log = run_dir / "train.log"
    fd = _lock(run_dir)
    t0 = time.perf_counter()
    resumed_from = latest_checkpoint(run_dir)
    procs, outs = [], []
    try:
        cmd = train_command(run, run_dir, python)
        base_env = {**(env or {}), **train_env(threads)}
        for p, (pcmd, penv) in enumerate(process_commands(cmd, base_env, processes,
                                                          cpu_devices)):
            wrapper = [sys.executable, "-m", "jaxlab.launch.child", str(os.getpid()),
                       ",".join(map(str, cpus)) if cpus else "-", "--", *pcmd]
            out = open(log if p == 0 else run_dir / f"train.p{p}.log", "a")
            outs.append(out)
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} threads={threads} "
                      f"cpus={cpus} resume_from={resumed_from}\n{shlex.join(pcmd)}\n")
            out.flush()
            proc = subprocess.Popen(wrapper, stdout=out, stderr=subprocess.STDOUT,
                                    env=penv, pass_fds=(fd,))
            procs.append(proc)
            with _LIVE_LOCK:
                _LIVE.add(proc)
        rc = _wait_all(procs)
    finally:
        with _LIVE_LOCK:
            for proc in procs:
                _LIVE.discard(proc)
        for out in outs:
            out.close()
        os.close(fd)
    summary = read_summary(run_dir)
    status, error = outcome(rc, summary, log)
    return {"run_id": run["run_id"], "status": status, "returncode": rc, "error": error,
            "summary": summary, "resumed_from": resumed_from,
            "wall_s": time.perf_counter() - t0}


def _wait_all(procs: list[subprocess.Popen]) -> int:
    """Waits for every process; once one exits non-zero, stops the others (a peer of a
    dead process would wait at its next collective). Returns the first non-zero status
    (its own, not a stopped peer's), else 0."""
    if len(procs) == 1:
        return procs[0].wait()
    first = None
    while any(p.poll() is None for p in procs):
        for p in procs:
            if p.returncode not in (None, 0) and first is None:
                first = p.returncode
                for q in procs:
                    if q.poll() is None:
                        q.terminate()
        time.sleep(0.05)
    for p in procs:
        if p.returncode != 0 and first is None:
            first = p.returncode
    return 0 if first is None else first


def launch_failure(run: dict, error: BaseException) -> dict:
    """The result of a run that could not be started (``execute`` raised ``error``)."""
    return {"run_id": run["run_id"], "status": "failed", "returncode": None,
            "error": f"{type(error).__name__}: {error}", "summary": None,
            "resumed_from": None, "wall_s": 0.0}
