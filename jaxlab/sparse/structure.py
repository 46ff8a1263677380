"""Structured masks: N:M groups along the contracting axis, and b x b blocks.

N:M (2:4 by default; Mishra et al. 2021 for Ampere, SR-STE arXiv 2102.04010): in every
group of ``M`` consecutive weights along the *contracting* axis (fan_in, for ``x @ W``)
keep the ``N`` with the largest score. jaxpruner groups along the output axis, which is
not what sparse tensor cores accelerate. For a kernel with several fan-in axes, e.g. the
attention output ``(H, Dh, D)``, the groups run along the last fan-in axis (``Dh``), i.e.
``M`` consecutive entries of the flattened fan-in. The rank inside a group comes from
pairwise comparisons (``M^2`` elementwise ops, no sort).

Blocks: the ``(fan_in, fan_out)`` matrix is cut into ``b x b`` tiles; a tile is kept or
pruned whole. :func:`block_mask` gives the ``(num_matrices, fan_in/b, fan_out/b)`` tile
mask a block-sparse matmul kernel (``pallas_kernels/block_sparse_matmul``) consumes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlab.partition import ParamInfo

STRUCTURES = ("unstructured", "nm", "block")


def _group_axis(info: ParamInfo) -> int:
    return info.batch_ndim + info.fan_in_ndim - 1


def check_nm(info: ParamInfo, n: int, m: int) -> None:
    """Raises unless ``0 < n <= m`` and ``m`` divides the last fan-in axis of ``info``."""
    if not 0 < n <= m:
        raise ValueError(f"N:M sparsity needs 0 < N <= M, got N={n}, M={m}")
    size = info.shape[_group_axis(info)]
    if size % m:
        raise ValueError(f"{info.path}: fan-in axis {_group_axis(info)} of shape {info.shape} "
                         f"has size {size}, not a multiple of M={m}")


def nm_mask(scores: jax.Array, info: ParamInfo, n: int = 2, m: int = 4) -> jax.Array:
    """Bool mask keeping the ``n`` largest scores of every ``m`` consecutive entries along
    the last fan-in axis.

    Args:
      scores: array of shape ``info.shape``.
    Returns:
      bool array of ``info.shape``; each group has exactly ``n`` True (ties: lower index).
    """
    check_nm(info, n, m)
    axis = _group_axis(info)
    shape = scores.shape
    grouped = jnp.reshape(scores, shape[:axis] + (shape[axis] // m, m) + shape[axis + 1:])
    g = axis + 1  # position of the within-group axis
    parts = [jax.lax.index_in_dim(grouped, i, g, keepdims=False) for i in range(m)]
    keep = []
    for i in range(m):
        # rank_i = number of entries that beat entry i (larger, or equal with lower index)
        rank = sum(((parts[j] >= parts[i]) if j < i else (parts[j] > parts[i])).astype(jnp.int32)
                   for j in range(m) if j != i)
        keep.append(rank < n)
    return jnp.reshape(jnp.stack(keep, axis=g), shape)


def check_block(info: ParamInfo, b: int) -> None:
    if b < 1 or info.fan_in % b or info.fan_out % b:
        raise ValueError(f"{info.path}: matrix {info.matrix_shape} cannot be tiled by "
                         f"{b} x {b} blocks; choose a block size dividing fan_in and fan_out")


def block_scores(scores: jax.Array, info: ParamInfo, b: int) -> jax.Array:
    """Sum of ``scores`` over each ``b x b`` tile: ``info.shape -> (num, fan_in/b, fan_out/b)``."""
    check_block(info, b)
    x = info.as_matrices(scores)
    num, k, n = x.shape
    return jnp.sum(jnp.reshape(x, (num, k // b, b, n // b, b)), axis=(2, 4))


def expand_blocks(tiles: jax.Array, info: ParamInfo, b: int) -> jax.Array:
    """``(num, fan_in/b, fan_out/b)`` tile mask -> element mask of ``info.shape``."""
    num, kb, nb = tiles.shape
    x = jnp.broadcast_to(tiles[:, :, None, :, None], (num, kb, b, nb, b))
    return info.from_matrices(jnp.reshape(x, (num, kb * b, nb * b)))


def block_mask(mask: jax.Array, info: ParamInfo, b: int) -> jax.Array:
    """Tile mask ``(num_matrices, fan_in/b, fan_out/b)``: True where any entry of the tile
    is kept. For block-structured masks this is exact (tiles are all-or-nothing), and
    ``x @ (W * mask)`` equals a block-sparse matmul skipping the False tiles."""
    check_block(info, b)
    return block_scores(mask.astype(jnp.int32), info, b) > 0
