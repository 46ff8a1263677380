"""A 4-run sweep end to end: one run forced to diverge is recorded and the sweep
completes; status and report read the store; the Ray backend reproduces the local
backend's table (same bindings, same final losses) on a local Ray instance."""

import contextlib
import fcntl
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import gin
import pytest

from jaxlab.launch.__main__ import main as launch_main
from jaxlab.launch.expand import load_plan
from jaxlab.launch.runner import launch, store_of

SWEEP = """
include 'jaxlab/configs/models/d64.gin'
TrainConfig.batch_size = 8
TrainConfig.seq_len = 64
TrainConfig.steps = 30
TrainConfig.eval_every = 0
TrainConfig.eval_batches = 2
TrainConfig.checkpoint_every = 0
TrainConfig.log_every = 5
TrainConfig.progress = False
TrainConfig.mesh = 'data=1'
axis.lr = {
    'build_optimizer.learning_rate': [1e-3, 3e-3, 1e-2, 1e4],
    'build_optimizer.clip_norm': [1.0, 1.0, 1.0, None],
    'label': ['lr1e-3', 'lr3e-3', 'lr1e-2', 'huge'],
}
"""


def _shared_dir(tmp_path_factory, request):
    """A folder shared by all xdist workers of this session (one sweep, run once)."""
    try:
        worker = request.getfixturevalue("worker_id")
        uid = request.getfixturevalue("testrun_uid")
    except pytest.FixtureLookupError:  # pytest-xdist not loaded
        worker = "master"
    if worker == "master":
        return tmp_path_factory.mktemp("sweep_local")
    path = tmp_path_factory.getbasetemp().parent / f"sweep_local_{uid}"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def local_sweep(tmp_path_factory, request):
    """The sweep run once on the local backend (2 workers, 1 thread each)."""
    base = _shared_dir(tmp_path_factory, request)
    sweep = base / "study" / "sweep.gin"
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another xdist worker may be running it
        if not (base / "counts.json").exists():
            sweep.parent.mkdir(parents=True, exist_ok=True)
            sweep.write_text(SWEEP)
            plan = load_plan(sweep, None, base / "sweeps")
            counts = launch(plan, "local", workers=2, threads_per_run=1)
            (base / "counts.json").write_text(json.dumps(counts))
    gin.clear_config()
    plan = load_plan(sweep, None, base / "sweeps")
    return plan, json.loads((base / "counts.json").read_text())


def _table(plan):
    rows = {r["run_id"]: r for r in store_of(plan).rows()}
    return {rid: (r["bindings"], r["status"], r["final_train_loss"], r["final_val_loss"],
                  r["diverged_step"]) for rid, r in rows.items()}


def test_diverged_run_is_recorded_and_the_sweep_completes(local_sweep):
    plan, counts = local_sweep
    assert counts == {"pending": 0, "running": 0, "done": 3, "diverged": 1, "failed": 0,
                      "interrupted": 0}
    rows = {r["labels"]["lr"]: r for r in store_of(plan).rows()}
    assert len(rows) == 4
    huge = rows["huge"]
    assert huge["status"] == "diverged" and huge["returncode"] == 3
    assert 1 <= huge["diverged_step"] < 30
    for label in ("lr1e-3", "lr3e-3", "lr1e-2"):
        r = rows[label]
        assert r["status"] == "done" and r["step"] == 30 and r["attempts"] == 1
        assert math.isfinite(r["final_val_loss"]) and r["final_val_loss"] < 5.0
        assert r["train_flops"] == r["flops_per_token"] * 30 * 8 * 64
    # relaunching a finished sweep runs nothing
    gin.clear_config()
    assert launch(plan, "local", workers=2) == counts
    assert all(r["attempts"] == 1 for r in store_of(plan).rows())


def test_status_and_report_commands(local_sweep, capsys):
    plan, _ = local_sweep
    args = ["--sweep", str(plan.spec.path), "--root", str(plan.root)]
    assert launch_main(["status", *args]) == 0
    out = capsys.readouterr().out
    assert "done 3  diverged 1" in out and "100.0%" in out
    for r in plan.runs:
        assert r.name in out
    assert launch_main(["report", *args]) == 0  # no analysis.py: a table of the runs
    report = (plan.sweep_dir / "report.md").read_text()
    assert report.count("done") == 3 and report.count("diverged") == 1


def test_ray_backend_matches_local(local_sweep, tmp_path):
    # Starts a local Ray instance and 4 more runs (~1 min). Ray is in the dev extras, so a
    # missing Ray fails here rather than skipping.
    import ray

    plan, _ = local_sweep
    gin.clear_config()
    ray_plan = load_plan(plan.spec.path, None, tmp_path / "sweeps")
    assert [r.run_id for r in ray_plan.runs] == [r.run_id for r in plan.runs]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # Reusing the local sweep's compiled programs also checks that cached
        # executables give bit-identical losses.
        counts = launch(ray_plan, "ray", compile_cache=plan.sweep_dir / ".jax_cache",
                        resources={"num_cpus": 1})
    finally:
        ray.shutdown()
    assert counts["done"] == 3 and counts["diverged"] == 1
    assert _table(ray_plan) == _table(plan)  # same bindings, statuses and exact losses
    for r in ray_plan.runs:
        assert (ray_plan.run_dir(r) / "summary.json").exists()


def _alive_nodes(ray) -> int:
    return len([n for n in ray.nodes() if n["Alive"]])


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout_s:.0f} s")
        time.sleep(0.5)


@contextlib.contextmanager
def ray_cli_cluster():
    """A head node and a worker node started with ``ray start --block`` on localhost, each
    its own process group with one CPU, and this process connected as the driver.

    Yields ``stop_worker()``, which SIGTERMs the worker node's processes (the node dies,
    as when its machine goes away). Teardown stops both groups without ``ray stop``
    (which would stop every Ray instance on the machine)."""
    import ray

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"127.0.0.1:{port}"
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--block", "--num-cpus=1", "--node-ip-address=127.0.0.1"]
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: socket paths
    procs = []

    def start(*args):
        procs.append(subprocess.Popen([ray_cli, "start", *common, *args], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))

    def stop(proc, grace_s=10.0):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):  # what the head left behind
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    try:
        start("--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp_dir}")
        time.sleep(1.0)
        start(f"--address={address}")
        ray.init(address=address, log_to_driver=False)
        _wait_for(lambda: _alive_nodes(ray) == 2, 60, "the worker node did not join")

        def stop_worker():
            stop(procs[1])
            _wait_for(lambda: _alive_nodes(ray) == 1, 60, "the worker node is still alive")

        yield stop_worker
    finally:
        ray.shutdown()
        for proc in reversed(procs):
            stop(proc)


@pytest.mark.slow
def test_ray_backend_on_two_nodes(local_sweep, tmp_path):
    """A two-node Ray cluster on localhost (a head and a worker started by ``ray start``,
    separate processes, one CPU each): the runs spread over both nodes, every run
    directory is written where the driver named it (the storage both nodes see), the
    driver alone writes the store, and the table equals the local backend's."""
    plan, _ = local_sweep
    gin.clear_config()
    ray_plan = load_plan(plan.spec.path, None, tmp_path / "sweeps")
    with ray_cli_cluster():
        counts = launch(ray_plan, "ray", compile_cache=plan.sweep_dir / ".jax_cache",
                        resources={"num_cpus": 1})
    assert counts["done"] == 3 and counts["diverged"] == 1
    assert _table(ray_plan) == _table(plan)
    workers = {r["worker"] for r in store_of(ray_plan).rows()}
    assert len(workers) == 2 and all(w.startswith("ray:") for w in workers), workers
    for r in ray_plan.runs:
        assert (ray_plan.run_dir(r) / "summary.json").exists()


RESUMABLE = """
include 'jaxlab/configs/train/cpu_smoke.gin'
ModelConfig.d_model = 32
ModelConfig.n_layers = 1
ModelConfig.n_heads = 2
TrainConfig.seq_len = 32
TrainConfig.batch_size = 8
TrainConfig.steps = 400
TrainConfig.eval_every = 0
TrainConfig.eval_batches = 2
TrainConfig.checkpoint_every = 20
TrainConfig.log_every = 20
TrainConfig.mesh = 'data=1'
axis.lr = {'build_optimizer.learning_rate': [1e-3, 2e-3, 3e-3, 4e-3],
           'label': ['a', 'b', 'c', 'd']}
"""


@pytest.mark.slow
def test_a_ray_node_lost_mid_sweep_is_resumed_on_relaunch(tmp_path):
    """Two Ray nodes on localhost (a head and a worker started by ``ray start``, separate
    processes); the worker node is stopped once the two runs in flight (one per node)
    have a checkpoint: the run it held is recorded interrupted, the others finish; a
    relaunch finishes the interrupted ones from their checkpoints, and the store holds
    every run exactly once."""
    import threading

    sweep = tmp_path / "ray_study" / "sweep.gin"
    sweep.parent.mkdir()
    sweep.write_text(RESUMABLE)
    plan = load_plan(sweep, None, tmp_path / "sweeps")
    with ray_cli_cluster() as stop_worker:
        def stop_worker_after_a_checkpoint():
            while sum(any((plan.run_dir(r) / "checkpoints").glob("[0-9]*"))
                      for r in plan.runs) < 2:  # older checkpoints are pruned: any one
                time.sleep(0.2)
            time.sleep(2.0)
            stop_worker()

        killer = threading.Thread(target=stop_worker_after_a_checkpoint, daemon=True)
        killer.start()
        first = launch(plan, "ray", resources={"num_cpus": 1})
        killer.join(timeout=60)
        assert first["interrupted"] >= 1 and first["done"] + first["interrupted"] == 4, first
        lost = [r for r in store_of(plan).rows() if r["status"] == "interrupted"]
        second = launch(plan, "ray", resources={"num_cpus": 1})  # the head node alone
    assert second["done"] == 4, second
    rows = store_of(plan).rows()
    assert sorted(r["run_id"] for r in rows) == sorted(r.run_id for r in plan.runs)
    again = {r["run_id"]: r for r in rows}
    for r in lost:
        resumed = again[r["run_id"]]
        assert resumed["attempts"] == 2 and resumed["resumed_from"] >= 20, resumed
        assert resumed["step"] == 400
