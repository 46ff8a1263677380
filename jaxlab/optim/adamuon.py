"""AdaMuon (Si et al., arXiv 2507.11005): an element-wise second moment on the
orthogonalised update, RMS-aligned, for hidden matrices; AdamW for the rest.

Checked against the authors' code (github Chongjie-Si/AdaMuon, the GPT-2 optimizer of the
paper's v2/v3, whose Algorithm 1 it implements). Per matrix ``W (fan_in, fan_out)``::

    M = beta M + (1 - beta) G;   U = beta M + (1 - beta) G  (Nesterov; else U = M)
    O = NS(sign(U))
    V = beta2 V + (1 - beta2) O * O                  element-wise (beta2 = beta by default)
    Ohat = O / (sqrt(V) + eps)
    W <- W - lr rms_target sqrt(fan_in fan_out) Ohat / (||Ohat||_F + eps) - lr wd W

so the update RMS is ``rms_target`` (0.2, AdamW's, whose lr and decay carry over). No
bias correction of ``V``: the rescale divides it out (up to eps). ``sign=False`` with
``beta2 = 0.999`` is the first version (paper v1, no sign). ``docs/methods.md``
(AdaMuon) lists the defaults.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.optim.arg_checks import check_positive, check_rate
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


class AdaMuonState(NamedTuple):
    """``mu``: params-shaped momentum; ``nu``: params-shaped float32 second moment of the
    orthogonalised update; ``stats``: scalars of the last step."""

    count: jax.Array
    mu: Any
    nu: Any
    stats: dict[str, jax.Array]


def scale_by_adamuon(infos: Any, *, beta: float = 0.95, beta2: float | None = None,
                     nesterov: bool = True, sign: bool = True, eps: float = 1e-8,
                     rms_target: float = 0.2, stack: bool = True, shard: bool = True,
                     **ns_kwargs) -> optax.GradientTransformation:
    """AdaMuon's direction for the matrix leaves of a tree (others masked out).

    Args:
      infos: ParamInfo tree (a prefix of the params).
      beta, nesterov: momentum. beta2: EMA rate of ``V`` (None: ``beta``, the paper's).
      sign: orthogonalise ``sign(U)`` (v2/v3) instead of ``U`` (v1).
      eps: in ``sqrt(V) + eps`` and the Frobenius rescale. rms_target: update RMS.
      ns_kwargs: Newton-Schulz settings (:func:`jaxlab.optim.muon.make_ns_fn`).
    """
    beta2 = beta if beta2 is None else beta2
    check_rate("beta", beta)
    check_rate("beta2", beta2)
    check_positive("eps", eps)
    check_positive("rms_target", rms_target)
    mats = matrix_infos(infos)
    ns_fn = make_ns_fn(**ns_kwargs)

    def init(params):
        zero = jnp.zeros((), jnp.float32)
        return AdaMuonState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params),
                            jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params),
                            {"adamuon/update_norm": zero, "adamuon/nu_mean": zero})

    def update(updates, state, params=None):
        del params
        g_leaves, treedef = jax.tree.flatten(updates)
        if len(g_leaves) != len(mats):
            raise ValueError(f"scale_by_adamuon got {len(g_leaves)} leaves for {len(mats)} "
                             "matrices; mask the non-matrix leaves (see adamuon())")
        pairs = [momentum_direction(g, m, state.count, beta, nesterov, False)
                 for g, m in zip(g_leaves, treedef.flatten_up_to(state.mu))]
        directions = [jnp.sign(p[1]) if sign else p[1] for p in pairs]
        ortho = orthogonalize_leaves(directions, mats, ns_fn, stack=stack, shard=shard)
        out, new_nu = [], []
        for o, nu, info, g in zip(ortho, treedef.flatten_up_to(state.nu), mats, g_leaves):
            o = o.astype(jnp.float32)
            nu = beta2 * nu + (1 - beta2) * jnp.square(o)
            ohat = info.as_matrices(o / (jnp.sqrt(nu) + eps))
            norm = jnp.linalg.norm(ohat, axis=(1, 2), keepdims=True) + eps
            size = rms_target * math.sqrt(info.fan_in * info.fan_out)
            out.append(info.from_matrices(size * ohat / norm).astype(g.dtype))
            new_nu.append(nu)
        count = sum(x.size for x in new_nu)
        stats = {"adamuon/update_norm": global_norm(out),
                 "adamuon/nu_mean": (sum(jnp.sum(x) for x in new_nu) / count if count
                                     else jnp.zeros((), jnp.float32))}
        return (jax.tree.unflatten(treedef, out),
                AdaMuonState(state.count + 1, jax.tree.unflatten(treedef, [p[0] for p in pairs]),
                             jax.tree.unflatten(treedef, new_nu), stats))

    return optax.GradientTransformation(init, update)


def adamuon(learning_rate: optax.ScalarOrSchedule, infos: Any = None, *, beta: float = 0.95,
            beta2: float | None = None, nesterov: bool = True, sign: bool = True,
            eps: float = 1e-8, rms_target: float = 0.2, ns_coeffs="keller",
            ns_steps: int = 5, ns_dtype="float32", weight_decay: float = 0.1,
            adam_learning_rate: optax.ScalarOrSchedule | None = None, adam_b1: float = 0.9,
            adam_b2: float = 0.95, adam_eps: float = 1e-8, adam_weight_decay: float = 0.1,
            wd_mult: Any = None, stack: bool = True,
            shard: bool = True) -> optax.GradientTransformation:
    """AdaMuon (arXiv 2507.11005) on hidden matrices, AdamW on embeddings, head, vectors.

    Defaults are the paper's v2/v3 (sign before NS, ``beta2 = beta = 0.95``, ``eps =
    1e-8``, update RMS 0.2) with the decay of the authors' GPT-2 runs (0.1, decoupled,
    both groups). The gin name ``adamuon`` is this function with these defaults.
    ``infos``: the :func:`jaxlab.partition.describe_params` tree (None: at init).
    """
    kwargs = {k: v for k, v in locals().items() if k not in ("learning_rate", "infos")}
    matrix_kwargs = dict(beta=beta, beta2=beta2, nesterov=nesterov, sign=sign, eps=eps,
                         rms_target=rms_target, ns_coeffs=ns_coeffs, ns_steps=ns_steps,
                         ns_dtype=ns_dtype, stack=stack, shard=shard)
    if infos is None:  # check the arguments now, not at init
        check_group_args(learning_rate=learning_rate, **kwargs)
        scale_by_adamuon({}, **matrix_kwargs)
        return deferred(lambda i: adamuon(learning_rate, i, **kwargs))
    return with_matrix_optimizer(
        scale_by_adamuon(infos, **matrix_kwargs), infos, learning_rate,
        weight_decay=weight_decay, adam_learning_rate=adam_learning_rate, adam_b1=adam_b1,
        adam_b2=adam_b2, adam_eps=adam_eps, adam_weight_decay=adam_weight_decay,
        wd_mult=wd_mult)


__all__ = ["AdaMuonState", "adamuon", "scale_by_adamuon"]
