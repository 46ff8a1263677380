"""Train one model: ``python -m jaxlab.train --workdir DIR --gin_file FILE [--gin_bindings ...]``.

Example (about a minute on 2 CPU cores)::

    python -m jaxlab.train --workdir runs/tiny \\
        --gin_file jaxlab/configs/models/d128.gin --gin_file jaxlab/configs/train/cpu_smoke.gin \\
        --gin_bindings "build_optimizer.optimizer = 'adamw'"

Re-running the same command on the same ``--workdir`` resumes from its last checkpoint.
``--compile_only`` trains nothing: it lowers and compiles the train step for the devices at
hand and prints its per-device memory (arguments, outputs, temporaries) and FLOPs, then a
last line of JSON; it exits 0 when the step fits the device memory, 1 when it does not
(:mod:`jaxlab.train.aot`).
On Linux the process keeps freed host memory for reuse (``jaxlab.train.host_memory``; about
15% faster steps on CPU); ``JAXLAB_KEEP_HOST_MEMORY=0`` turns that off.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags, logging

from jaxlab import cli_errors
from jaxlab.train.gin_setup import parse_gin, write_operative_config
from jaxlab.train.host_memory import keep_host_memory

FLAGS = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it has a checkpoint).")
GIN_FILES = flags.DEFINE_multi_string("gin_file", [], "Gin config files, applied in order.")
GIN_BINDINGS = flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, e.g. 'TrainConfig.steps = 100'.")
VERBOSE = flags.DEFINE_boolean("verbose", False, "Show the traceback of a bad-input error.")
COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-process run: host:port of process 0's coordinator.")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process run: processes.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process run: this process.")
DISTRIBUTED = flags.DEFINE_boolean(
    "distributed", False, "Join a multi-process run described by the environment "
    "(Cloud TPU, SLURM, GKE: jax.distributed.initialize()).")
COMPILE_ONLY = flags.DEFINE_boolean(
    "compile_only", False, "Compile the train step, print its memory and FLOPs, train nothing.")
MEMORY_LIMIT = flags.DEFINE_string(
    "memory_limit", None, "With --compile_only: the device memory to check against, e.g. "
    "'1GiB' (default: the device's own).")
TOPOLOGY = flags.DEFINE_string(
    "topology", None, "With --compile_only: compile for this TPU topology instead of the "
    "devices at hand, e.g. 'v5e:4x4' (needs jax[tpu]).")


def compile_only() -> int:
    """``--compile_only``: the AOT report of the configured run; 0 if it fits, else 1."""
    from jaxlab.tasks import build_task
    from jaxlab.train.aot import MEMORY_ENV, compile_train_step, parse_bytes, topology_devices
    from jaxlab.train.config import TrainConfig
    from jaxlab.train.gin_setup import optimizer_config

    cfg = TrainConfig()
    task = build_task(cfg.task, cfg.seq_len)
    if MEMORY_LIMIT.value:  # read by jaxlab.train.aot.device_memory
        os.environ[MEMORY_ENV] = str(parse_bytes(MEMORY_LIMIT.value))
    devices = topology_devices(TOPOLOGY.value) if TOPOLOGY.value else None
    report = compile_train_step(task, cfg, optimizer_config(), devices)
    analytic = (task.flops_per_token()["train"] * cfg.batch_size * task.tokens_per_example
                / report.devices)
    for line in report.lines():
        print(line)
    print(f"model FLOPs per step per device (jaxlab.nn accounting): {analytic:.3e}")
    print(json.dumps({"compiled": report.to_json(), "model_flops_per_device": analytic}))
    return 1 if report.fits is False else 0


def main(argv) -> int:
    del argv
    if COMPILE_ONLY.value:
        keep_host_memory()
        parse_gin(GIN_FILES.value, GIN_BINDINGS.value)
        return compile_only()
    if not FLAGS.value:
        raise ValueError("--workdir is required (the run directory; an existing one resumes)")
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
    keep_host_memory()  # before JAX starts its CPU client: see jaxlab.train.host_memory
    from jaxlab.train import distributed

    distributed.initialize(COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value,
                           auto=DISTRIBUTED.value)
    import jax

    from jaxlab.train.loop import train  # after flag parsing: JAX starts here
    from jaxlab.train.plots import plot_loss_curves

    parse_gin(GIN_FILES.value, GIN_BINDINGS.value)
    workdir = FLAGS.value
    writer = jax.process_index() == 0
    summary = train(workdir, on_setup=lambda: writer and write_operative_config(workdir))
    if writer:
        write_operative_config(workdir)
    if summary["status"] == "done" and writer:
        print(f"loss curves: {plot_loss_curves(workdir)}")
    print(json.dumps({k: summary[k] for k in ("status", "step", "final_train_loss",
                                              "final_val_loss", "wall_time_s")}))
    print(f"run directory: {workdir}")
    return 0 if summary["status"] == "done" else 3


def cli(argv: list[str]) -> int:
    """Parses flags, runs :func:`main`; bad input is one ``error:`` line and exit 2."""
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}; see --helpshort", file=sys.stderr)
        return cli_errors.EXIT_BAD_INPUT
    try:
        return main(rest)
    except cli_errors.BAD_INPUT as e:
        if VERBOSE.value:
            raise
        return cli_errors.report(e)


if __name__ == "__main__":
    sys.exit(cli(sys.argv))
