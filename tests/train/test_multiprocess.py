"""Multi-process training on localhost: two CPU processes of 4 fake devices each (gloo
collectives, mesh data=2,fsdp=4) against one process of 8 devices on the same global
batch; a SIGKILLed pair of processes resumes; checkpoints move between 2 and 1 processes.

Both layouts see the same global batches in the same row order (each process feeds its
contiguous rows, jaxlab.data.pipeline.batch_rows_of_process), so what differs is only how
XLA splits the reductions over 8 devices in 1 or 2 processes (gloo sums across the two):
measured after 30 steps, losses within 1.8e-7 relative and parameters within 2.4e-7
absolute; the checks use rtol 1e-6 on losses and rtol 1e-6 / atol 1e-6 on parameters.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxlab.launch.job import process_commands
from jaxlab.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
STEPS, EVERY = 30, 10


def _args(workdir: Path) -> list[str]:
    b = ["ModelConfig.d_model = 32", "ModelConfig.n_layers = 1", "ModelConfig.n_heads = 2",
         "TrainConfig.seq_len = 32", "TrainConfig.batch_size = 8",
         f"TrainConfig.steps = {STEPS}", "TrainConfig.log_every = 1",
         "TrainConfig.eval_every = 0", "TrainConfig.eval_batches = 2",
         f"TrainConfig.checkpoint_every = {EVERY}", "TrainConfig.progress = False",
         "TrainConfig.async_checkpoint = False", "TrainConfig.mesh = 'data=2,fsdp=4'"]
    return [sys.executable, "-m", "jaxlab.train", "--workdir", str(workdir),
            "--gin_file", "jaxlab/configs/train/cpu_smoke.gin",
            *[a for x in b for a in ("--gin_bindings", x)]]


def _start(workdir: Path, processes: int) -> list[subprocess.Popen]:
    """``processes`` training processes sharing 8 fake CPU devices between them, with the
    launcher's own commands (jaxlab.launch.job.process_commands)."""
    procs = []
    for p, (cmd, env) in enumerate(process_commands(_args(workdir), dict(os.environ),
                                                    processes, cpu_devices=8 // processes)):
        log = open(f"{workdir}.p{p}.log", "a")
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
    return procs


def _train(workdir: Path, processes: int) -> None:
    procs = _start(workdir, processes)
    codes = [p.wait(timeout=600) for p in procs]
    logs = "".join(Path(f"{workdir}.p{p}.log").read_text()[-1500:] for p in range(processes))
    assert codes == [0] * processes, logs


def _losses(workdir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(workdir / "metrics.jsonl") if "loss" in r]


def _params(workdir: Path, step: int = STEPS) -> list[np.ndarray]:
    """The checkpoint's parameters on this process's first device, whatever process count
    wrote it (the restore target's shapes come from the checkpoint's metadata)."""
    path = workdir / "checkpoints" / str(step) / "state"
    ckpt = ocp.StandardCheckpointer()
    meta = ckpt.metadata(path)
    meta = getattr(meta, "item_metadata", meta)  # newer orbax wraps the tree
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                          dict(meta))
    return [np.asarray(x) for x in jax.tree.leaves(ckpt.restore(path, target)["params"])]


def _assert_same_run(a: Path, b: Path) -> None:
    la, lb = _losses(a), _losses(b)
    assert len(la) == len(lb) == STEPS
    np.testing.assert_allclose(lb, la, rtol=1e-6)
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """The same run by one process of 8 devices and by two processes of 4."""
    base = tmp_path_factory.mktemp("multiprocess")
    one, two = base / "one", base / "two"
    _train(one, 1)
    _train(two, 2)
    return base, one, two


def test_two_processes_equal_one_process_of_eight_devices(references):
    _, one, two = references
    _assert_same_run(one, two)
    summary = json.loads((two / "summary.json").read_text())
    assert summary["status"] == "done" and summary["mesh"].startswith("data=2,fsdp=4")
    # only process 0 wrote: one metrics line per step, not two
    assert [r["step"] for r in read_metrics(two / "metrics.jsonl") if "loss" in r] == \
        list(range(1, STEPS + 1))


@pytest.mark.slow
def test_sigkilled_processes_resume_as_an_uninterrupted_run(references):
    base, _, two = references
    cut = base / "cut"
    procs = _start(cut, 2)
    deadline = time.time() + 300
    while not (cut / "checkpoints" / str(EVERY)).is_dir() and time.time() < deadline:
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)  # one process dies; its peer cannot go on
    procs[1].wait()
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    assert json.loads((cut / "summary.json").read_text())["step"] < STEPS, "killed too late"
    _train(cut, 2)
    _assert_same_run(two, cut)


@pytest.mark.slow
@pytest.mark.parametrize("written_by,restored_by", [(2, 1), (1, 2)])
def test_a_checkpoint_moves_between_process_counts(references, written_by, restored_by):
    """Step 10 of one layout's run, resumed by the other layout, ends where both
    uninterrupted runs end."""
    base, one, two = references
    source = two if written_by == 2 else one
    moved = base / f"from{written_by}to{restored_by}"
    shutil.copytree(source, moved)
    for step in range(EVERY + EVERY, STEPS + 1, EVERY):
        shutil.rmtree(moved / "checkpoints" / str(step))
    (moved / "summary.json").unlink()
    _train(moved, restored_by)
    _assert_same_run(one, moved)


@pytest.mark.slow
def test_the_launcher_runs_a_sweep_run_as_two_processes(references, tmp_path):
    """sweep.processes_per_run = 2 (4 fake CPU devices each): the local backend trains the
    run as one 2-process JAX run, equal to the run started by hand."""
    from jaxlab.launch.expand import load_plan
    from jaxlab.launch.runner import launch

    _, _, two = references
    args = _args(tmp_path)
    bindings = [args[i + 1] for i, a in enumerate(args) if a == "--gin_bindings"]
    sweep = tmp_path / "mp_study" / "sweep.gin"
    sweep.parent.mkdir()
    sweep.write_text("include 'jaxlab/configs/train/cpu_smoke.gin'\n" + "\n".join(bindings)
                     + "\nsweep.processes_per_run = 2\nsweep.cpu_devices_per_process = 4\n")
    plan = load_plan(sweep, None, tmp_path / "sweeps")
    counts = launch(plan, "local", workers=1, threads_per_run=1,
                    processes_per_run=plan.setting("processes_per_run"),
                    cpu_devices_per_process=plan.setting("cpu_devices_per_process"))
    assert counts["done"] == 1, counts
    run_dir = plan.run_dir(plan.runs[0])
    assert (run_dir / "train.p1.log").exists()
    _assert_same_run(two, run_dir)
