"""jaxlab's real jitted train step, set up for timing (imported as ``_train_setup`` by
``train_step.py`` and ``optimizer_step.py``; ``make bench`` skips ``_*.py``).

It runs ``jaxlab.train.step.jit_train_step`` (the training loop's own jitted step) with
the registry's optimizer on a ``data=1`` mesh, params and optimizer state donated and
carried from call to call. The batch is placed with
``jax.device_put`` rather than ``jaxlab.data.shard_batch`` (one process, same result), so
these benchmarks need no ``grain`` on a GPU machine that lacks it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.mesh import make_mesh
from jaxlab.nn import ModelConfig
from jaxlab.sharding import batch_sharding
from jaxlab.tasks import LanguageModelTask
from jaxlab.train import state as train_state
from jaxlab.train.gin_setup import optimizer_config
from jaxlab.train.optimizer import Optimizer, build_optimizer
from jaxlab.train.step import jit_train_step

# GPT-2 small (124M) with the vocabulary padded to a multiple of 128, as in nanoGPT.
GPT2_SMALL = dict(d_model=768, n_layers=12, n_heads=12, max_seq_len=1024, vocab_size=50304)


@dataclasses.dataclass
class TrainStepRunner:
    """``step()`` runs one train step and returns its loss; ``update()`` runs the
    optimizer's jitted ``tx.update`` alone on fixed gradients of the params' shapes."""

    opt: Optimizer
    step: Callable[[], jax.Array]
    update: Callable[[], Any]


def jaxlab_train_step(cfg: ModelConfig, batch: int, seq: int, optimizer: str = "adamw",
                      gin_bindings: Sequence[str] = (), seed: int = 0) -> TrainStepRunner:
    """Builds ``optimizer`` (a registry name; ``gin_bindings`` e.g. ``muon.ns_dtype =
    'bfloat16'``) and the train step on random tokens ``(batch, seq + 1)``."""
    gin.clear_config()
    gin.parse_config(list(gin_bindings))
    mesh = make_mesh("data=1")
    task = LanguageModelTask(cfg, seq_len=seq)
    mdef = train_state.model_def(task, mesh)
    opt = build_optimizer(mdef.abstract_params, 1000, optimizer_config(optimizer=optimizer))
    state = train_state.init_train_state(task, mdef, opt, seed=seed)
    step = jit_train_step(mdef, opt, mesh, task)
    tok = np.random.default_rng(seed).integers(0, cfg.vocab_size, (batch, seq + 1))
    tok = tok.astype(np.int32)
    batch_arr = jax.device_put({"inputs": tok[:, :-1], "targets": tok[:, 1:]},
                               batch_sharding(mesh))
    carry = [state["params"], state["opt_state"], state["step"]]

    def run_step() -> jax.Array:
        carry[0], carry[1], carry[2], metrics = step(carry[0], carry[1], carry[2], batch_arr)
        return metrics["loss"]

    update = jax.jit(opt.tx.update)
    fixed: list = []  # (grads, opt_state, params), built on the first update() call

    def run_update() -> Any:
        if not fixed:  # a fresh state: the step donates (deletes) the carried one
            own = train_state.init_train_state(task, mdef, opt, seed=seed)
            grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), own["params"])
            fixed.extend([grads, own["opt_state"], own["params"]])
        return update(*fixed)

    return TrainStepRunner(opt=opt, step=run_step, update=run_update)
