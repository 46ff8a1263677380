"""The pure train and eval steps over ``nnx.split`` state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxlab.diagnostics import collect_stats
from jaxlab.partition import infos_list
from jaxlab.sharding import batch_sharding
from jaxlab.tasks import Task
from jaxlab.tasks.base import BARE_LOSS_KEY, UPDATE_INPUTS_KEY
from jaxlab.train import state as train_state
from jaxlab.train.optimizer import Optimizer


def loss_fn(graphdef: Any, params: Any, batch: dict, task: Task) -> tuple[jax.Array, dict]:
    """``task``'s loss (nats) and extra metrics of the model ``(graphdef, params)``."""
    return task.loss_and_metrics(nnx.merge(graphdef, params), batch)


def rms_by_label(tree: Any, infos: Any) -> dict[str, jax.Array]:
    """Root-mean-square of the leaves of ``tree`` grouped by parameter label."""
    sums: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for info, x in zip(infos_list(infos), jax.tree.leaves(tree)):
        sums[info.label] = sums.get(info.label, 0.0) + jnp.sum(jnp.square(x.astype(jnp.float32)))
        counts[info.label] = counts.get(info.label, 0) + x.size
    return {k: jnp.sqrt(sums[k] / counts[k]) for k in sums}


def make_train_step(graphdef: Any, opt: Optimizer, task: Task) -> Callable:
    """``(params, opt_state, step, batch) -> (params, opt_state, step + 1, metrics)``.

    The arrays the task returns under ``UPDATE_INPUTS_KEY`` (those ``opt.update_inputs``
    names) go to ``opt.tx.update`` as extra arguments, not into the metrics."""

    def train_step(params, opt_state, step, batch):
        (loss, extra), grads = jax.value_and_grad(
            lambda p: loss_fn(graphdef, p, batch, task), has_aux=True)(params)
        extra = dict(extra)
        inputs = extra.pop(UPDATE_INPUTS_KEY, {})
        missing = [k for k in opt.update_inputs if k not in inputs]
        if missing:
            raise ValueError(f"optimizer {opt.name!r} needs {missing} from the task each step; "
                             f"task {task.name!r} reported {sorted(inputs)} (see "
                             "Task.reporting)")
        updates, opt_state = opt.tx.update(grads, opt_state, params,
                                           **{k: inputs[k] for k in opt.update_inputs})
        params = optax.apply_updates(params, updates)
        metrics = {"loss": loss, **extra, "grad_norm": optax.tree.norm(grads),
                   "lr": opt.lr(step)}
        for label, v in rms_by_label(updates, opt.infos).items():
            metrics[f"update_rms/{label}"] = v
        metrics.update(collect_stats(opt_state))
        return params, opt_state, step + 1, metrics

    return train_step


def jit_train_step(mdef: train_state.ModelDef, opt: Optimizer, mesh: Any,
                   task: Task) -> Callable:
    """:func:`make_train_step` jitted as the training loop runs it: params, optimizer state
    and step in and out with their shardings (the first two donated), the batch sharded
    over ``mesh``'s data axes."""
    shardings = train_state.train_state_shardings(mdef, opt)
    state_sh = (shardings["params"], shardings["opt_state"], shardings["step"])
    return jax.jit(make_train_step(mdef.graphdef, opt, task),
                   in_shardings=(*state_sh, batch_sharding(mesh)),
                   out_shardings=(*state_sh, None), donate_argnums=(0, 1))


def make_eval_step(graphdef: Any, task: Task) -> Callable:
    """``(params, batch) -> {"loss", **task metrics}``; the loss is the task's bare
    objective (``BARE_LOSS_KEY``) where its training loss adds a regulariser."""

    def eval_step(params, batch):
        loss, extra = loss_fn(graphdef, params, batch, task)
        extra = {k: v for k, v in extra.items() if k != UPDATE_INPUTS_KEY}
        return {"loss": extra.pop(BARE_LOSS_KEY, loss), **extra}

    return eval_step

