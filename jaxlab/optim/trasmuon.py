"""TrasMuon (arXiv 2602.13498): Muon's direction, magnitude from RMS calibration and an
energy-based trust region. A RECONSTRUCTION.

Only the abstract of arXiv 2602.13498 is public: TrasMuon keeps Muon's orthogonal
direction and restores magnitude with (i) global RMS calibration and (ii) trust-region
clipping defined by relative energy ratios. Everything below the abstract level is
reconstructed (jaxlab ``docs/methods.md``, TrasMuon) and every choice is an option. Per
matrix ``W (fan_in, fan_out)`` with gradient ``G`` at step ``t``::

    M  = b1 M + (1 - b1) G                       momentum (Nesterov optional)
    O  = NS(M / ||M||_F)                         Newton-Schulz, as in Muon
    v  = b2 v + (1 - b2) mean_over_fan_in(O^2)   one value per output neuron (v_axis)
    B  = O / sqrt(v + eps)
    U  = B sqrt(fan_in fan_out) / ||B||_F        global RMS calibration: RMS(U) = 1
    E  = sum_over_fan_out(M_hat^2)               energy per input feature (energy_axis),
                                                 M_hat = M / (1 - b1^t) (bias-corrected)
    Eref = median(E) at step 1, else bE Eref + (1 - bE) median(E)
    r  = E / (Eref + eps mean(E))                relative guard: scale-free
    c  = clip(g(r), c_min, 1)     soft:  g = 1 / (1 + alpha log(1 + r))
                                  gated: g = 1 if r <= tau else 1 / (1 + alpha log(1 + r / tau))
    W <- W - lr (scale U c) - lr wd W

Scale invariance: every guard is relative (``M`` is normalised before NS, so NS's absolute
eps sees a unit-norm input; ``r``'s eps multiplies the mean energy), so multiplying every
gradient by any ``k > 0`` leaves the updates unchanged (tested for k = 1e-4 ... 1e4).

Update RMS: ``scale`` (0.2 for ``moonlight``) is the RMS of ``scale U``, before the trust
region. The applied update is ``scale U c``, whose RMS is ``scale * RMS_c`` with
``RMS_c = sqrt(sum_i c_i^2 ||U_i||^2 / (fan_in fan_out)) <= 1`` (logged as
``trasmuon/update_rms``). With the soft gate every feature is shrunk (``c = 0.59`` at
``r = 1``): on a gradient with a steady signal the RMS is 0.118-0.120 from the first
step (tested); on pure noise it drifts between 0.12 and 0.18 while the momentum averages
the noise down and ``Eref`` lags. With ``alpha = 0``, or the gated gate where
``r <= tau``, it is exactly ``scale``. Without the energy's bias correction
(``energy_bias_correction=False``, the first reconstruction) ``E`` grows like
``(1 - b1^t)^2`` while ``Eref`` lags, so every feature has ``r > 1`` for the first ~50
steps and the RMS falls to 0.066 (tested).

Reconstructed (not from the paper): the axes of ``v`` and ``E``, the median reference and
its EMA, the energy's bias correction, both gate shapes and their constants (alpha 1,
c_min 0.1, tau 1), the optional EMA of ``c`` (0.9), no bias correction of ``v`` (the
calibration divides any common scale out), and ``scale`` (``moonlight``: 0.2 before the
trust region, as Muon's Moonlight scale).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.optim.arg_checks import (
    check_choice,
    check_nonnegative,
    check_positive,
    check_range,
    check_rate,
)
from jaxlab.optim.matrix_stacking import orthogonalize_leaves
from jaxlab.optim.muon import (
    make_ns_fn,
    matrix_infos,
    momentum_direction,
    with_matrix_optimizer,
)
from jaxlab.partition import ParamInfo

GATES = ("soft", "gated")
AXES = ("fan_in", "fan_out")
# Histogram edges of the per-feature energy ratio r and clip factor c logged every step
# (``trasmuon/ratio_hist_{i:02d}``, ``trasmuon/clip_hist_{i:02d}``: the fraction of all
# features of all matrices in bin i; bin 0 is below the first edge, the last at or above
# the last edge).
RATIO_EDGES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
CLIP_EDGES = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class TrasMuonState(NamedTuple):
    """``mu`` params-shaped momentum; per matrix leaf (tuples in leaf order): ``v``
    ``(num_matrices, n_v)``, ``eref`` ``(num_matrices,)``, ``c`` ``(num_matrices, n_E)``
    (EMA of the clip factor, ones when off); ``stats`` scalars of the last step."""

    count: jax.Array
    mu: Any
    v: tuple
    eref: tuple
    c: tuple
    stats: dict[str, jax.Array]


def rms_scale(info: ParamInfo, update_scale: str | float, rms_target: float = 0.2) -> float:
    """Multiplier of the RMS-1 update ``U c``: ``moonlight`` -> ``rms_target``;
    ``keller`` -> the RMS Keller-scaled Muon has on a full-rank matrix,
    ``sqrt(max(1, fan_out / fan_in) / max(fan_in, fan_out))``; ``none`` -> 1; float -> it."""
    if isinstance(update_scale, (int, float)) and not isinstance(update_scale, bool):
        return float(update_scale)
    if update_scale == "moonlight":
        return rms_target
    if update_scale == "keller":
        return math.sqrt(max(1.0, info.fan_out / info.fan_in) / max(info.fan_in, info.fan_out))
    if update_scale == "none":
        return 1.0
    raise ValueError(f"unknown update_scale {update_scale!r}; valid: 'moonlight', 'keller', "
                     "'none' or a float")


def clip_factor(r: jax.Array, gate: str = "soft", alpha: float = 1.0, tau: float = 1.0,
                c_min: float = 0.1) -> jax.Array:
    """Trust-region factor ``clip(g(r), c_min, 1)`` of relative energies ``r >= 0``."""
    if gate == "soft":
        g = 1.0 / (1.0 + alpha * jnp.log1p(r))
    elif gate == "gated":
        g = jnp.where(r <= tau, 1.0, 1.0 / (1.0 + alpha * jnp.log1p(r / tau)))
    else:
        raise ValueError(f"unknown gate {gate!r}; valid: {GATES}")
    return jnp.clip(g, c_min, 1.0)


def _axis(name: str, what: str) -> int:
    """Matrix axis of ``(N, fan_in, fan_out)`` that carries one value per neuron."""
    if name not in AXES:
        raise ValueError(f"{what}={name!r}; valid: {AXES}")
    return 1 if name == "fan_in" else 2


def scale_by_trasmuon(infos: Any, *, b1: float = 0.95, b2: float = 0.95, b_energy: float = 0.95,
                      nesterov: bool = False, alpha: float = 1.0, c_min: float = 0.1,
                      tau: float = 1.0, gate: str = "soft", eps: float = 1e-8,
                      v_axis: str = "fan_out", energy_axis: str = "fan_in",
                      energy_bias_correction: bool = True,
                      c_ema: float | None = None, update_scale: str | float = "moonlight",
                      rms_target: float = 0.2, stack: bool = True, shard: bool = True,
                      **ns_kwargs) -> optax.GradientTransformation:
    """TrasMuon's update ``scale U c`` for the matrix leaves (others masked out).

    Args:
      infos: ParamInfo tree of the params.
      b1, b2, b_energy: EMA rates of momentum, ``v`` and the reference energy.
      nesterov: orthogonalise ``b1 M + (1 - b1) G`` instead of ``M``.
      alpha, c_min, tau, gate: the trust-region gate (:func:`clip_factor`).
      eps: in ``sqrt(v + eps)`` and, relative to the mean energy, in the ratio's
        denominator ``Eref + eps mean(E)``.
      v_axis: ``'fan_out'`` (one ``v`` per output neuron, mean over fan_in) or ``'fan_in'``.
      energy_axis: ``'fan_in'`` (energy per input feature, sum over fan_out) or ``'fan_out'``.
      energy_bias_correction: energy of ``M / (1 - b1^t)`` (so ``r`` is not inflated while
        the momentum warms up); False: of ``M``.
      c_ema: EMA rate of ``c`` (e.g. 0.9), None: off.
      update_scale, rms_target: see :func:`rms_scale`.
      ns_kwargs: Newton-Schulz settings (:func:`jaxlab.optim.muon.make_ns_fn`).
    """
    for name, rate in (("b1", b1), ("b2", b2), ("b_energy", b_energy)):
        check_rate(name, rate)
    if c_ema is not None:
        check_rate("c_ema", c_ema)
    check_nonnegative("alpha", alpha)
    check_range("c_min", c_min, 0.0, 1.0, lo_open=True)  # c_min > 1 would switch clipping off
    check_positive("tau", tau)
    check_positive("eps", eps)
    check_choice("gate", gate, GATES)
    mats = matrix_infos(infos)
    ns_fn = make_ns_fn(**ns_kwargs)
    v_ax, e_ax = _axis(v_axis, "v_axis"), _axis(energy_axis, "energy_axis")
    scales = [rms_scale(i, update_scale, rms_target) for i in mats]

    def per_neuron(info: ParamInfo, ax: int) -> tuple[int, int]:
        return (info.num_matrices, info.fan_in if ax == 1 else info.fan_out)

    def init(params):
        mu = jax.tree.map(jnp.zeros_like, params)
        f32 = jnp.float32
        return TrasMuonState(
            count=jnp.zeros((), jnp.int32), mu=mu,
            v=tuple(jnp.zeros(per_neuron(i, v_ax), f32) for i in mats),
            eref=tuple(jnp.zeros((i.num_matrices,), f32) for i in mats),
            c=tuple(jnp.ones(per_neuron(i, e_ax), f32) for i in mats),
            stats={k: jnp.zeros((), f32) for k in _STAT_KEYS})

    def update(updates, state, params=None):
        del params
        g_leaves, treedef = jax.tree.flatten(updates)
        if len(g_leaves) != len(mats):
            raise ValueError(f"scale_by_trasmuon got {len(g_leaves)} leaves for {len(mats)} "
                             "matrices; mask the non-matrix leaves (see trasmuon())")
        pairs = [momentum_direction(g, m, state.count, b1, nesterov, bias_correction=False)
                 for g, m in zip(g_leaves, treedef.flatten_up_to(state.mu))]
        mu, direction = [p[0] for p in pairs], [p[1] for p in pairs]
        direction = [_unit_frobenius(d, i) for d, i in zip(direction, mats)]
        ortho = orthogonalize_leaves(direction, mats, ns_fn, stack=stack, shard=shard)
        first = state.count == 0
        t = (state.count + 1).astype(jnp.float32)
        energy_scale = 1.0 / jnp.square(1.0 - b1 ** t) if energy_bias_correction else 1.0
        out, new_v, new_eref, new_c, parts = [], [], [], [], []
        for k, info in enumerate(mats):
            o = info.as_matrices(ortho[k]).astype(jnp.float32)
            m = info.as_matrices(mu[k]).astype(jnp.float32)
            v = b2 * state.v[k] + (1 - b2) * jnp.mean(jnp.square(o), axis=3 - v_ax)
            b = o / jnp.sqrt(jnp.expand_dims(v, 3 - v_ax) + eps)
            b_norm = jnp.sqrt(jnp.sum(jnp.square(b), axis=(1, 2), keepdims=True))
            # b / ||b|| first: a zero gradient gives b = 0 and must give U = 0, not 0 * inf
            u = b / jnp.maximum(b_norm, _TINY) * math.sqrt(info.fan_in * info.fan_out)
            energy = energy_scale * jnp.sum(jnp.square(m), axis=3 - e_ax)
            med = jnp.median(energy, axis=-1)
            eref = jnp.where(first, med, b_energy * state.eref[k] + (1 - b_energy) * med)
            guard = eps * jnp.mean(energy, axis=-1) + _TINY
            r = energy / (eref + guard)[:, None]
            c = clip_factor(r, gate, alpha, tau, c_min)
            if c_ema is not None:
                c = jnp.where(first, c, c_ema * state.c[k] + (1 - c_ema) * c)
            upd = scales[k] * u * jnp.expand_dims(c, 3 - e_ax)
            out.append(info.from_matrices(upd).astype(g_leaves[k].dtype))
            new_v.append(v)
            new_eref.append(eref)
            new_c.append(c)
            parts.append((r, c, v, m, upd))
        stats = _stats(parts)
        return (jax.tree.unflatten(treedef, out),
                TrasMuonState(state.count + 1, jax.tree.unflatten(treedef, mu), tuple(new_v),
                              tuple(new_eref), tuple(new_c), stats))

    return optax.GradientTransformation(init, update)


_TINY = float(jnp.finfo(jnp.float32).tiny)  # only keeps 0 / 0 out of all-zero gradients


def _unit_frobenius(x: jax.Array, info: ParamInfo) -> jax.Array:
    """Each matrix of leaf ``x`` divided by its Frobenius norm (zero stays zero), so the
    absolute eps of Newton-Schulz's own normalisation never sees the gradient's scale."""
    m = info.as_matrices(x).astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(jnp.square(m), axis=(1, 2), keepdims=True))
    return info.from_matrices(m / jnp.maximum(norm, _TINY)).astype(x.dtype)


def _hist_keys(name: str, edges: tuple[float, ...]) -> tuple[str, ...]:
    return tuple(f"trasmuon/{name}_hist_{i:02d}" for i in range(len(edges) + 1))


_STAT_KEYS = ("trasmuon/ratio_max", "trasmuon/ratio_mean", "trasmuon/clip_min",
              "trasmuon/clip_mean", "trasmuon/clipped_frac", "trasmuon/v_min",
              "trasmuon/v_max", "trasmuon/v_mean", "trasmuon/momentum_norm",
              "trasmuon/update_norm", "trasmuon/update_rms",
              *_hist_keys("ratio", RATIO_EDGES), *_hist_keys("clip", CLIP_EDGES))


def _histogram(x: jax.Array, edges: tuple[float, ...]) -> jax.Array:
    """Fraction of ``x`` in each bin of ``edges`` (``len(edges) + 1`` bins)."""
    bins = jnp.searchsorted(jnp.asarray(edges, jnp.float32), x, side="right")
    return jnp.bincount(bins, length=len(edges) + 1).astype(jnp.float32) / x.size


def _stats(parts) -> dict[str, jax.Array]:
    """Scalars over all matrices: energy ratios, clip factors, ``v``, norms."""
    if not parts:
        return {k: jnp.zeros((), jnp.float32) for k in _STAT_KEYS}
    cat = lambda i: jnp.concatenate([p[i].reshape(-1) for p in parts])
    r, c, v = cat(0), cat(1), cat(2)
    sq = lambda i: sum(jnp.sum(jnp.square(p[i])) for p in parts)
    size = sum(p[4].size for p in parts)
    stats = {"trasmuon/ratio_max": jnp.max(r), "trasmuon/ratio_mean": jnp.mean(r),
             "trasmuon/clip_min": jnp.min(c), "trasmuon/clip_mean": jnp.mean(c),
             "trasmuon/clipped_frac": jnp.mean((c < 1.0).astype(jnp.float32)),
             "trasmuon/v_min": jnp.min(v), "trasmuon/v_max": jnp.max(v),
             "trasmuon/v_mean": jnp.mean(v), "trasmuon/momentum_norm": jnp.sqrt(sq(3)),
             "trasmuon/update_norm": jnp.sqrt(sq(4)),
             "trasmuon/update_rms": jnp.sqrt(sq(4) / size)}
    for name, x, edges in (("ratio", r, RATIO_EDGES), ("clip", c, CLIP_EDGES)):
        stats.update(zip(_hist_keys(name, edges), _histogram(x, edges)))
    return stats


def trasmuon(learning_rate: optax.ScalarOrSchedule, infos: Any, *, weight_decay: float = 0.1,
             adam_learning_rate: optax.ScalarOrSchedule | None = None, adam_b1: float = 0.9,
             adam_b2: float = 0.95, adam_eps: float = 1e-8, adam_weight_decay: float = 0.1,
             wd_mult: Any = None, **kwargs) -> optax.GradientTransformation:
    """TrasMuon (reconstruction of arXiv 2602.13498) on matrices, AdamW on the rest.

    ``infos``: :func:`jaxlab.partition.describe_params` tree; ``kwargs`` go to
    :func:`scale_by_trasmuon` (gate, axes, EMAs, Newton-Schulz settings, with its
    defaults); ``weight_decay`` is the matrices' decoupled decay; ``adam_*`` configure the
    AdamW group. Decay 0.1 on both groups by default, as for :func:`jaxlab.optim.muon`.
    The gin name ``trasmuon`` (:mod:`jaxlab.train.optimizer`) is this function with these
    defaults.
    """
    return with_matrix_optimizer(
        scale_by_trasmuon(infos, **kwargs), infos, learning_rate, weight_decay=weight_decay,
        adam_learning_rate=adam_learning_rate, adam_b1=adam_b1, adam_b2=adam_b2,
        adam_eps=adam_eps, adam_weight_decay=adam_weight_decay, wd_mult=wd_mult)


__all__ = [
    "AXES",
    "CLIP_EDGES",
    "GATES",
    "RATIO_EDGES",
    "TrasMuonState",
    "clip_factor",
    "rms_scale",
    "scale_by_trasmuon",
    "trasmuon",
]
