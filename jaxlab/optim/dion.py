"""Dion (Ahn, Xu et al., arXiv 2504.05295): low-rank orthonormal updates from one step of
power iteration with error feedback, for hidden matrices; AdamW for the rest.

Checked against the authors' reference implementation (github microsoft/dion,
``dion_reference.py``). Each matrix is taken with its long side first, ``B (m, n)``,
``m >= n`` (a ``(fan_in, fan_out)`` kernel with ``fan_in < fan_out`` is transposed), and
keeps a momentum ``M (m, n)`` and a right factor ``Q (n, r)``, ``r = min(n,
multiple * ceil(rank_fraction n / multiple))``, initialised from a normal draw::

    B = M + G
    P = orth(B Q)                 (m, r), reduced QR
    R = B^T P                     (n, r)     (power_iters > 1: Q <- R, repeat)
    M = B - (1 - mu) P R^T        error feedback: what the rank-r step left stays in M
    Q = R / (||R[:, j]|| + eps)   column-normalised, the next step's warm start
    W <- W - lr scale P Q^T - lr wd W          scale = sqrt(fan_out / fan_in)

A matrix whose ``B`` is all zeros gives ``P = 0`` and keeps its ``Q`` (the reference's
guard; an all-zero ``B`` would otherwise leave ``Q = 0`` for good). At full rank the
error feedback is plain momentum (``P P^T B = B``, so ``M = mu B``) and ``P Q^T`` tends to
the polar factor of ``B`` as the warm start converges. The authors orthonormalise tall
``P`` by randomised Cholesky QR, equal to QR up to column signs, which cancel in
``P Q^T``; this file uses Householder QR in float32 (``qr='householder'``) or, where that
cannot run, Gram-Schmidt with one reorthogonalisation in matmuls only
(``qr='gram_schmidt'``, :func:`gram_schmidt_qr`): both give the same ``P Q^T``.

Each power iteration runs the QRs of all matrices as one batched call
(:func:`joint_qr`, zero-padded to a common shape: several QR calls in one program deadlock
on jaxlib 0.10's CPU backend); under a mesh every stack is sharded along its matrices, so
the QR and products of each matrix run on one device with no collective. On a
multi-device CPU mesh the Householder QR deadlocks even as one call (the fake devices run
it at once), so ``qr='auto'`` takes Gram-Schmidt there and Householder everywhere else.
``docs/methods.md`` (Dion) lists the defaults.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.optim.arg_checks import check_choice, check_positive, check_range, check_rate
from jaxlab.optim.matrix_stacking import mesh_of, shard_stack
from jaxlab.optim.muon import (
    check_group_args,
    deferred,
    global_norm,
    matrix_infos,
    shape_scale,
    with_matrix_optimizer,
)
from jaxlab.partition import ParamInfo

UPDATE_SCALES = ("dion", "moonlight", "none")
QR_METHODS = ("auto", "householder", "gram_schmidt")


class DionState(NamedTuple):
    """``mu``: params-shaped momentum (error-feedback buffer); ``q``: per matrix leaf, the
    right factor ``(num_matrices, n, r)`` (``n`` the short side); ``stats``: scalars."""

    count: jax.Array
    mu: Any
    q: tuple
    stats: dict[str, jax.Array]


def dion_rank(info: ParamInfo, rank_fraction: float, rank_multiple_of: int = 1) -> int:
    """``r = min(n, multiple * ceil(rank_fraction * n / multiple))``, ``n`` the short side."""
    n = min(info.fan_in, info.fan_out)
    r = rank_multiple_of * math.ceil(rank_fraction * n / rank_multiple_of)
    return max(1, min(r, n))


def dion_scale(info: ParamInfo, update_scale: str | float, rms_target: float = 0.2) -> float:
    """``dion``: ``sqrt(fan_out / fan_in)`` (the reference's lr factor); ``moonlight``:
    ``rms_target sqrt(max(fan_in, fan_out))`` (update RMS ``rms_target`` at full rank,
    ``rms_target sqrt(r / n)`` below); ``none``: 1; a float: it."""
    if update_scale == "dion":
        return math.sqrt(info.fan_out / info.fan_in)
    if isinstance(update_scale, str) and update_scale not in UPDATE_SCALES:
        raise ValueError(f"unknown update_scale {update_scale!r}; valid: {UPDATE_SCALES} "
                         "or a float")
    return shape_scale(info, update_scale, rms_target)


def gram_schmidt_qr(x: jax.Array) -> jax.Array:
    """Orthonormal factor of a stack ``x (N, m, r)``, ``m >= r``: classical Gram-Schmidt
    with one reorthogonalisation pass (CGS2, orthogonal to float32 rounding for the
    well-conditioned ``B Q`` of Dion), column by column in matmuls, so it needs no LAPACK
    call. Columns are those of Householder QR up to sign; an all-zero column (padding)
    stays zero."""
    tiny = jnp.finfo(jnp.float32).tiny

    def column(j, q):
        v = jax.lax.dynamic_index_in_dim(x, j, axis=2, keepdims=False)  # (N, m)
        for _ in range(2):  # columns >= j of q are still zero
            v = v - jnp.einsum("bmr,br->bm", q, jnp.einsum("bmr,bm->br", q, v))
        v = v / jnp.maximum(jnp.linalg.norm(v, axis=1, keepdims=True), tiny)
        return jax.lax.dynamic_update_index_in_dim(q, v, j, axis=2)

    return jax.lax.fori_loop(0, x.shape[2], column, jnp.zeros_like(x))


def _qr_factor(x: jax.Array, method: str) -> jax.Array:
    return gram_schmidt_qr(x) if method == "gram_schmidt" else jnp.linalg.qr(x)[0]


def joint_qr(xs: list[jax.Array], mesh=None, method: str = "householder") -> list[jax.Array]:
    """Orthonormal factors (reduced QR) of stacks ``xs[k] (N_k, m_k, r_k)``, ``m_k >= r_k``,
    in ONE batched QR: each is zero-padded to the largest ``(M, R)`` (zero rows stay zero
    and the first ``r_k`` Householder columns ignore the zero columns after them), so
    ``[:, :m_k, :r_k]`` of the joint factor is ``x_k``'s. On CPU, several QR custom calls
    in one program deadlock intermittently in jaxlib 0.10 (reproduced with three
    ``(8, 128, 128)`` QRs; one batched call never hung), and one call is also fewer
    launches on GPU. Under ``mesh`` the joint stack is sharded along its batch axis.
    ``method``: ``'householder'`` (``jnp.linalg.qr``) or ``'gram_schmidt'``."""
    if len(xs) == 1 and mesh is None:
        return [_qr_factor(xs[0], method)]
    big_m = max(x.shape[1] for x in xs)
    big_r = max(x.shape[2] for x in xs)
    padded = [jnp.pad(x, ((0, 0), (0, big_m - x.shape[1]), (0, big_r - x.shape[2])))
              for x in xs]
    joint = jnp.concatenate(padded, axis=0)
    if mesh is not None:
        joint = shard_stack(joint, mesh)
    q = _qr_factor(joint, method)
    out, offset = [], 0
    for x in xs:
        out.append(q[offset: offset + x.shape[0], : x.shape[1], : x.shape[2]])
        offset += x.shape[0]
    return out


def dion_step(b: jax.Array, q: jax.Array, *, mu: float, eps: float, power_iters: int = 1,
              qr: str = "householder") -> tuple[jax.Array, jax.Array, jax.Array]:
    """One Dion step on a stack of long-side-first matrices (one leaf's; the optimizer
    runs the steps of all leaves with their QRs joined, :func:`dion_steps`).

    Args:
      b: ``(N, m, n)``, ``m >= n``: momentum plus gradient.
      q: ``(N, n, r)``: the previous right factor.
    Returns:
      ``(update P Q^T (N, m, n), new momentum (N, m, n), new Q (N, n, r))``, float32.
    """
    return dion_steps([b], [q], mu=mu, eps=eps, power_iters=power_iters, qr=qr)[0]


def dion_steps(bs: list[jax.Array], qs: list[jax.Array], *, mu: float, eps: float,
               power_iters: int = 1, mesh=None, qr: str = "householder"
               ) -> list[tuple[jax.Array, ...]]:
    """:func:`dion_step` of every ``(b, q)`` pair, each power iteration's QRs as one
    :func:`joint_qr` call (``qr``: its method)."""
    bs = [b.astype(jnp.float32) for b in bs]
    qs = [q.astype(jnp.float32) for q in qs]
    if mesh is not None:
        bs = [shard_stack(b, mesh) for b in bs]
        qs = [shard_stack(q, mesh) for q in qs]
    rs = qs
    for _ in range(power_iters):
        ps = joint_qr([b @ r for b, r in zip(bs, rs)], mesh, qr)
        ps = [p if mesh is None else shard_stack(p, mesh) for p in ps]
        rs = [jnp.swapaxes(b, 1, 2) @ p for b, p in zip(bs, ps)]
    return [_finish(b, q, p, r, mu, eps) for b, q, p, r in zip(bs, qs, ps, rs)]


def _finish(b, q, p, r_mat, mu, eps):
    """Zero guard, error feedback, column normalisation: ``(P Q^T, M, Q)``."""
    zero = jnp.all(b == 0, axis=(1, 2), keepdims=True)
    p = jnp.where(zero, 0.0, p)
    r_mat = jnp.where(zero, q, r_mat)
    new_m = b - (1.0 - mu) * (p @ jnp.swapaxes(r_mat, 1, 2))
    new_q = r_mat / (jnp.linalg.norm(r_mat, axis=1, keepdims=True) + eps)
    return p @ jnp.swapaxes(new_q, 1, 2), new_m, new_q


def _long_side_first(x: jax.Array, info: ParamInfo) -> jax.Array:
    """Leaf -> ``(N, m, n)`` with ``m >= n`` (transposes when ``fan_in < fan_out``)."""
    m = info.as_matrices(x)
    return m if info.fan_in >= info.fan_out else jnp.swapaxes(m, 1, 2)


def _as_leaf(x: jax.Array, info: ParamInfo) -> jax.Array:
    """Inverse of :func:`_long_side_first`."""
    return info.from_matrices(x if info.fan_in >= info.fan_out else jnp.swapaxes(x, 1, 2))


def scale_by_dion(infos: Any, *, rank_fraction: float = 1.0, rank_multiple_of: int = 1,
                  mu: float = 0.95, power_iters: int = 1, eps: float = 1e-8,
                  update_scale: str | float = "dion", rms_target: float = 0.2,
                  seed: int = 0, mu_dtype=None, shard: bool = True,
                  qr: str = "auto") -> optax.GradientTransformation:
    """Dion's ``scale P Q^T`` for the matrix leaves of a tree (others masked out).

    Args:
      infos: ParamInfo tree (a prefix of the params).
      rank_fraction, rank_multiple_of: the rank, :func:`dion_rank`.
      mu: momentum (error-feedback decay). power_iters: power-iteration steps per update.
      eps: column-normalisation guard. update_scale, rms_target: :func:`dion_scale`.
      seed: of ``Q``'s normal initialisation. mu_dtype: momentum dtype (default: the
        gradient's). shard: under a mesh, shard every stack (and the joint QR) along its
        matrices, so each matrix's QR and products run on one device.
      qr: ``'householder'``, ``'gram_schmidt'`` (:func:`gram_schmidt_qr`) or ``'auto'``:
        Gram-Schmidt on a multi-device CPU mesh (where jaxlib 0.10's QR deadlocks),
        Householder elsewhere.
    """
    check_range("rank_fraction", rank_fraction, 0.0, 1.0, lo_open=True)
    if isinstance(rank_multiple_of, bool) or not isinstance(rank_multiple_of, int) \
            or rank_multiple_of < 1:
        raise ValueError(f"rank_multiple_of must be an integer >= 1, got {rank_multiple_of!r}")
    if isinstance(power_iters, bool) or not isinstance(power_iters, int) or power_iters < 1:
        raise ValueError(f"power_iters must be an integer >= 1, got {power_iters!r}")
    check_rate("mu", mu)
    check_positive("eps", eps)
    check_positive("rms_target", rms_target)
    check_choice("qr", qr, QR_METHODS)
    if not isinstance(update_scale, (int, float)) or isinstance(update_scale, bool):
        check_choice("update_scale", update_scale, UPDATE_SCALES)
    mats = matrix_infos(infos)
    scales = [dion_scale(i, update_scale, rms_target) for i in mats]
    ranks = [dion_rank(i, rank_fraction, rank_multiple_of) for i in mats]

    def init(params):
        mom = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype or p.dtype), params)
        key = jax.random.key(seed)
        q = tuple(jax.random.normal(jax.random.fold_in(key, k),
                                    (i.num_matrices, min(i.matrix_shape), r), jnp.float32)
                  for k, (i, r) in enumerate(zip(mats, ranks)))
        zero = jnp.zeros((), jnp.float32)
        return DionState(jnp.zeros((), jnp.int32), mom, q,
                         {"dion/momentum_norm": zero, "dion/update_norm": zero})

    def update(updates, state, params=None):
        del params
        g_leaves, treedef = jax.tree.flatten(updates)
        if len(g_leaves) != len(mats):
            raise ValueError(f"scale_by_dion got {len(g_leaves)} leaves for {len(mats)} "
                             "matrices; mask the non-matrix leaves (see dion())")
        m_leaves = treedef.flatten_up_to(state.mu)
        bs = [_long_side_first(m.astype(jnp.float32) + g.astype(jnp.float32), i)
              for m, g, i in zip(m_leaves, g_leaves, mats)]
        mesh = mesh_of(g_leaves[0]) if (shard and g_leaves) else None
        method = qr
        if qr == "auto":
            on_cpu_mesh = mesh is not None and jax.default_backend() == "cpu"
            method = "gram_schmidt" if on_cpu_mesh else "householder"
        outs = dion_steps(bs, list(state.q), mu=mu, eps=eps, power_iters=power_iters,
                          mesh=mesh, qr=method) if bs else []
        outs = [tuple(y[: i.num_matrices] for y in o) for o, i in zip(outs, mats)]
        out, new_m, new_q = [], [], []
        for (o, m, q), info, s, g, old in zip(outs, mats, scales, g_leaves, m_leaves):
            out.append((s * _as_leaf(o, info)).astype(g.dtype))
            new_m.append(_as_leaf(m, info).astype(old.dtype))
            new_q.append(q)
        stats = {"dion/momentum_norm": global_norm(new_m), "dion/update_norm": global_norm(out)}
        return (jax.tree.unflatten(treedef, out),
                DionState(state.count + 1, jax.tree.unflatten(treedef, new_m), tuple(new_q),
                          stats))

    return optax.GradientTransformation(init, update)


def dion(learning_rate: optax.ScalarOrSchedule, infos: Any = None, *,
         rank_fraction: float = 1.0, rank_multiple_of: int = 1, mu: float = 0.95,
         power_iters: int = 1, eps: float = 1e-8, update_scale: str | float = "dion",
         rms_target: float = 0.2, seed: int = 0, weight_decay: float = 0.01,
         adam_learning_rate: optax.ScalarOrSchedule | None = None, adam_b1: float = 0.9,
         adam_b2: float = 0.95, adam_eps: float = 1e-8, adam_weight_decay: float = 0.01,
         wd_mult: Any = None, mu_dtype=None, shard: bool = True,
         qr: str = "auto") -> optax.GradientTransformation:
    """Dion (arXiv 2504.05295) on hidden matrices, AdamW on embeddings, head and vectors.

    Defaults are the reference implementation's (full rank, ``mu = 0.95``, one power
    iteration, decay 0.01 on both groups, AdamW betas (0.9, 0.95)); its training scripts
    use ``rank_fraction`` 0.25-0.5 and lr 0.02. The gin name ``dion`` is this function with
    these defaults. ``infos``: :func:`jaxlab.partition.describe_params` tree (None: labels
    the tree at init); the rest as :func:`scale_by_dion` and :func:`jaxlab.optim.muon`.
    """
    kwargs = {k: v for k, v in locals().items() if k not in ("learning_rate", "infos")}
    matrix_kwargs = dict(rank_fraction=rank_fraction, rank_multiple_of=rank_multiple_of,
                         mu=mu, power_iters=power_iters, eps=eps, update_scale=update_scale,
                         rms_target=rms_target, seed=seed, mu_dtype=mu_dtype,
                         shard=shard, qr=qr)
    if infos is None:  # check the arguments now, not at init
        check_group_args(learning_rate=learning_rate, **kwargs)
        scale_by_dion({}, **matrix_kwargs)
        return deferred(lambda i: dion(learning_rate, i, **kwargs))
    return with_matrix_optimizer(
        scale_by_dion(infos, **matrix_kwargs), infos, learning_rate,
        weight_decay=weight_decay, adam_learning_rate=adam_learning_rate, adam_b1=adam_b1,
        adam_b2=adam_b2, adam_eps=adam_eps, adam_weight_decay=adam_weight_decay,
        wd_mult=wd_mult, mu_dtype=mu_dtype)


__all__ = ["QR_METHODS", "UPDATE_SCALES", "DionState", "dion", "dion_rank", "dion_scale",
           "dion_step", "gram_schmidt_qr", "scale_by_dion"]
