"""NorMuon (Li et al., arXiv 2510.05491): Muon's orthogonalised update, normalised per
neuron by a second-moment EMA, for hidden matrices; AdamW for the rest.

Checked against the authors' code (github zichongli5/NorMuon, ``normuon.py``). Per matrix
``W (fan_in, fan_out)`` with gradient ``G``::

    M = beta M + (1 - beta) G;   U = beta M + (1 - beta) G  (Nesterov; else U = M)
    O = NS(U)
    v = beta2 v + (1 - beta2) mean_over_fan_in(O^2)      one value per output neuron
    Ohat = O / (sqrt(v) + eps)
    moonlight (the paper):   D = rms_target sqrt(fan_in fan_out) Ohat / ||Ohat||_F
    keller (the authors' code): D = sqrt(max(1, fan_out / fan_in)) ||O||_F Ohat / ||Ohat||_F
    W <- W - lr D - lr wd W

``v`` starts at 0 with no bias correction (the Frobenius rescale divides any common
factor out). The authors' code stores PyTorch ``(out, in)`` weights and averages over
``in``: one ``v`` per output neuron, ``v_axis='fan_out'`` here. modded-nanogpt's variant
averages over the shorter side instead (one ``v`` per neuron of the longer side,
``v_axis='long'``). ``docs/methods.md`` (NorMuon) lists the defaults and the differences
between the paper and the code.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.optim.arg_checks import check_choice, check_positive, check_rate
from jaxlab.optim.matrix_stacking import orthogonalize_leaves
from jaxlab.optim.muon import (
    check_group_args,
    deferred,
    global_norm,
    make_ns_fn,
    matrix_infos,
    momentum_direction,
    with_matrix_optimizer,
)
from jaxlab.partition import ParamInfo

V_AXES = ("fan_out", "fan_in", "long")
UPDATE_SCALES = ("moonlight", "keller")
_TINY = float(jnp.finfo(jnp.float32).tiny)


class NorMuonState(NamedTuple):
    """``mu``: params-shaped momentum; ``v``: per matrix leaf ``(num_matrices, n_v)``, the
    per-neuron second moment; ``stats``: scalars of the last step."""

    count: jax.Array
    mu: Any
    v: tuple
    stats: dict[str, jax.Array]


def neuron_axis(info: ParamInfo, v_axis: str) -> int:
    """Axis of ``(N, fan_in, fan_out)`` that keeps one ``v`` per neuron (1 or 2); the
    mean runs over the other one."""
    check_choice("v_axis", v_axis, V_AXES)
    if v_axis == "long":
        return 2 if info.fan_out >= info.fan_in else 1
    return 2 if v_axis == "fan_out" else 1


def normalize_per_neuron(o: jax.Array, v: jax.Array, axis: int, *, beta2: float,
                         eps: float) -> tuple[jax.Array, jax.Array]:
    """``(Ohat, new v)`` for ``o (N, fan_in, fan_out)``, ``v (N, n_v)``: the EMA of the mean
    square over the axis that is not ``axis``, and ``o / (sqrt(v) + eps)``."""
    v = beta2 * v + (1 - beta2) * jnp.mean(jnp.square(o), axis=3 - axis)
    return o / (jnp.sqrt(jnp.expand_dims(v, 3 - axis)) + eps), v


def scale_by_normuon(infos: Any, *, beta: float = 0.95, beta2: float = 0.95,
                     nesterov: bool = True, eps: float = 1e-10, v_axis: str = "fan_out",
                     update_scale: str = "moonlight", rms_target: float = 0.2,
                     stack: bool = True, shard: bool = True,
                     **ns_kwargs) -> optax.GradientTransformation:
    """NorMuon's direction ``D`` for the matrix leaves of a tree (others masked out).

    Args:
      infos: ParamInfo tree (a prefix of the params).
      beta, nesterov: momentum. beta2: EMA rate of ``v``. eps: added to ``sqrt(v)``.
      v_axis: ``'fan_out'`` (one ``v`` per output neuron, the paper's), ``'fan_in'`` or
        ``'long'`` (per neuron of the longer side, modded-nanogpt's).
      update_scale: ``'moonlight'`` (RMS ``rms_target``, the paper) or ``'keller'`` (the
        authors' code: Muon's norm and Keller's shape factor).
      ns_kwargs: Newton-Schulz settings (:func:`jaxlab.optim.muon.make_ns_fn`).
    """
    check_rate("beta", beta)
    check_rate("beta2", beta2)
    check_positive("eps", eps)
    check_positive("rms_target", rms_target)
    check_choice("v_axis", v_axis, V_AXES)
    check_choice("update_scale", update_scale, UPDATE_SCALES)
    mats = matrix_infos(infos)
    ns_fn = make_ns_fn(**ns_kwargs)
    axes = [neuron_axis(i, v_axis) for i in mats]

    def init(params):
        mu = jax.tree.map(jnp.zeros_like, params)
        v = tuple(jnp.zeros((i.num_matrices, i.matrix_shape[ax - 1]), jnp.float32)
                  for i, ax in zip(mats, axes))
        zero = jnp.zeros((), jnp.float32)
        return NorMuonState(jnp.zeros((), jnp.int32), mu, v,
                            {"normuon/update_norm": zero, "normuon/v_max_over_min": zero})

    def update(updates, state, params=None):
        del params
        g_leaves, treedef = jax.tree.flatten(updates)
        if len(g_leaves) != len(mats):
            raise ValueError(f"scale_by_normuon got {len(g_leaves)} leaves for {len(mats)} "
                             "matrices; mask the non-matrix leaves (see normuon())")
        pairs = [momentum_direction(g, m, state.count, beta, nesterov, False)
                 for g, m in zip(g_leaves, treedef.flatten_up_to(state.mu))]
        ortho = orthogonalize_leaves([p[1] for p in pairs], mats, ns_fn, stack=stack,
                                     shard=shard)
        out, new_v, ratios = [], [], []
        for k, info in enumerate(mats):
            o = info.as_matrices(ortho[k]).astype(jnp.float32)
            ohat, v = normalize_per_neuron(o, state.v[k], axes[k], beta2=beta2, eps=eps)
            hat_norm = jnp.maximum(jnp.linalg.norm(ohat, axis=(1, 2), keepdims=True), _TINY)
            if update_scale == "moonlight":
                size = rms_target * math.sqrt(info.fan_in * info.fan_out)
            else:
                size = (math.sqrt(max(1.0, info.fan_out / info.fan_in))
                        * jnp.linalg.norm(o, axis=(1, 2), keepdims=True))
            out.append(info.from_matrices(size * ohat / hat_norm).astype(g_leaves[k].dtype))
            new_v.append(v)
            ratios.append(jnp.max(v) / jnp.maximum(jnp.min(v), _TINY))
        stats = {"normuon/update_norm": global_norm(out),
                 "normuon/v_max_over_min": jnp.max(jnp.stack(ratios)) if ratios
                 else jnp.zeros((), jnp.float32)}
        return (jax.tree.unflatten(treedef, out),
                NorMuonState(state.count + 1, jax.tree.unflatten(treedef, [p[0] for p in pairs]),
                             tuple(new_v), stats))

    return optax.GradientTransformation(init, update)


def normuon(learning_rate: optax.ScalarOrSchedule, infos: Any = None, *, beta: float = 0.95,
            beta2: float = 0.95, nesterov: bool = True, eps: float = 1e-10,
            v_axis: str = "fan_out", update_scale: str = "moonlight",
            rms_target: float = 0.2, ns_coeffs="keller", ns_steps: int = 5,
            ns_dtype="float32", weight_decay: float = 0.1,
            adam_learning_rate: optax.ScalarOrSchedule | None = None, adam_b1: float = 0.9,
            adam_b2: float = 0.95, adam_eps: float = 1e-8, adam_weight_decay: float = 0.1,
            wd_mult: Any = None, stack: bool = True,
            shard: bool = True) -> optax.GradientTransformation:
    """NorMuon (arXiv 2510.05491) on hidden matrices, AdamW on embeddings, head, vectors.

    Defaults: the paper's RMS-0.2 scale and per-output-neuron ``v`` with the authors'
    ``beta2 = 0.95``, Nesterov and ``eps = 1e-10``; decay 0.1 on both groups as
    :func:`jaxlab.optim.muon` (so AdamW's lr and decay carry over). The gin name
    ``normuon`` is this function with these defaults. ``infos``: the
    :func:`jaxlab.partition.describe_params` tree (None: labels the tree at init).
    """
    kwargs = {k: v for k, v in locals().items() if k not in ("learning_rate", "infos")}
    matrix_kwargs = dict(beta=beta, beta2=beta2, nesterov=nesterov, eps=eps, v_axis=v_axis,
                         update_scale=update_scale, rms_target=rms_target,
                         ns_coeffs=ns_coeffs, ns_steps=ns_steps, ns_dtype=ns_dtype,
                         stack=stack, shard=shard)
    if infos is None:  # check the arguments now, not at init
        check_group_args(learning_rate=learning_rate, **kwargs)
        scale_by_normuon({}, **matrix_kwargs)
        return deferred(lambda i: normuon(learning_rate, i, **kwargs))
    return with_matrix_optimizer(
        scale_by_normuon(infos, **matrix_kwargs), infos, learning_rate,
        weight_decay=weight_decay, adam_learning_rate=adam_learning_rate, adam_b1=adam_b1,
        adam_b2=adam_b2, adam_eps=adam_eps, adam_weight_decay=adam_weight_decay,
        wd_mult=wd_mult)


__all__ = ["UPDATE_SCALES", "V_AXES", "NorMuonState", "neuron_axis", "normalize_per_neuron",
           "normuon", "scale_by_normuon"]
