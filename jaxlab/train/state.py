"""Building the model and the sharded train state ``{"params", "opt_state", "step"}``.

Parameters are created *inside* a jitted function whose ``out_shardings`` come from their
logical axes, so each device only ever materialises its own shard.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from jaxlab.sharding import (
    AxisRules,
    abstract_with_shardings,
    replicated,
    shardings_like_params,
    state_shardings,
)
from jaxlab.tasks import Task
from jaxlab.train.optimizer import Optimizer


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """The static half of the model (``nnx.GraphDef``) and its abstract parameters."""

    graphdef: Any
    abstract_params: Any  # nnx.State of ShapeDtypeStruct
    param_shardings: Any  # nnx.State of NamedSharding


def model_def(task: Task, mesh: Mesh, seed: int = 0,
              rules: AxisRules = AxisRules()) -> ModelDef:
    """``task``'s model, abstract: its graph, parameter shapes and shardings on ``mesh``."""
    abstract = nnx.eval_shape(lambda: task.make_model(seed))
    graphdef, params, *rest = nnx.split(abstract, nnx.Param, ...)
    if any(jax.tree.leaves(r) for r in rest):
        raise ValueError("jaxlab's train step expects a model whose only state is nnx.Param")
    return ModelDef(graphdef, params, state_shardings(params, mesh, rules))


def init_params(task: Task, mdef: ModelDef, seed: int) -> Any:
    """Initialised parameters (an ``nnx.State``), sharded at creation."""

    def init():
        return nnx.state(task.make_model(seed), nnx.Param)

    return jax.jit(init, out_shardings=mdef.param_shardings)()


def _mesh_of(shardings: Any) -> Mesh:
    return jax.tree.leaves(shardings)[0].mesh


def init_train_state(task: Task, mdef: ModelDef, opt: Optimizer, seed: int) -> dict:
    """Fresh train state, laid out exactly as :func:`train_state_shardings` says (so the
    jitted step sees the same input shardings on its first call as on every later one)."""
    shardings = train_state_shardings(mdef, opt)
    params = init_params(task, mdef, seed)
    opt_state = jax.jit(opt.tx.init, out_shardings=shardings["opt_state"])(params)
    step = jax.device_put(jnp.zeros((), jnp.int32), shardings["step"])
    return {"params": params, "opt_state": opt_state, "step": step}


def train_state_shardings(mdef: ModelDef, opt: Optimizer) -> dict:
    """Shardings of the train state on ``mdef``'s mesh: optimizer-state leaves that mirror
    a parameter are sharded like it, the rest replicated."""
    mesh = _mesh_of(mdef.param_shardings)
    abstract_params = abstract_with_shardings(mdef.abstract_params, mdef.param_shardings)
    abstract_opt = jax.eval_shape(opt.tx.init, abstract_params)
    opt_shardings = shardings_like_params(abstract_opt, mdef.abstract_params,
                                          mdef.param_shardings, mesh)
    return {"params": mdef.param_shardings, "opt_state": opt_shardings,
            "step": replicated(mesh)}


def abstract_train_state(mdef: ModelDef, opt: Optimizer) -> dict:
    """Restore target: shapes, dtypes and this mesh's shardings of the train state."""
    shardings = train_state_shardings(mdef, opt)
    abstract = {
        "params": mdef.abstract_params,
        "opt_state": jax.eval_shape(opt.tx.init, mdef.abstract_params),
        "step": jax.ShapeDtypeStruct((), jnp.int32),
    }
    return abstract_with_shardings(abstract, shardings)
