"""The ahead-of-time check: the compiled train step's memory is the state and batch it
takes (exactly, on one device and per shard on 8), its FLOPs agree with the model's
accounting, and the CLI and the launcher refuse a run that does not fit."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxlab.data import DataConfig
from jaxlab.nn import ModelConfig
from jaxlab.tasks import LanguageModelTask
from jaxlab.train import state as train_state
from jaxlab.train.aot import MEMORY_ENV, compile_train_step
from jaxlab.train.config import TrainConfig
from jaxlab.train.loop import build_run_parts
from jaxlab.train.optimizer import OptimizerConfig

ROOT = Path(__file__).resolve().parents[2]
TINY = ModelConfig(d_model=32, n_layers=2, n_heads=2, max_seq_len=64)
HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None


def _cfg(mesh="data=1"):
    return TrainConfig(steps=10, batch_size=8, seq_len=32, mesh=mesh, progress=False)


def _shard_bytes(abstract) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs."""
    return sum(int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize
               for x in jax.tree.leaves(abstract))


@pytest.mark.parametrize("mesh,optimizer", [("data=1", "adamw"), ("data=1", "muon"),
                                            ("fsdp=8", "adamw")])
def test_arguments_are_the_state_and_batch_per_device(mesh, optimizer):
    task = LanguageModelTask(TINY, DataConfig(), 32)
    cfg, opt_cfg = _cfg(mesh), OptimizerConfig(optimizer=optimizer)
    report = compile_train_step(task, cfg, opt_cfg)
    parts = build_run_parts(task, cfg, opt_cfg)
    state = train_state.abstract_train_state(parts.mdef, parts.opt)
    ways = int(mesh.split("=")[1])  # the batch splits over the data axes
    batch_bytes = sum(np.asarray(v).nbytes for v in task.eval_batches(8, 1)[0].values()) // ways
    assert report.devices == int(mesh.split("=")[1])
    # jit drops inputs the step never reads: at most the optimizer's scalar `stats`, which
    # the update only writes (Muon's: 8 bytes; AdamW has none, so there it is exact)
    scalars = sum(x.dtype.itemsize for x in jax.tree.leaves(state["opt_state"]) if x.ndim == 0)
    gap = _shard_bytes(state) + batch_bytes - report.argument_bytes
    assert gap == 0 if optimizer == "adamw" else 0 <= gap <= scalars
    # params and optimizer state are donated: the outputs reuse their buffers
    donated = _shard_bytes({k: state[k] for k in ("params", "opt_state")})
    assert donated - gap <= report.alias_bytes <= donated
    assert report.fits and report.peak_bytes < report.memory_limit_bytes


@pytest.mark.parametrize("n_layers,scan", [(1, True), (2, False)])
def test_xla_flops_match_the_model_accounting_without_a_scanned_loop(n_layers, scan):
    """XLA's cost analysis counts a loop body once, so it is compared where the layers are
    not a scan. It counts the matmuls that jaxlab.nn's accounting counts plus every
    elementwise op (norms, softmax, the optimizer), so it lies a little above it: by 3.7%
    at d64 and 1.5% at d128 (measured); here d128 within [0%, 3%]."""
    model = ModelConfig(d_model=128, n_layers=n_layers, n_heads=4, max_seq_len=64,
                        scan_layers=scan)
    task = LanguageModelTask(model, DataConfig(), 32)
    report = compile_train_step(task, _cfg(), OptimizerConfig())
    analytic = task.flops_per_token()["train"] * 8 * 32
    assert analytic <= report.flops <= 1.03 * analytic, report.flops / analytic


def _compile_cli(*bindings, env=None, extra=()):
    cmd = [sys.executable, "-m", "jaxlab.train", "--compile_only", *extra,
           "--gin_file", "jaxlab/configs/train/cpu_smoke.gin",
           "--gin_bindings", "ModelConfig.d_model = 32", "--gin_bindings", "ModelConfig.n_layers = 1",
           "--gin_bindings", "ModelConfig.n_heads = 2", "--gin_bindings", "TrainConfig.seq_len = 32",
           *[a for b in bindings for a in ("--gin_bindings", b)]]
    import os
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, **(env or {})})


def test_compile_only_cli_prints_figures_and_exits_by_fit(tmp_path):
    ok = _compile_cli()
    assert ok.returncode == 0, ok.stderr[-2000:]
    out = json.loads(ok.stdout.strip().splitlines()[-1])
    assert out["compiled"]["fits"] is True and out["compiled"]["argument_bytes"] > 0
    assert "peak per device" in ok.stdout and out["model_flops_per_device"] > 0
    small = _compile_cli(env={MEMORY_ENV: "1e5"})  # a 100 KB device
    assert small.returncode == 1
    assert "fits NO" in small.stdout and "of 0.00 GiB" in small.stdout
    flag = _compile_cli(extra=["--memory_limit", "1MiB"])
    assert flag.returncode == 1, flag.stderr[-2000:]
    assert json.loads(flag.stdout.strip().splitlines()[-1])["compiled"][
        "memory_limit_bytes"] == 2 ** 20
    bad = _compile_cli(extra=["--memory_limit", "1 parsec"])
    assert bad.returncode == 2 and "memory size '1 parsec'" in bad.stderr


def test_launcher_check_refuses_a_sweep_that_does_not_fit(tmp_path):
    """Two sizes x two optimizers: the check compiles the larger model once per optimizer,
    names the run that does not fit, and nothing is launched."""
    sweep = tmp_path / "aot_study" / "sweep.gin"
    sweep.parent.mkdir()
    sweep.write_text("""
include 'jaxlab/configs/train/cpu_smoke.gin'
ModelConfig.n_layers = 1
ModelConfig.n_heads = 2
TrainConfig.seq_len = 32
TrainConfig.steps = 5
axis.model = {'ModelConfig.d_model': [16, 32], 'label': ['d16', 'd32']}
axis.opt = {'build_optimizer.optimizer': ['adamw', 'muon'], 'label': ['adamw', 'muon']}
sweep.product = ['model', 'opt']
""")

    from jaxlab.launch.check import runs_to_check
    from jaxlab.launch.expand import load_plan

    checked = runs_to_check(load_plan(sweep, None, tmp_path / "sweeps"))
    assert sorted(dict(r.labels)["opt"] for r in checked) == ["adamw", "muon"]
    assert {dict(r.labels)["model"] for r in checked} == {"d32"}
    cmd = [sys.executable, "-m", "jaxlab.launch", "--sweep", str(sweep),
           "--root", str(tmp_path / "sweeps"), "--check"]
    proc = subprocess.run([*cmd, "--memory_limit", "100KB"], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: run d32-") and "GiB per device" in err
    assert "not launched" in err
    assert not list((tmp_path / "sweeps").glob("*/*/summary.json"))
    if not HAS_LIBTPU:  # --topology reaches each run's compile: one clear error naming it
        proc = subprocess.run([*cmd, "--topology", "v5e:2x2"], capture_output=True,
                              text=True, cwd=ROOT, timeout=600)
        err = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and err.startswith("error: run d32-"), proc.stderr[-2000:]
        assert "cannot describe topology 'v5e:2x2'" in err


def test_a_given_device_set_is_compiled_for():
    """compile_train_step on 4 of the 8 devices (as for a described topology): the mesh
    spans those 4 and the state is split 4 ways."""
    task = LanguageModelTask(TINY, DataConfig(), 32)
    four = compile_train_step(task, _cfg("fsdp=4"), OptimizerConfig(), jax.devices()[:4])
    eight = compile_train_step(task, _cfg("fsdp=8"), OptimizerConfig())
    assert (four.devices, eight.devices) == (4, 8)
    assert four.argument_bytes > eight.argument_bytes


@pytest.mark.skipif(HAS_LIBTPU, reason="with libtpu installed TPU topologies are described")
def test_a_topology_that_cannot_be_described_is_one_clear_error():
    proc = _compile_cli(extra=["--topology", "v5e:2x2"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: cannot describe topology 'v5e:2x2' on tpu")
    assert "jax[tpu]" in err


@pytest.mark.skipif(not HAS_LIBTPU, reason="describing a TPU topology needs jax[tpu] (libtpu)")
def test_a_described_tpu_slice_is_compiled_for_from_this_machine():
    """With libtpu installed (no TPU needed), --topology v5e:2x2 compiles the step with the
    TPU compiler for 4 chips and checks it against a v5e chip's 16 GiB of HBM."""
    proc = _compile_cli("TrainConfig.mesh = 'data=4'", extra=["--topology", "v5e:2x2"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])["compiled"]
    assert (out["platform"], out["device_kind"], out["devices"]) == ("tpu", "TPU v5 lite", 4)
    assert out["memory_limit_bytes"] == 16 * 2**30 and out["fits"] is True


def test_the_compilers_out_of_memory_refusal_is_a_step_that_does_not_fit(monkeypatch):
    """A TPU compile refuses a program that cannot fit HBM; the check reports it as not
    fitting, with the temporaries and the limit the compiler named."""
    from types import SimpleNamespace

    import jaxlab.train.aot as aot

    message = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for "
               "HLO temporaries (16.18G) exceeds available HBM (15.75G).\nmore detail")

    class Refused:
        def compile(self):
            raise jax.errors.JaxRuntimeError(message)

    monkeypatch.setattr(aot, "jit_train_step",
                        lambda *a: SimpleNamespace(lower=lambda *args: Refused()))
    task = LanguageModelTask(TINY, DataConfig(), 32)
    out = aot.compile_train_step(task, _cfg("data=1"), OptimizerConfig(), jax.devices()[:1])
    assert out.fits is False and out.compile_error == message.splitlines()[0]
    assert out.temp_bytes == int(16.18 * 2**30) and out.memory_limit_bytes == int(15.75 * 2**30)
    assert out.peak_bytes == out.temp_bytes
    assert out.lines()[-1] == "compiler refused: " + message.splitlines()[0]


def test_a_described_tpu_device_is_checked_against_its_hbm():
    from types import SimpleNamespace

    from jaxlab.train.aot import TPU_HBM_BYTES, device_memory

    def chip(kind):
        return SimpleNamespace(platform="tpu", device_kind=kind, memory_stats=lambda: None)

    assert device_memory(chip("TPU v5 lite")) == 16 * 2**30 == TPU_HBM_BYTES["TPU v5 lite"]
    assert device_memory(chip("TPU v4")) == 32 * 2**30
    assert device_memory(chip("TPU v9 hypothetical")) is None
