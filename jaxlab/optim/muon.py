"""Muon: momentum orthogonalised by Newton-Schulz, for hidden matrices; AdamW for the rest.

Keller Jordan's Muon and Moonlight ("Muon is Scalable for LLM Training", arXiv 2502.16982).
Per hidden matrix ``W (fan_in, fan_out)`` with gradient ``G``::

    M <- beta M + (1 - beta) G
    U  = beta M + (1 - beta) G          (Nesterov; plain: U = M)
    W <- W - lr (scale NS(U)) - lr wd W

with ``scale`` ``keller`` = ``sqrt(max(1, fan_out / fan_in))`` or ``moonlight`` =
``0.2 sqrt(max(fan_in, fan_out))`` (update RMS 0.2, matching AdamW, so AdamW's lr and wd
carry over; Moonlight eq. 4). Which leaves are matrices comes from
:func:`jaxlab.partition.describe_params`: scan-stacked ``(L, in, out)`` and expert
``(E, in, out)`` weights are batches of matrices and multi-axis kernels are flattened to
``fan_in x fan_out``; embeddings, the output head and vectors go to AdamW with their own
lr, betas and weight decay.

Newton-Schulz runs once per distinct matrix shape on a stack of all matrices of that
shape (:mod:`jaxlab.optim.matrix_stacking`), sharded along the stack under a mesh so NS
never needs a collective, and in cache-sized chunks on a single CPU (``ns_chunk``).
``ns_impl='pallas'`` uses the Pallas kernel in ``pallas_kernels/newton_schulz`` instead of
XLA dots.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.optim import layerwise as layerwise_lib
from jaxlab.optim.arg_checks import (
    check_choice,
    check_learning_rate,
    check_nonnegative,
    check_positive,
    check_rate,
)
from jaxlab.optim.matrix_stacking import in_chunks, orthogonalize_leaves
from jaxlab.optim.newton_schulz import (
    PRECONDITIONERS,
    VARIANTS,
    default_norm_scale,
    newton_schulz,
    ns_coefficients,
)
from jaxlab.partition import MATRIX, ParamInfo, describe_params, infos_list

UPDATE_SCALES = ("keller", "moonlight", "none")
NS_IMPLS = ("xla", "pallas")
MUON_GROUP, ADAM_GROUP = "muon", "adam"


def _is_info(x: Any) -> bool:
    return isinstance(x, ParamInfo)


def matrix_infos(infos: Any) -> list[ParamInfo]:
    """The ``matrix``-labelled ParamInfos of a ``describe_params`` tree, in leaf order."""
    return [i for i in infos_list(infos) if i.label == MATRIX]


def shape_scale(info: ParamInfo, update_scale: str | float, rms_target: float = 0.2) -> float:
    """Multiplier of a matrix's orthogonalised update.

    ``keller``: ``sqrt(max(1, fan_out / fan_in))``; ``moonlight``: ``rms_target
    sqrt(max(fan_in, fan_out))`` (a full-rank orthogonal ``A x B`` matrix has RMS
    ``1 / sqrt(max(A, B))``, so the update RMS is ``rms_target``); ``none``: 1; a float: it.
    """
    if isinstance(update_scale, (int, float)) and not isinstance(update_scale, bool):
        return float(update_scale)
    if update_scale == "keller":
        return math.sqrt(max(1.0, info.fan_out / info.fan_in))
    if update_scale == "moonlight":
        return rms_target * math.sqrt(max(info.fan_in, info.fan_out))
    if update_scale == "none":
        return 1.0
    raise ValueError(f"unknown update_scale {update_scale!r}; valid: {UPDATE_SCALES} or a float")


def make_ns_fn(ns_coeffs="keller", ns_steps: int = 5, *, eps: float = 1e-7,
               norm_scale: float | None = None, ns_dtype="float32", ns_variant: str = "auto",
               ns_impl: str = "xla", ns_chunk: int | str = "auto",
               ns_precondition: str = "frobenius",
               interpret: bool | None = None) -> Callable:
    """``(N, fan_in, fan_out) -> (N, fan_in, fan_out)`` orthogonaliser (see
    :func:`jaxlab.optim.newton_schulz.newton_schulz` for the arguments; ``ns_chunk``:
    matrices per sequential call, :func:`jaxlab.optim.matrix_stacking.chunk_size`;
    ``ns_precondition``: ``'frobenius'`` or ``'aol'``, XLA only)."""
    return in_chunks(_ns_fn(ns_coeffs, ns_steps, eps, norm_scale, ns_dtype, ns_variant,
                            ns_impl, interpret, ns_precondition), ns_chunk)


def check_ns_args(ns_coeffs, ns_steps, eps, norm_scale, ns_variant, ns_impl,
                  ns_dtype="float32", ns_precondition="frobenius") -> None:
    """Newton-Schulz settings, checked when an optimizer is built (names the bad one)."""
    try:
        dtype = jnp.dtype(ns_dtype)
    except TypeError:
        dtype = None
    if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
        raise ValueError(f"ns_dtype {ns_dtype!r} not supported; valid: 'float32', 'bfloat16'")
    if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or ns_steps < 1:
        raise ValueError(f"ns_steps must be an integer >= 1, got {ns_steps!r}")
    ns_coefficients(ns_coeffs, ns_steps)
    check_positive("eps", eps)
    if norm_scale is not None:
        check_positive("norm_scale", norm_scale)
    check_choice("ns_variant", ns_variant, VARIANTS)
    check_choice("ns_impl", ns_impl, NS_IMPLS)
    check_choice("ns_precondition", ns_precondition, PRECONDITIONERS)
    if ns_precondition != "frobenius" and ns_impl != "xla":
        raise ValueError(f"ns_precondition={ns_precondition!r} needs ns_impl='xla' (the "
                         f"Pallas kernel normalises by the Frobenius norm), got {ns_impl!r}")


def _ns_fn(ns_coeffs, ns_steps, eps, norm_scale, ns_dtype, ns_variant, ns_impl, interpret,
           ns_precondition="frobenius"):
    """The orthogonaliser of one call, batched over the leading axis (XLA or Pallas)."""
    check_ns_args(ns_coeffs, ns_steps, eps, norm_scale, ns_variant, ns_impl, ns_dtype,
                  ns_precondition)
    table = ns_coefficients(ns_coeffs, ns_steps)  # Python floats
    dtype = jnp.dtype(ns_dtype)
    if ns_impl == "xla":
        return lambda x: newton_schulz(x, ns_coeffs, ns_steps, eps=eps, norm_scale=norm_scale,
                                       compute_dtype=dtype, variant=ns_variant,
                                       precondition=ns_precondition)
    if ns_impl == "pallas":
        from pallas_kernels.newton_schulz.ops import newton_schulz as pallas_ns

        scale = default_norm_scale(ns_coeffs) if norm_scale is None else float(norm_scale)

        def fn(x):
            return pallas_ns(x, table, eps=eps, interpret=interpret, compute_dtype=dtype,
                             norm_scale=scale).astype(x.dtype)

        return fn
    raise ValueError(f"unknown ns_impl {ns_impl!r}; valid: {NS_IMPLS}")


class MuonState(NamedTuple):
    """``count`` (steps), ``mu`` (momentum, params-shaped), ``stats`` (scalars of the last
    step, for diagnostics)."""

    count: jax.Array
    mu: Any
    stats: dict[str, jax.Array]


def momentum_direction(g, mu, count, beta: float, nesterov: bool, bias_correction: bool):
    """New momentum and the direction to orthogonalise. ``bias_correction`` reproduces
    optax.contrib.muon's Adam-style correction (NS is scale-free, so it only changes the
    Nesterov mix of ``mu`` and ``g``)."""
    mu = beta * mu + (1 - beta) * g.astype(mu.dtype)
    t = (count + 1).astype(jnp.float32)
    if not bias_correction:
        return mu, (beta * mu + (1 - beta) * g if nesterov else mu)
    if nesterov:
        return mu, (beta * mu / (1 - beta ** (t + 1)) + (1 - beta) * g / (1 - beta ** t))
    return mu, mu / (1 - beta ** t)


def scale_by_muon(infos: Any, *, beta: float = 0.95, nesterov: bool = True,
                  bias_correction: bool = False, update_scale: str | float = "keller",
                  rms_target: float = 0.2, mu_dtype=None, stack: bool = True,
                  shard: bool = True, **ns_kwargs) -> optax.GradientTransformation:
    """Muon's direction ``scale NS(momentum)`` for the matrix leaves of a tree.

    ``infos``: ParamInfo tree (a prefix of the params); the transform sees only the
    ``matrix`` leaves (other leaves must be masked out, as ``optax.partition`` does).
    ``ns_kwargs`` go to :func:`make_ns_fn`.
    """
    mats = matrix_infos(infos)
    ns_fn = make_ns_fn(**ns_kwargs)
    scales = [shape_scale(i, update_scale, rms_target) for i in mats]

    def init(params):
        mu = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype or p.dtype), params)
        zero = jnp.zeros((), jnp.float32)
        return MuonState(jnp.zeros((), jnp.int32), mu,
                         {"muon/momentum_norm": zero, "muon/update_norm": zero})

    def update(updates, state, params=None):
        del params
        g_leaves, treedef = jax.tree.flatten(updates)
        if len(g_leaves) != len(mats):
            raise ValueError(f"scale_by_muon got {len(g_leaves)} leaves for {len(mats)} "
                             "matrices; mask the non-matrix leaves (see muon())")
        mu_leaves = treedef.flatten_up_to(state.mu)
        pairs = [momentum_direction(g, m, state.count, beta, nesterov, bias_correction)
                 for g, m in zip(g_leaves, mu_leaves)]
        new_mu = [p[0] for p in pairs]
        ortho = orthogonalize_leaves([p[1] for p in pairs], mats, ns_fn, stack=stack,
                                     shard=shard)
        out = [(s * o).astype(g.dtype) for s, o, g in zip(scales, ortho, g_leaves)]
        stats = {"muon/momentum_norm": global_norm(new_mu),
                 "muon/update_norm": global_norm(out)}
        return (jax.tree.unflatten(treedef, out),
                MuonState(state.count + 1, jax.tree.unflatten(treedef, new_mu), stats))

    return optax.GradientTransformation(init, update)


def global_norm(leaves) -> jax.Array:
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


def decoupled_weight_decay(weight_decay: float, infos: Any, labels: tuple[str, ...],
                           wd_mult: Any = None) -> optax.GradientTransformation:
    """``u += wd p`` on leaves whose label is in ``labels`` (``wd_mult``: per-leaf
    multipliers, a prefix tree of floats, from the layerwise rules)."""
    mult = wd_mult if wd_mult is not None else jax.tree.map(lambda i: 1.0, infos,
                                                             is_leaf=_is_info)
    per_leaf = jax.tree.map(lambda i, m: weight_decay * m if i.label in labels else 0.0,
                            infos, mult, is_leaf=_is_info)
    return layerwise_lib.add_decayed_weights_by_leaf(per_leaf)


def group_labels(infos: Any) -> Callable[[Any], Any]:
    """``params -> labels``: ``'muon'`` for matrices, ``'adam'`` for embeddings, heads and
    vectors, as a tree of the params' full structure (so ``optax.partition`` masks leaves
    inside ``nnx.Variable`` nodes and the masked moments stay params-shaped)."""
    prefix = jax.tree.map(lambda i: MUON_GROUP if i.label == MATRIX else ADAM_GROUP, infos,
                          is_leaf=_is_info)
    return lambda params: jax.tree.map(lambda lab, sub: jax.tree.map(lambda _: lab, sub),
                                       prefix, params)


def with_adamw_for_the_rest(matrix_tx: optax.GradientTransformation, infos: Any, *,
                            adam_learning_rate, adam_b1: float, adam_b2: float,
                            adam_eps: float, adam_weight_decay: float, adam_nesterov: bool,
                            wd_mult: Any = None, mu_dtype=None) -> optax.GradientTransformation:
    """``optax.partition``: ``matrix_tx`` on matrices, AdamW (decay on embeddings and
    heads, not on vectors) on everything else."""
    adam = optax.chain(
        optax.scale_by_adam(b1=adam_b1, b2=adam_b2, eps=adam_eps, mu_dtype=mu_dtype,
                            nesterov=adam_nesterov),
        decoupled_weight_decay(adam_weight_decay, infos, ("embedding", "head"), wd_mult),
        optax.scale_by_learning_rate(adam_learning_rate))
    return optax.partition({MUON_GROUP: matrix_tx, ADAM_GROUP: adam}, group_labels(infos))


def check_group_args(*, learning_rate, weight_decay, adam_learning_rate, adam_b1, adam_b2,
                     adam_eps, adam_weight_decay, **_) -> None:
    """The learning rates (>= 0 or a schedule), decays (>= 0), AdamW betas ([0, 1)) and
    eps (> 0) of a Muon-family optimizer, checked at construction."""
    check_learning_rate("learning_rate", learning_rate)
    if adam_learning_rate is not None:
        check_learning_rate("adam_learning_rate", adam_learning_rate)
    check_nonnegative("weight_decay", weight_decay)
    check_nonnegative("adam_weight_decay", adam_weight_decay)
    check_rate("adam_b1", adam_b1)
    check_rate("adam_b2", adam_b2)
    check_positive("adam_eps", adam_eps)


def with_matrix_optimizer(direction: optax.GradientTransformation, infos: Any,
                          learning_rate: optax.ScalarOrSchedule, *, weight_decay: float,
                          adam_learning_rate, adam_b1: float, adam_b2: float,
                          adam_eps: float, adam_weight_decay: float, wd_mult: Any = None,
                          adam_nesterov: bool = False,
                          mu_dtype=None) -> optax.GradientTransformation:
    """The whole optimizer of a Muon-family method: ``direction`` (a transform of the
    matrix leaves) with decoupled decay and ``learning_rate`` on the matrices, AdamW on
    the rest (lr ``adam_learning_rate``, None: ``learning_rate``). Checks the arguments
    (:func:`check_group_args`)."""
    check_group_args(learning_rate=learning_rate, weight_decay=weight_decay,
                     adam_learning_rate=adam_learning_rate, adam_b1=adam_b1, adam_b2=adam_b2,
                     adam_eps=adam_eps, adam_weight_decay=adam_weight_decay)
    matrix_tx = optax.chain(direction,
                            decoupled_weight_decay(weight_decay, infos, (MATRIX,), wd_mult),
                            optax.scale_by_learning_rate(learning_rate))
    return with_adamw_for_the_rest(
        matrix_tx, infos, adam_learning_rate=(learning_rate if adam_learning_rate is None
                                              else adam_learning_rate),
        adam_b1=adam_b1, adam_b2=adam_b2, adam_eps=adam_eps,
        adam_weight_decay=adam_weight_decay, adam_nesterov=adam_nesterov, wd_mult=wd_mult,
        mu_dtype=mu_dtype)


def deferred(build: Callable[[Any], optax.GradientTransformation]):
    """A transformation built from ``describe_params`` of the tree it first sees."""
    return optax.GradientTransformation(
        lambda params: build(describe_params(params)).init(params),
        lambda u, s, p=None: build(describe_params(u)).update(u, s, p))


def check_muon_args(*, learning_rate, ns_coeffs, ns_steps, ns_dtype, ns_variant, ns_impl,
                    ns_chunk, eps, norm_scale, beta, update_scale, rms_target, weight_decay,
                    adam_learning_rate, adam_b1, adam_b2, adam_eps, adam_weight_decay,
                    ns_precondition="frobenius", **_) -> None:
    """Every number and name of :func:`muon`, checked at construction: lr >= 0 (or a
    schedule), momenta in [0, 1), decays >= 0, eps > 0, known Newton-Schulz settings."""
    check_group_args(learning_rate=learning_rate, weight_decay=weight_decay,
                     adam_learning_rate=adam_learning_rate, adam_b1=adam_b1, adam_b2=adam_b2,
                     adam_eps=adam_eps, adam_weight_decay=adam_weight_decay)
    check_rate("momentum beta", beta)
    check_positive("rms_target", rms_target)
    if not isinstance(update_scale, (int, float)) or isinstance(update_scale, bool):
        check_choice("update_scale", update_scale, UPDATE_SCALES)
    check_ns_args(ns_coeffs, ns_steps, eps, norm_scale, ns_variant, ns_impl, ns_dtype,
                  ns_precondition)


def muon(learning_rate: optax.ScalarOrSchedule, infos: Any = None, *,
         ns_coeffs="keller", ns_steps: int = 5, ns_dtype="float32", ns_variant: str = "auto",
         ns_impl: str = "xla", ns_chunk: int | str = "auto", eps: float = 1e-7,
         norm_scale: float | None = None, ns_precondition: str = "frobenius",
         beta: float = 0.95, nesterov: bool = True,
         bias_correction: bool = False,
         update_scale: str | float = "moonlight", rms_target: float = 0.2,
         weight_decay: float = 0.1, adam_learning_rate: optax.ScalarOrSchedule | None = None,
         adam_b1: float = 0.9, adam_b2: float = 0.95, adam_eps: float = 1e-8,
         adam_weight_decay: float = 0.1, adam_nesterov: bool = False, wd_mult: Any = None,
         mu_dtype=None, stack: bool = True, shard: bool = True) -> optax.GradientTransformation:
    """Muon on hidden matrices, AdamW on embeddings, head and vectors (arXiv 2502.16982).

    Defaults are Moonlight's (update RMS 0.2 and weight decay 0.1 on both groups, so an
    AdamW run's peak lr and decay carry over); Keller Jordan's original form is
    ``update_scale='keller', weight_decay=0.0, adam_weight_decay=0.0``. The gin name
    ``muon`` (:mod:`jaxlab.train.optimizer`) is this function with these defaults.

    Args:
      learning_rate: lr or schedule of the matrices.
      infos: :func:`describe_params` tree of the params; None labels the tree at init.
      ns_coeffs, ns_steps, ns_dtype, ns_variant, eps, norm_scale: Newton-Schulz settings
        (``keller``/``polar_express``/``dion``/tuples; ``float32``/``bfloat16``;
        ``auto``/``plain``/``gram``).
      ns_impl: ``'xla'`` or ``'pallas'`` (the kernel in ``pallas_kernels/newton_schulz``).
      ns_chunk: matrices per sequential NS call (``'auto'``: cache-sized on CPU, the whole
        stack on GPU/TPU; ``'all'``; or an int), :func:`matrix_stacking.chunk_size`.
      ns_precondition: ``'frobenius'`` or ``'aol'`` (Turbo-Muon, arXiv 2512.04632: AOL
        rescaling before NS; with ``ns_coeffs='turbo_muon', ns_steps=4`` it matches 5
        Frobenius-normalised Dion steps, ``docs/methods.md``).
      beta, nesterov: momentum. bias_correction: optax.contrib.muon's Adam-style
        correction of the Nesterov mix (off in Keller's and Moonlight's form).
      update_scale: ``'moonlight'`` (``rms_target`` RMS), ``'keller'``, ``'none'`` or float.
      weight_decay: decoupled decay of the matrices, ``W -= lr wd W``.
      adam_*: the AdamW group (lr defaults to ``learning_rate``); its decay applies to
        embeddings and heads, never to vectors.
      wd_mult: per-leaf weight-decay multipliers (layerwise rules).
      mu_dtype: momentum dtype (default: the gradient's).
      stack, shard: stack same-shape matrices into one NS call; shard stacks on a mesh.
    """
    if infos is None:
        kwargs = _muon_kwargs(locals())
        check_muon_args(**kwargs, learning_rate=learning_rate)
        return deferred(lambda i: muon(learning_rate, i, **kwargs))
    check_muon_args(**_muon_kwargs(locals()), learning_rate=learning_rate)
    matrix_tx = optax.chain(
        scale_by_muon(infos, beta=beta, nesterov=nesterov, bias_correction=bias_correction,
                      update_scale=update_scale, rms_target=rms_target, mu_dtype=mu_dtype,
                      stack=stack, shard=shard, ns_coeffs=ns_coeffs, ns_steps=ns_steps,
                      eps=eps, norm_scale=norm_scale, ns_dtype=ns_dtype,
                      ns_variant=ns_variant, ns_impl=ns_impl, ns_chunk=ns_chunk,
                      ns_precondition=ns_precondition),
        decoupled_weight_decay(weight_decay, infos, (MATRIX,), wd_mult),
        optax.scale_by_learning_rate(learning_rate))
    return with_adamw_for_the_rest(
        matrix_tx, infos, adam_learning_rate=(learning_rate if adam_learning_rate is None
                                              else adam_learning_rate),
        adam_b1=adam_b1, adam_b2=adam_b2, adam_eps=adam_eps,
        adam_weight_decay=adam_weight_decay, adam_nesterov=adam_nesterov, wd_mult=wd_mult,
        mu_dtype=mu_dtype)


def _muon_kwargs(local_vars: dict) -> dict:
    return {k: v for k, v in local_vars.items() if k not in ("learning_rate", "infos")}


__all__ = [
    "NS_IMPLS",
    "UPDATE_SCALES",
    "MuonState",
    "decoupled_weight_decay",
    "group_labels",
    "make_ns_fn",
    "matrix_infos",
    "momentum_direction",
    "muon",
    "scale_by_muon",
    "shape_scale",
    "with_adamw_for_the_rest",
    "with_matrix_optimizer",
    "check_group_args",
]
