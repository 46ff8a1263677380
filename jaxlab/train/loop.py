"""The training loop: resumable, asynchronous, with validation, checkpoints and a summary.

The loop dispatches step N before it reads step N-1's metrics, so the host never makes
the device wait for logging. A non-finite loss stops the run with status ``diverged``.
A run directory with a checkpoint resumes from it by default, and the resumed run's
parameters and metric history equal those of an uninterrupted run.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxlab.data import DataConfig, process_rows, shard_batch
from jaxlab.mesh import make_mesh, mesh_spec_string
from jaxlab.nn import ModelConfig
from jaxlab.sharding import batch_sharding
from jaxlab.sparse.accounting import count_nonzeros
from jaxlab.sparse.training import block_kernel_size
from jaxlab.tasks import LanguageModelTask, Task, build_task
from jaxlab.train import state as train_state
from jaxlab.train.checkpoint import Checkpointer
from jaxlab.train.config import TrainConfig
from jaxlab.train.gin_setup import optimizer_config
from jaxlab.train.metrics import MetricWriter
from jaxlab.train.optimizer import Optimizer, OptimizerConfig, build_optimizer
from jaxlab.train.step import jit_train_step, make_eval_step

FINAL_LOSS_WINDOW = 100  # final_train_loss averages the last min(100, steps // 20) steps


@dataclasses.dataclass
class _Accumulators:
    """Running figures that a resumed run must continue exactly (saved with checkpoints)."""

    recent_losses: list[float] = dataclasses.field(default_factory=list)
    window_losses: list[float] = dataclasses.field(default_factory=list)
    nonzero_sum: float = 0.0          # sum over steps of non-zero non-embedding params
    nonzero_steps: int = 0
    wall_time_s: float = 0.0


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)


@dataclasses.dataclass(frozen=True)
class Due:
    """What finishing a step triggers."""

    evaluate: bool
    save: bool
    spectral: bool


def due(done: int, cfg: TrainConfig) -> Due:
    """What step ``done`` (steps finished, 1-based) triggers: validation every
    ``eval_every`` steps, a checkpoint every ``checkpoint_every``, both at the last step;
    spectral norms every ``spectral_every`` (0 turns each off)."""
    last = done == cfg.steps
    every = lambda n: bool(n) and done % n == 0  # noqa: E731
    return Due(evaluate=last or every(cfg.eval_every),
               save=last or every(cfg.checkpoint_every),
               spectral=every(cfg.spectral_every))


class PendingMetrics:
    """Step N's metrics, left on the device until step N+1 is dispatched, so reading them
    (a device-to-host copy) never leaves the device idle."""

    def __init__(self):
        self._item: tuple[int, dict] | None = None

    def hold(self, done: int, metrics: dict) -> None:
        self._item = (done, metrics)

    def take(self) -> tuple[int, dict] | None:
        item, self._item = self._item, None
        return item


class _MetricLog:
    """Reads finished steps' metrics on the host: the divergence check, the windowed train
    loss, the accumulators a resumed run continues, ``metrics.jsonl`` and the bar."""

    def __init__(self, cfg: TrainConfig, tokens_per_step: int, acc: _Accumulators,
                 writer: MetricWriter | None, bar, t0: float):
        self.cfg, self.tokens_per_step, self.acc = cfg, tokens_per_step, acc
        self.writer, self.bar, self.t0 = writer, bar, t0
        self.prior_wall = acc.wall_time_s
        window = max(1, min(FINAL_LOSS_WINDOW, cfg.steps // 20))
        self.recent = collections.deque(acc.recent_losses, maxlen=window)
        self.last_done: int | None = None
        self.diverged_step: int | None = None
        self._t_log, self._tokens_log = time.perf_counter(), 0

    def wall_time(self) -> float:
        """Seconds of training over every session of this run."""
        return self.prior_wall + time.perf_counter() - self.t0

    def read_pending(self, pending: PendingMetrics) -> bool:
        """Reads the held step, if any; False when its loss is not finite."""
        item = pending.take()
        if item is None or self.read(*item, {}):
            return True
        self.diverged_step = item[0]
        return False

    def read(self, done: int, metrics: dict, extra: dict) -> bool:
        """Reads step ``done``'s metrics and logs them; False when the loss is not finite."""
        cfg, acc = self.cfg, self.acc
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        loss = m["loss"]
        if not math.isfinite(loss):
            if self.writer:
                self.writer.write(done, {"loss": loss, "diverged": 1.0})
            return False
        self.recent.append(loss)
        acc.window_losses.append(loss)
        if "sparse/nonzero_non_embedding" in m:
            acc.nonzero_sum += m["sparse/nonzero_non_embedding"]
            acc.nonzero_steps += 1
        self._tokens_log += self.tokens_per_step
        if done % cfg.log_every == 0 or done == cfg.steps or extra:
            now = time.perf_counter()
            record = {"tokens": done * self.tokens_per_step,
                      "train_loss": float(np.mean(acc.window_losses)),
                      "tokens_per_sec": self._tokens_log / max(now - self._t_log, 1e-9),
                      **m, **extra}
            if self.writer:
                self.writer.write(done, record)
            self.bar.set_postfix(loss=f"{record['train_loss']:.3f}",
                                 tok_s=f"{record['tokens_per_sec']:.3g}", refresh=False)
            acc.window_losses.clear()
            self._t_log, self._tokens_log = now, 0
        return True


@dataclasses.dataclass
class _Outcome:
    """How the steps ended: status, last step and the last validation figures."""

    status: str = "done"
    step: int | None = None
    diverged_step: int | None = None
    val: dict = dataclasses.field(default_factory=dict)
    val_avg: float | None = None

    def diverged(self, step: int | None) -> _Outcome:
        self.status, self.step, self.diverged_step = "diverged", step, step
        return self


@dataclasses.dataclass(frozen=True)
class RunParts:
    """What a run is built from before any array exists: the mesh, the task as trained
    (block-sparse kernel, reported optimizer inputs), the model definition and the
    optimizer."""

    mesh: Any
    task: Task
    mdef: train_state.ModelDef
    opt: Optimizer


def build_run_parts(task: Task, cfg: TrainConfig, opt_cfg: OptimizerConfig,
                    devices=None) -> RunParts:
    """The mesh (over ``devices``, default all), task, model definition and optimizer of a
    run (checked: the batch splits over the mesh's data axes); shared by :class:`Run` and
    :mod:`jaxlab.train.aot`."""
    task.check(cfg.batch_size)
    mesh = make_mesh(cfg.mesh, devices)
    data_ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.batch_size % data_ways:
        raise ValueError(
            f"TrainConfig.batch_size={cfg.batch_size} is not divisible by the "
            f"{data_ways} data-parallel devices of mesh {cfg.mesh!r}"
        )
    block = block_kernel_size(mesh.size, opt_cfg.sparsity)
    if block is not None:
        # Block-sparse training multiplies its hidden matrices through the Pallas kernel.
        task = task.with_block_sparse(block)
    mdef = train_state.model_def(task, mesh, cfg.seed)
    opt = build_optimizer(mdef.abstract_params, cfg.steps, opt_cfg)
    # QK-clip and the like: the task reports what the optimizer's update takes.
    return RunParts(mesh, task.reporting(opt.update_inputs), mdef, opt)


class Run:
    """One training run of ``task`` in ``workdir`` (see :func:`train`); after :meth:`run`,
    ``final_state`` holds the last ``{"params", "opt_state"}`` (sharded on ``mesh``)."""

    def __init__(self, workdir: str | Path, task: Task, cfg: TrainConfig,
                 opt_cfg: OptimizerConfig | None = None):
        self.workdir = Path(workdir)
        self.cfg = cfg
        parts = build_run_parts(task, cfg, opt_cfg or OptimizerConfig())
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mesh, self.mdef, self.opt = parts.mesh, parts.mdef, parts.opt
        self.task = task = parts.task
        self.tokens_per_step = cfg.batch_size * task.tokens_per_example
        self.counts = task.param_counts()
        self.flops = task.flops_per_token()
        self.is_writer = jax.process_index() == 0
        self.final_state: dict | None = None

    # ----------------------------------------------------------------- set-up
    def _restore_or_init(self, ckpt: Checkpointer, it) -> tuple[dict, _Accumulators, int | None]:
        resume = ckpt.latest_step()
        source, step = (ckpt, resume) if resume is not None else (None, None)
        if source is None and self.cfg.init_from:
            parent, _, k = self.cfg.init_from.rpartition("@")
            source = Checkpointer(Path(parent) / "checkpoints", read_only=True, use_async=False)
            step = int(k)
        if source is None:
            state = train_state.init_train_state(self.task, self.mdef, self.opt, self.cfg.seed)
            return state, _Accumulators(), None
        state, data = source.restore(step, train_state.abstract_train_state(self.mdef, self.opt))
        it.set_state(data["iterator"])
        return state, _Accumulators(**data["accumulators"]), resume

    # ----------------------------------------------------------------- the loop
    def run(self) -> dict:
        """Trains from the last checkpoint (or from scratch) to ``cfg.steps``; returns the
        summary. Status ``done``, ``diverged`` (a non-finite loss; never checkpointed),
        ``failed`` or ``interrupted`` (re-raised after the summary is written)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        ckpt = Checkpointer(self.workdir / "checkpoints", cfg.keep_checkpoints, cfg.async_checkpoint)
        it = iter(self.task.train_dataset(cfg.batch_size, cfg.seed, jax.process_index(),
                                          jax.process_count()))
        state, acc, resume = self._restore_or_init(ckpt, it)
        start = int(state["step"])
        writer = (MetricWriter(self.workdir, resume_step=resume, mirrors=self._mirrors())
                  if self.is_writer else None)
        bar = tqdm(total=cfg.steps, initial=start, disable=not (cfg.progress and self.is_writer),
                   desc=self.workdir.name, unit="step", mininterval=2.0, dynamic_ncols=True)
        log = _MetricLog(cfg, self.tokens_per_step, acc, writer, bar, t0)
        log.last_done = start
        self._write_summary("running", start, log)
        try:
            outcome = self._steps(state, start, it, ckpt, log)
        except BaseException as e:
            failed = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            self._write_summary(failed, log.last_done, log, error=f"{type(e).__name__}: {e}")
            raise
        finally:
            bar.close()
            ckpt.close()
            if writer:
                writer.close()
        return self._write_summary(outcome.status, outcome.step, log, val=outcome.val,
                                   val_avg=outcome.val_avg,
                                   diverged_step=outcome.diverged_step)

    def _steps(self, state: dict, start: int, it, ckpt: Checkpointer,
               log: _MetricLog) -> _Outcome:
        """Steps ``start .. cfg.steps``: dispatch step N, then read step N-1's metrics
        (:class:`PendingMetrics`), evaluate / checkpoint where :func:`due` says."""
        cfg = self.cfg
        step_fn = jit_train_step(self.mdef, self.opt, self.mesh, self.task)
        eval_fn = jax.jit(make_eval_step(self.mdef.graphdef, self.task))
        bsh = batch_sharding(self.mesh)
        val_batches = [shard_batch(process_rows(b), bsh) for b in
                       self.task.eval_batches(cfg.batch_size, cfg.eval_batches)]
        spectral = self._spectral_fn()
        params, opt_state, step_arr = state["params"], state["opt_state"], state["step"]
        del state
        out = _Outcome()
        pending = PendingMetrics()

        def ended(diverged_at: int | None = None) -> _Outcome:
            self.final_state = {"params": params, "opt_state": opt_state}
            return out.diverged(diverged_at) if diverged_at is not None else out

        for step in range(start, cfg.steps):
            batch = shard_batch(next(it), bsh)
            params, opt_state, step_arr, metrics = step_fn(params, opt_state, step_arr, batch)
            if not log.read_pending(pending):
                return ended(log.diverged_step)
            done = log.last_done = step + 1
            log.bar.update(1)
            when, extra = due(done, cfg), {}
            if when.evaluate:
                out.val = self._evaluate(eval_fn, params, val_batches)
                extra.update({f"val_{k}": v for k, v in out.val.items()})
                if self.opt.eval_params is not None:
                    out.val_avg = self._evaluate(
                        eval_fn, self.opt.eval_params(params, opt_state), val_batches)["loss"]
                    extra["val_loss_avg"] = out.val_avg
            if when.spectral:
                extra.update(spectral(params))
            if when.evaluate or when.save or extra:
                # Read this step now: never checkpoint a diverged state, and keep the
                # accumulators that go into the checkpoint exact.
                if not log.read(done, metrics, extra):
                    return ended(done)
            else:
                pending.hold(done, metrics)
            if when.save:
                log.acc.recent_losses = list(log.recent)
                log.acc.wall_time_s = log.wall_time()
                ckpt.save(done, {"params": params, "opt_state": opt_state, "step": step_arr},
                          {"iterator": it.get_state(),
                           "accumulators": dataclasses.asdict(log.acc)})
                self._write_summary("running", done, log)
        if not log.read_pending(pending):
            return ended(log.diverged_step)
        out.step = cfg.steps
        return ended()

    # ----------------------------------------------------------------- helpers
    def _evaluate(self, eval_fn, params, batches) -> dict[str, float]:
        """Each metric of ``eval_fn`` averaged over the validation batches."""
        per_batch = jax.device_get([eval_fn(params, b) for b in batches])
        return {k: float(np.mean([m[k] for m in per_batch])) for k in per_batch[0]}

    def _spectral_fn(self):
        if not self.cfg.spectral_every:
            return None
        from jaxlab.train.spectral import top_singular_values

        fn = jax.jit(lambda p: top_singular_values(p, self.opt.infos))

        def spectral(params) -> dict[str, float]:
            out = jax.device_get(fn(params))
            return {k: float(np.max(v)) for k, v in out.items()}

        return spectral

    def _mirrors(self) -> tuple:
        """Extra metric writers the config asks for (Weights & Biases)."""
        if self.cfg.wandb_project is None:
            return ()
        from jaxlab.train.wandb_writer import WandbWriter

        train = {f.name: getattr(self.cfg, f.name) for f in dataclasses.fields(self.cfg)}
        config = {"train": _jsonable(train), "optimizer": self.opt.name,
                  "lr": self.opt.peak_lr, "optimizer_hparams": _jsonable(self.opt.hparams),
                  "params": self.counts, **_jsonable(self.task.summary())}
        return (WandbWriter(self.workdir, self.cfg.wandb_project, self.cfg.wandb_mode,
                            config),)

    def _write_summary(self, status: str, step: int | None, log: _MetricLog,
                       val: dict | None = None, val_avg: float | None = None,
                       diverged_step: int | None = None, error: str | None = None) -> dict:
        cfg, recent, acc = self.cfg, log.recent, log.acc
        step = step if step is not None else 0
        tokens = step * self.tokens_per_step
        val = val or {}
        summary = {
            "status": status,
            "step": step,
            "steps": cfg.steps,
            "final_train_loss": float(np.mean(recent)) if recent else None,
            "final_val_loss": val.get("loss"),
            **{f"final_val_{k}": v for k, v in val.items() if k != "loss"},
            "tokens_seen": tokens,
            "batch_tokens": self.tokens_per_step,
            "batch_size": cfg.batch_size,
            "seq_len": self.task.tokens_per_example,
            "params_total": self.counts["total"],
            "params_non_embedding": self.counts["non_embedding"],
            # all experts of a mixture of experts (params_non_embedding: the active ones)
            "params_non_embedding_stored": self.counts.get("non_embedding_stored",
                                                           self.counts["non_embedding"]),
            "flops_per_token": self.flops["train"],
            "train_flops": self.flops["train"] * tokens,
            "optimizer": self.opt.name,
            "lr": self.opt.peak_lr,
            "weight_decay": self.opt.hparams.get("weight_decay"),
            "optimizer_hparams": _jsonable(self.opt.hparams),
            "sparsity": self.opt.sparsity,
            "mesh": mesh_spec_string(self.mesh),
            "wall_time_s": log.wall_time(),
            **self.task.summary(),
        }
        if val_avg is not None:
            summary["final_val_loss_avg"] = val_avg
        if diverged_step is not None:
            summary["diverged_step"] = diverged_step
        if error is not None:
            summary["error"] = error
        final = self.final_state
        if final is not None and status in ("done", "diverged"):
            counts = count_nonzeros(final["params"], self.opt.infos)
            summary["nonzero_params"] = counts["total"]
            summary["nonzero_non_embedding"] = counts["non_embedding"]
        if acc.nonzero_steps:
            n_bar = acc.nonzero_sum / acc.nonzero_steps
            summary["n_bar"] = n_bar
            summary["train_flops_sparse"] = 6.0 * acc.nonzero_sum * self.tokens_per_step
        if self.is_writer:
            _write_json(self.workdir / "summary.json", summary)
        return summary


def _jsonable(values: dict) -> dict:
    """``values`` with anything JSON cannot hold written as its repr."""
    def one(v):
        try:
            json.dumps(v)
            return v
        except TypeError:
            return repr(v)
    return {k: one(v) for k, v in values.items()}


def train(workdir: str | Path, model_cfg: ModelConfig | None = None,
          data_cfg: DataConfig | None = None, cfg: TrainConfig | None = None,
          on_setup=None, task: Task | None = None,
          opt_cfg: OptimizerConfig | None = None) -> dict:
    """Trains (or resumes) one model in ``workdir``; returns the summary dict.

    What is trained: ``task`` if given; else the LM of ``model_cfg`` and ``data_cfg`` if
    either is given; else ``cfg.task`` built from gin (``ModelConfig.d_model = 256``,
    ``ViTConfig.d_model = 64`` etc.). Configs left as None are built from gin (the
    optimizer's by :func:`jaxlab.train.gin_setup.optimizer_config`). Writes
    ``metrics.jsonl``, TensorBoard files under ``tb/``, checkpoints under
    ``checkpoints/`` and ``summary.json`` into ``workdir``. ``on_setup()`` is called once
    the model and optimizer are built, before the first step.
    """
    cfg = cfg or TrainConfig()
    opt_cfg = opt_cfg or optimizer_config()
    if task is None and (model_cfg is not None or data_cfg is not None):
        task = LanguageModelTask(model_cfg or ModelConfig(), data_cfg or DataConfig(),
                                 cfg.seq_len)
    run = Run(workdir, build_task(cfg.task if task is None else task, cfg.seq_len), cfg,
              opt_cfg)
    if on_setup is not None:
        on_setup()  # e.g. write the operative gin config before the (long) loop
    return run.run()
