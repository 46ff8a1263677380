"""Top singular value of every hidden matrix, by block power iteration (cheap, jit-friendly).

Used for the width-transfer check of arXiv 2510.15262: under AdamW the top singular value
of a matrix parameter behaves as ``sigma_max ~ sqrt(eta / lambda) * d^0.75``, so matching
``sigma_max`` between a proxy and a target width checks that lr and weight decay
transferred. The train loop logs these every ``TrainConfig.spectral_every`` steps.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxlab.partition import MATRIX, infos_list


def power_iteration_sigma_max(w_NxIxO: jax.Array, num_iters: int = 32, block_size: int = 8,
                              key: jax.Array | None = None) -> jax.Array:
    """Top singular value of each of ``N`` matrices ``(N, fan_in, fan_out)`` -> ``(N,)``.

    Block power (subspace) iteration on the smaller Gram matrix ``G`` (``W W^T`` or
    ``W^T W``, never formed) with ``block_size`` vectors re-orthonormalised by QR each
    step, then Rayleigh-Ritz: ``sigma_max = sqrt(lambda_max(V^T G V))``, which never
    overestimates. Single-vector iteration stalls on the nearly degenerate top of a random
    matrix's spectrum (error ~ (sigma_2 / sigma_1)^(2 num_iters)); a block converges like
    ``(sigma_{b+1} / sigma_1)^(2 num_iters)``. Cost per iteration: ``2 block_size``
    matrix-vector products per matrix. float32 throughout.
    """
    if w_NxIxO.ndim != 3:
        raise ValueError(f"expected (num_matrices, fan_in, fan_out), got shape {w_NxIxO.shape}")
    if num_iters < 1 or block_size < 1:
        raise ValueError(f"num_iters and block_size must be >= 1, got {num_iters}, {block_size}")
    w = w_NxIxO.astype(jnp.float32)
    if w.shape[1] > w.shape[2]:
        w = jnp.swapaxes(w, 1, 2)  # iterate in the smaller dimension k: G = W W^T is (k, k)
    n, k, _ = w.shape
    b = min(block_size, k)
    key = jax.random.key(0) if key is None else key

    def gram(v_NxKxB):
        return jnp.einsum("nko,nob->nkb", w, jnp.einsum("nko,nkb->nob", w, v_NxKxB))

    def orth(v_NxKxB):
        return jnp.linalg.qr(v_NxKxB)[0]

    v = orth(jax.random.normal(key, (n, k, b), jnp.float32))
    v = jax.lax.fori_loop(0, num_iters, lambda _, v: orth(gram(v)), v)
    h_NxBxB = jnp.einsum("nkb,nkc->nbc", v, gram(v))
    h_NxBxB = 0.5 * (h_NxBxB + jnp.swapaxes(h_NxBxB, 1, 2))
    return jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(h_NxBxB)[:, -1], 0.0))


def top_singular_values(params: Any, infos: Any, num_iters: int = 32, block_size: int = 8,
                        key: jax.Array | None = None,
                        labels: tuple[str, ...] = (MATRIX,)) -> dict[str, jax.Array]:
    """``{"sigma_max/<path>": (num_matrices,)}`` for every leaf whose label is in ``labels``.

    Args:
      params: the parameter tree (``nnx.State`` or arrays) that ``infos`` describes.
      infos: :func:`jaxlab.partition.describe_params` of ``params``.
      num_iters: power iterations (fixed, so the function jits to a fixed cost).
      block_size: vectors iterated together (see :func:`power_iteration_sigma_max`).
      key: start vectors' key (default ``jax.random.key(0)``).
      labels: which labels to measure; hidden matrices by default.

    A scan-stacked ``(L, D, H, Dh)`` kernel gives ``L`` values, one per layer.
    """
    key = jax.random.key(0) if key is None else key
    infos_flat, leaves = infos_list(infos), jax.tree.leaves(params)
    if len(infos_flat) != len(leaves):
        raise ValueError(f"params have {len(leaves)} leaves but infos describe "
                         f"{len(infos_flat)}: pass describe_params(params)")
    out = {}
    for i, (info, w) in enumerate(zip(infos_flat, leaves)):
        if info.label not in labels:
            continue
        if tuple(w.shape) != info.shape:
            raise ValueError(f"leaf {info.path!r} has shape {w.shape}, its ParamInfo says "
                             f"{info.shape}: params and infos do not match")
        out[f"sigma_max/{info.path}"] = power_iteration_sigma_max(
            info.as_matrices(w), num_iters, block_size, jax.random.fold_in(key, i))
    return out
