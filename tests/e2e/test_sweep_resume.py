"""SIGKILL the launcher mid-sweep and relaunch it: finished runs are not rerun, the
interrupted run resumes from its checkpoint, and the store has every run exactly once."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import gin

from jaxlab.launch.expand import load_plan
from jaxlab.launch.runner import store_of

SWEEP = """
include 'jaxlab/configs/models/d64.gin'
TrainConfig.batch_size = 8
TrainConfig.seq_len = 64
TrainConfig.eval_every = 0
TrainConfig.eval_batches = 2
TrainConfig.checkpoint_every = 40
TrainConfig.log_every = 10
TrainConfig.progress = False
TrainConfig.mesh = 'data=1'
axis.run = {'TrainConfig.steps': [20, 400, 21], 'label': ['first', 'long', 'last']}
"""


def _launcher(sweep, root, workers):
    env = {**os.environ, "XLA_FLAGS": ""}
    cmd = [sys.executable, "-m", "jaxlab.launch", "--sweep", str(sweep), "--root", str(root),
           "--workers", str(workers)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _summary(run_dir):
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _checkpoints(run_dir):
    d = run_dir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _wait_lock_free(run_dir, timeout_s=30):
    """True once nothing holds the run's lock (its training process is dead)."""
    with open(run_dir / ".lock", "w") as f:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
                return True
            except BlockingIOError:
                time.sleep(0.1)
    return False


def test_sigkill_launcher_then_relaunch_resumes(tmp_path):
    sweep, root = tmp_path / "study" / "sweep.gin", tmp_path / "sweeps"
    sweep.parent.mkdir()
    sweep.write_text(SWEEP)
    plan = load_plan(sweep, None, root)
    gin.clear_config()
    first, long, last = (plan.run_dir(r) for r in plan.runs)

    proc = _launcher(sweep, root, workers=1)  # runs in order: first, long, last
    deadline = time.monotonic() + 240
    while not (_summary(first).get("status") == "done" and _checkpoints(long)):
        assert proc.poll() is None, f"launcher ended early:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "no checkpoint of the long run in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _checkpoints(long)[-1]
    assert _summary(long).get("status") == "running"  # killed mid-run, not finished
    assert _wait_lock_free(long), "the training process outlived its launcher"
    assert not (last / "summary.json").exists()
    first_mtime = (first / "summary.json").stat().st_mtime_ns

    proc = _launcher(sweep, root, workers=2)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "3 runs, 1 finished, 2 to run (1 resume from checkpoints)" in out

    rows = store_of(plan).rows()
    assert sorted(r["run_id"] for r in rows) == sorted(r.run_id for r in plan.runs)
    by_label = {r["labels"]["run"]: r for r in rows}
    assert {k: (r["status"], r["attempts"]) for k, r in by_label.items()} == {
        "first": ("done", 1), "long": ("done", 2), "last": ("done", 1)}
    assert by_label["long"]["resumed_from"] >= killed_at >= 40
    assert by_label["long"]["step"] == 400 and by_label["last"]["step"] == 21
    assert (first / "summary.json").stat().st_mtime_ns == first_mtime  # not rerun
    log = (long / "train.log").read_text()
    assert log.count("=== ") == 2 and f"resume_from={by_label['long']['resumed_from']}" in log
