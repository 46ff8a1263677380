"""Block metadata for the block-sparse matmul, built once per mask update.

A block mask (nk, nn) says which (block_k, block_n) tiles of W (K, N) are live. The
kernels need, as int32 arrays small enough for scalar prefetch (TPU SMEM) or scalar loads
(GPU): per output tile column the live K-tiles (forward), per K-tile row the live
N-tiles (dx), and the list of live tiles (dW). Lists are padded to a static length by
repeating their last live entry, so a padded step re-uses the block already in fast
memory (Pallas TPU skips the copy when a block index repeats) and does no math.
Everything is jittable: build it inside the train step right after the mask changes.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BlockMeta:
    """Live-tile lists of a block mask; a pytree (arrays are leaves, tile sizes static).

    block_mask: (nk, nn) bool, tile (kb, nb) of W is live.
    col_count: (nn,) live K-tiles per output tile column; col_idx: (nn, nk) their
      indices, live first, padded with the last live index (0 if none).
    row_count: (nk,) live N-tiles per K-tile row; row_idx: (nk, nn) likewise.
    live_k, live_n: (nk * nn,) tile coordinates of the live tiles (row-major), padded
      with the last live tile; num_live: (1,) their count.
    """

    block_mask: jax.Array
    col_count: jax.Array
    col_idx: jax.Array
    row_count: jax.Array
    row_idx: jax.Array
    live_k: jax.Array
    live_n: jax.Array
    num_live: jax.Array
    block_k: int = dataclasses.field(metadata={"static": True}, default=128)
    block_n: int = dataclasses.field(metadata={"static": True}, default=128)

    @property
    def shape(self) -> tuple[int, int]:
        """(K, N) of the weight this metadata describes."""
        nk, nn = self.block_mask.shape[-2:]
        return nk * self.block_k, nn * self.block_n

    @property
    def density(self) -> jax.Array:
        """Fraction of live tiles."""
        return jnp.mean(self.block_mask.astype(jnp.float32))


def _live_lists(mask: jax.Array):
    """For each row of mask (r, L): (count (r,), indices (r, L)) live first, padded."""
    mask = mask.astype(bool)
    count = jnp.sum(mask, axis=-1, dtype=jnp.int32)
    order = jnp.argsort(~mask, axis=-1, stable=True).astype(jnp.int32)
    pos = jnp.arange(mask.shape[-1], dtype=jnp.int32)
    last = jnp.take_along_axis(order, jnp.maximum(count - 1, 0)[:, None], axis=-1)
    idx = jnp.where(pos[None, :] < count[:, None], order, jnp.where(count[:, None] > 0, last, 0))
    return count, idx


def make_block_meta(block_mask: jax.Array, block_k: int, block_n: int) -> BlockMeta:
    """Build :class:`BlockMeta` from a tile mask (nk, nn) for tiles (block_k, block_n).

    ``block_mask`` is the per-tile mask of W (K, N) = (nk * block_k, nn * block_n), e.g.
    ``jaxlab.sparse.structure.block_mask(mask, info, b)[l]``; any non-zero means live.
    For stacked weights build one meta per matrix (``jax.vmap`` works).
    """
    for name, v in (("block_k", block_k), ("block_n", block_n)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    block_mask = jnp.asarray(block_mask)
    if block_mask.ndim != 2:
        raise ValueError(f"block_mask must be (K // block_k, N // block_n), got shape "
                         f"{block_mask.shape}; build one meta per matrix of a stack")
    return _build(block_mask != 0, block_k, block_n)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _build(live: jax.Array, block_k: int, block_n: int) -> BlockMeta:
    nk, nn = live.shape
    col_count, col_idx = _live_lists(live.T)
    row_count, row_idx = _live_lists(live)
    flat = live.reshape(-1)
    num_live = jnp.sum(flat, dtype=jnp.int32)
    order = jnp.argsort(~flat, stable=True).astype(jnp.int32)
    pos = jnp.arange(nk * nn, dtype=jnp.int32)
    last = order[jnp.maximum(num_live - 1, 0)]
    tiles = jnp.where(pos < num_live, order, jnp.where(num_live > 0, last, 0))
    return BlockMeta(block_mask=live, col_count=col_count, col_idx=col_idx,
                     row_count=row_count, row_idx=row_idx, live_k=tiles // nn,
                     live_n=tiles % nn, num_live=num_live[None], block_k=block_k,
                     block_n=block_n)
