"""Ahead-of-time check of a run: lower and compile its train step for the devices at hand,
without initialising a parameter or reading a batch of data.

:func:`compile_train_step` builds the run's mesh, model definition and optimizer as the
training loop does (:func:`jaxlab.train.loop.build_run_parts`), lowers the jitted step on abstract
arrays that carry the loop's shardings, and reads the compiled executable's memory analysis
(arguments, outputs, temporaries, per device) and cost analysis (FLOPs per step, per
device). :func:`device_memory` is what a device may hold: the runtime's ``bytes_limit``
on a GPU/TPU, the host's RAM shared by the CPU devices. Used by
``python -m jaxlab.train --compile_only`` and ``python -m jaxlab.launch --check``.
"""

from __future__ import annotations

import dataclasses
import os
import re

import jax
import numpy as np

from jaxlab.sharding import batch_sharding
from jaxlab.tasks import Task
from jaxlab.train import state as train_state
from jaxlab.train.config import TrainConfig
from jaxlab.train.loop import build_run_parts
from jaxlab.train.optimizer import OptimizerConfig
from jaxlab.train.step import jit_train_step


@dataclasses.dataclass(frozen=True)
class CompiledStep:
    """What one compiled train step needs, per device.

    Attributes:
      platform, device_kind: of the devices compiled for; devices: how many (the mesh).
      argument_bytes, output_bytes, alias_bytes, temp_bytes, code_bytes: the executable's
        memory analysis, per device (``alias``: outputs written into donated inputs).
      flops: XLA's cost analysis of one step, per device (None if not reported). It
        counts the body of a loop once: with scan-stacked layers it is far below the
        model's FLOPs (``jaxlab.nn.flops_per_token``), which ``--compile_only`` prints too.
      memory_limit_bytes: what a device may hold (:func:`device_memory`; None: unknown).
      compile_error: the compiler's own out-of-memory refusal (a TPU compile fails when
        the program cannot fit HBM), with the temporaries and limit it names filled in;
        such a step does not fit.
    """

    platform: str
    device_kind: str
    devices: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    code_bytes: int
    flops: float | None
    memory_limit_bytes: int | None
    compile_error: str | None = None

    @property
    def peak_bytes(self) -> int:
        """Live at once on a device: arguments, outputs not aliased to a donated argument,
        temporaries and the program."""
        return (self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes
                + self.code_bytes)

    @property
    def fits(self) -> bool | None:
        if self.compile_error is not None:
            return False
        if self.memory_limit_bytes is None:
            return None
        return self.peak_bytes <= self.memory_limit_bytes

    def lines(self) -> list[str]:
        """The figures, one per line, for a terminal."""
        gib = 2.0 ** 30
        limit = ("unknown" if self.memory_limit_bytes is None
                 else f"{self.memory_limit_bytes / gib:.2f} GiB")
        fits = {None: "unknown", True: "yes", False: "NO"}[self.fits]
        return [
            f"devices: {self.devices} x {self.device_kind} ({self.platform})",
            f"per device: arguments {self.argument_bytes / gib:.3f} GiB, outputs "
            f"{self.output_bytes / gib:.3f} GiB (aliased {self.alias_bytes / gib:.3f}), "
            f"temporaries {self.temp_bytes / gib:.3f} GiB, code {self.code_bytes / gib:.3f} GiB",
            f"peak per device: {self.peak_bytes / gib:.3f} GiB of {limit}: fits {fits}",
            "XLA cost-analysis FLOPs per step per device (a scanned layer counted once): "
            + ("unknown" if self.flops is None else f"{self.flops:.3e}"),
        ] + ([f"compiler refused: {self.compile_error}"] if self.compile_error else [])

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "peak_bytes": self.peak_bytes, "fits": self.fits}


MEMORY_ENV = "JAXLAB_DEVICE_MEMORY_BYTES"
_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
          "KIB": 2 ** 10, "MIB": 2 ** 20, "GIB": 2 ** 30, "TIB": 2 ** 40}


def parse_bytes(text: str) -> int:
    """``'1GiB'``, ``'512MB'``, ``'8e10'`` -> bytes; a clear error for anything else."""
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).upper() if m else None
    if not m or unit not in _UNITS:
        raise ValueError(f"memory size {text!r}: want a number with an optional unit "
                         f"{sorted(u for u in _UNITS if u)}, e.g. '1GiB'")
    try:
        return int(float(m.group(1)) * _UNITS[unit])
    except ValueError:
        raise ValueError(f"memory size {text!r}: {m.group(1)!r} is not a number") from None


# HBM per chip of the TPU generations, by the device_kind JAX reports (Cloud TPU system
# architecture pages): a device described by a topology has no runtime to ask.
TPU_HBM_BYTES = {"TPU v4": 32 * 2**30, "TPU v5 lite": 16 * 2**30, "TPU v5": 95 * 2**30,
                 "TPU v6 lite": 32 * 2**30}


def device_memory(device: jax.Device, devices_sharing_host: int = 1) -> int | None:
    """Bytes ``device`` may hold: ``$JAXLAB_DEVICE_MEMORY_BYTES`` if set (``--memory_limit``
    sets it; to check for a smaller target device than the one at hand), else the
    runtime's ``bytes_limit`` on a GPU/TPU, else a TPU's HBM by its kind
    (:data:`TPU_HBM_BYTES`, for devices of a described topology), else on CPU the host's
    physical memory divided among the ``devices_sharing_host`` CPU devices."""
    if os.environ.get(MEMORY_ENV):
        return parse_bytes(os.environ[MEMORY_ENV])
    stats = None
    try:
        stats = device.memory_stats()
    except (AttributeError, NotImplementedError, RuntimeError):
        pass
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    if device.platform == "tpu" and device.device_kind in TPU_HBM_BYTES:
        return TPU_HBM_BYTES[device.device_kind]
    if device.platform == "cpu":
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
        return int(total // max(devices_sharing_host, 1))
    return None


def _abstract_batch(task: Task, batch_size: int, sharding) -> dict:
    """Shapes and dtypes of one global batch (from one eval batch of the task's data)."""
    example = task.eval_batches(batch_size, 1)[0]
    return {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype, sharding=sharding)
            for k, v in example.items()}


def topology_devices(topology: str, platform: str = "tpu") -> list:
    """The devices of a TPU topology described without its hardware (e.g. ``'v5e:4x4'``,
    :func:`jax.experimental.topologies.get_topology_desc`), to compile for a pod slice
    from a laptop; needs JAX's TPU support (libtpu) installed."""
    from jax.experimental import topologies

    try:
        return list(topologies.get_topology_desc(topology, platform).devices)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"cannot describe topology {topology!r} on {platform}: "
                         f"{str(e).splitlines()[0]} (install jax[tpu] for TPU topologies)"
                         ) from None


def compile_train_step(task: Task, cfg: TrainConfig, opt_cfg: OptimizerConfig | None = None,
                       devices=None) -> CompiledStep:
    """Lowers and compiles ``task``'s train step as :class:`~jaxlab.train.loop.Run` would
    run it under ``cfg`` (mesh, batch size, steps) and ``opt_cfg``, on ``devices`` (default
    every device; or :func:`topology_devices`); nothing is trained."""
    parts = build_run_parts(task, cfg, opt_cfg or OptimizerConfig(), devices)
    mesh = parts.mesh
    state = train_state.abstract_train_state(parts.mdef, parts.opt)
    batch = _abstract_batch(parts.task, cfg.batch_size, batch_sharding(mesh))
    step = jit_train_step(parts.mdef, parts.opt, mesh, parts.task)
    device = mesh.devices.flat[0]
    on_host = sum(1 for d in mesh.devices.flat if getattr(d, "platform", "") == "cpu")
    limit = device_memory(device, on_host)
    lowered = step.lower(state["params"], state["opt_state"], state["step"], batch)
    try:
        compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        return _refused(str(e), device, mesh.size, limit)
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jaxlibs: one dict per program
        cost = cost[0] if cost else None
    flops = float(cost["flops"]) if cost and "flops" in cost else None
    return CompiledStep(
        platform=device.platform, device_kind=device.device_kind, devices=mesh.size,
        argument_bytes=int(mem.argument_size_in_bytes),
        output_bytes=int(mem.output_size_in_bytes), alias_bytes=int(mem.alias_size_in_bytes),
        temp_bytes=int(mem.temp_size_in_bytes),
        code_bytes=int(mem.generated_code_size_in_bytes), flops=flops,
        memory_limit_bytes=limit)


def _refused(message: str, device, n_devices: int, limit: int | None) -> CompiledStep:
    """The report of a compile the compiler refused for lack of memory: the temporaries
    and the available memory it names (e.g. ``... HLO temporaries (16.18G) exceeds
    available HBM (15.75G)``), else zeros and ``limit``."""
    first = message.strip().splitlines()[0]
    m = re.search(r"\(([0-9.]+)([KMGT])\) exceeds available \w+ \(([0-9.]+)([KMGT])\)", first)
    scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    need = int(float(m.group(1)) * scale[m.group(2)]) if m else 0
    have = int(float(m.group(3)) * scale[m.group(4)]) if m else limit
    return CompiledStep(platform=device.platform, device_kind=device.device_kind,
                        devices=n_devices, argument_bytes=0, output_bytes=0, alias_bytes=0,
                        temp_bytes=need, code_bytes=0, flops=None, memory_limit_bytes=have,
                        compile_error=first)
