"""Boolean masks and exact top-k by threshold search, without sorting or gathering.

Top-k is the core of every pruning decision. jaxpruner computes it with a full argsort of
each tensor, which gathers a sharded tensor onto every device. Here the k-th largest
score is found by *bisection on the bits of the value*: scores are mapped to ``uint32``
keys whose order is the float order, and the threshold ``T`` is built one bit at a time
from the most significant, keeping the bit when ``count(key >= T) >= k``. Every count is
a sum over the array, so the arrays stay sharded (each device sums its shard, then one
scalar all-reduce). Ties at the threshold are broken by the flat index, with a second
bisection on the index, so the number of kept entries is *exactly* k.

Cost: 32 + ceil(log2(n)) elementwise passes over the scores per search.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_U32 = jnp.uint32


def dense_mask_like(x: jax.Array) -> jax.Array:
    """All-True bool mask of ``x``'s shape, computed *from* ``x`` so that sharding
    propagation gives it ``x``'s sharding (``jnp.ones_like`` is a constant and would be
    replicated). ``(x == x) | (x != x)`` is True for NaN too."""
    return (x == x) | (x != x)


def order_keys(scores: jax.Array) -> jax.Array:
    """float -> uint32 keys with the same order (``-inf`` smallest, ``+inf`` largest).

    Positive floats: flip the sign bit; negative floats: flip all bits.
    """
    bits = jax.lax.bitcast_convert_type(scores.astype(jnp.float32), _U32)
    negative = (bits >> 31) == 1
    return jnp.where(negative, ~bits, bits | _U32(0x80000000))


def _sum_core(x: jax.Array, batch_ndim: int) -> jax.Array:
    """Sum over all axes after the first ``batch_ndim``, as int32."""
    return jnp.sum(x, axis=tuple(range(batch_ndim, x.ndim)), dtype=jnp.int32)


def _expand(v: jax.Array, ndim: int) -> jax.Array:
    return jnp.reshape(v, v.shape + (1,) * (ndim - v.ndim))


def _flat_index(shape: Sequence[int], batch_ndim: int, offset: int = 0) -> jax.Array:
    """int32 row-major index of each entry within its core (axes after ``batch_ndim``),
    built from broadcast iotas (elementwise, so it shards like the scores)."""
    idx = jnp.full((1,) * len(shape), offset, jnp.int32)
    stride = 1
    for axis in reversed(range(batch_ndim, len(shape))):
        idx = idx + jax.lax.broadcasted_iota(jnp.int32, shape, axis) * stride
        stride *= shape[axis]
    return idx


def topk_masks(scores: Sequence[jax.Array], k: jax.Array, batch_ndim: int = 0) -> list[jax.Array]:
    """Exactly ``k`` largest entries, jointly over the arrays in ``scores``.

    Args:
      scores: arrays of shapes ``batch_shape + core_i`` (same ``batch_shape``, any cores).
        One array with ``batch_ndim = 1`` is per-matrix top-k of a stack; several arrays
        with ``batch_ndim = 0`` is one global threshold across tensors.
      k: int, shape ``batch_shape``: how many to keep per batch entry, summed over the
        arrays; clipped to ``[0, total]``.
      batch_ndim: leading axes that get separate thresholds.

    Returns:
      bool masks of the shapes of ``scores`` with exactly ``k`` True per batch entry.
      Among equal scores the lowest (array, flat index) wins.
    """
    scores = list(scores)
    if not scores:
        return []
    batch_shape = scores[0].shape[:batch_ndim]
    for s in scores:
        if s.shape[:batch_ndim] != batch_shape:
            raise ValueError(f"scores have batch shapes {[s.shape[:batch_ndim] for s in scores]};"
                             " they must all equal the first")
    total = sum(math.prod(s.shape[batch_ndim:]) for s in scores)
    if total >= 2**31:
        raise ValueError(f"top-k over {total} entries exceeds int32 counts; split the pool")
    k = jnp.clip(jnp.broadcast_to(jnp.asarray(k, jnp.int32), batch_shape), 0, total)
    keys = [order_keys(s) for s in scores]

    def count(pred) -> jax.Array:
        return sum(_sum_core(pred(i, key), batch_ndim) for i, key in enumerate(keys))

    # 1. Largest T with count(key >= T) >= k, one bit at a time from the top.
    def value_bit(i, t):
        cand = t | (_U32(1) << (31 - i).astype(_U32))
        c = count(lambda _, key: key >= _expand(cand, key.ndim))
        return jnp.where(c >= k, cand, t)

    t = jax.lax.fori_loop(0, 32, value_bit, jnp.zeros(batch_shape, _U32))
    above = count(lambda _, key: key > _expand(t, key.ndim))
    need = k - above  # >= 1 when k >= 1: ties at T to keep, by index

    # 2. Largest J with count(key == T and index < J) < need: keep ties with index <= J.
    offsets = np.cumsum([0] + [math.prod(s.shape[batch_ndim:]) for s in scores])
    idx = [_flat_index(s.shape, batch_ndim, int(o)) for s, o in zip(scores, offsets)]
    nbits = max(1, int(total).bit_length())

    def index_bit(i, j):
        cand = j | (jnp.int32(1) << (nbits - 1 - i))
        c = count(lambda a, key: (key == _expand(t, key.ndim)) & (idx[a] < _expand(cand, key.ndim)))
        return jnp.where(c < need, cand, j)

    j = jax.lax.fori_loop(0, nbits, index_bit, jnp.zeros(batch_shape, jnp.int32))
    j = jnp.where(need > 0, j, -1)
    return [(key > _expand(t, key.ndim))
            | ((key == _expand(t, key.ndim)) & (ix <= _expand(j, key.ndim)))
            for key, ix in zip(keys, idx)]


def count_true(mask: jax.Array) -> jax.Array:
    """Number of True entries, int32 scalar."""
    return jnp.sum(mask, dtype=jnp.int32)


def apply_mask(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``x`` with entries where ``mask`` is False set to exactly zero."""
    return jnp.where(mask, x, jnp.zeros((), x.dtype))
