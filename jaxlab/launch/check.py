"""``python -m jaxlab.launch --check``: compile the largest runs of a sweep before launching.

Each checked run is compiled by ``python -m jaxlab.train --compile_only`` in a subprocess
(so the launcher never holds an accelerator), with the run's own gin files and bindings.
The checked runs are those of the largest model (most parameters, then most tokens per
step), one per optimizer configuration (gin files and ``build_optimizer.optimizer``): the
optimizer state is part of what must fit. A run that does not fit its device stops the
launch with an error naming it and its figures.
"""

from __future__ import annotations

import json
import os
import subprocess

from jaxlab.launch.expand import Plan, RunSpec
from jaxlab.launch.job import train_command, train_env
from jaxlab.launch.spec import SweepError

GIB = 2.0 ** 30


def runs_to_check(plan: Plan, limit: int = 8) -> list[RunSpec]:
    """The largest model's runs, one per optimizer configuration, at most ``limit``."""
    def size(r: RunSpec) -> tuple:
        return (r.figure("params_total"), r.figure("batch_tokens"))

    top = max(size(r) for r in plan.runs)
    chosen, seen = [], set()
    for r in plan.runs:
        b = dict(r.bindings)
        key = (r.gin_files, b.get("build_optimizer.optimizer"))
        if size(r) == top and key not in seen:
            seen.add(key)
            chosen.append(r)
    return chosen[:limit]


def compile_run(plan: Plan, run: RunSpec, timeout_s: float = 1800,
                memory_limit: str | None = None, topology: str | None = None) -> dict:
    """The ``--compile_only`` JSON of ``run`` (raises SweepError if it cannot compile);
    ``memory_limit`` (e.g. ``'1GiB'``) replaces the device's own memory in the check;
    ``topology`` (e.g. ``'v5e:4x4'``) compiles for that described TPU slice instead of
    the devices at hand."""
    cmd = [*train_command(run.to_json(), plan.run_dir(run)), "--compile_only"]
    if memory_limit:
        cmd += ["--memory_limit", memory_limit]
    if topology:
        cmd += ["--topology", topology]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                          env=train_env(os.cpu_count() or 1))  # the devices a run sees
    lines = proc.stdout.strip().splitlines()
    if proc.returncode not in (0, 1) or not lines or not lines[-1].startswith("{"):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise SweepError(f"run {run.name} does not compile: " + " | ".join(tail))
    return json.loads(lines[-1])


def check_plan(plan: Plan, limit: int = 8, echo=print, memory_limit: str | None = None,
               topology: str | None = None) -> list[dict]:
    """Compiles :func:`runs_to_check`; prints one line per run; raises SweepError naming
    every run that does not fit. Returns ``[{"run", **compiled figures}]``."""
    rows = []
    for run in runs_to_check(plan, limit):
        out = compile_run(plan, run, memory_limit=memory_limit, topology=topology)
        c = out["compiled"]
        rows.append({"run": run.name, **c,
                     "model_flops_per_device": out["model_flops_per_device"]})
        limit_txt = ("unknown" if c["memory_limit_bytes"] is None
                     else f"{c['memory_limit_bytes'] / GIB:.2f}")
        echo(f"check {run.name}: peak {c['peak_bytes'] / GIB:.3f} GiB per device of "
             f"{limit_txt} GiB ({c['devices']} x {c['device_kind']}), arguments "
             f"{c['argument_bytes'] / GIB:.3f} GiB, temporaries {c['temp_bytes'] / GIB:.3f} "
             f"GiB, model FLOPs per step per device {out['model_flops_per_device']:.3e}: "
             + {True: "fits", False: "DOES NOT FIT", None: "limit unknown"}[c["fits"]])
    bad = [r for r in rows if r["fits"] is False]
    if bad:
        raise SweepError("; ".join(
            f"run {r['run']} needs {r['peak_bytes'] / GIB:.3f} GiB per device, the device "
            f"holds {r['memory_limit_bytes'] / GIB:.3f} GiB" for r in bad)
            + ": not launched (shrink the batch or model, or shard it over more devices)")
    return rows
