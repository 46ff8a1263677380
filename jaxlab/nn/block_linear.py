"""Linear layers on block-sparse weights: ``x @ W`` through the Pallas block-sparse matmul.

With ``SparsityConfig.structure = 'block'`` and the hard-mask method (``prune``), the
sparse wrapper keeps every pruned ``b x b`` tile of a hidden matrix exactly zero
(:mod:`jaxlab.sparse.prune`). The model's :class:`~jaxlab.nn.layers.DenseGeneral` then
multiplies with :func:`block_sparse_dot`, which skips those tiles in the forward pass, in
``dx`` and in ``dW`` (``pallas_kernels/block_sparse_matmul``).

The tile mask is read off the weight itself (a tile is live when any entry is non-zero),
so the model needs no extra state and the metadata always matches the current mask: it
is rebuilt inside the step from an ``(fan_in/b, fan_out/b)`` reduction, which costs one
pass over ``W`` (``M`` times less than the matmul, ``M`` = batch x sequence rows).

Gradients differ from the dense masked product only on dead tiles (zero here, the dense
``x^T g`` there); the prune wrapper masks gradients before clipping and the optimizer, so
the updates are the same. Methods that read dense gradients of pruned weights (SR-STE,
AdamS, gradient-based regrowth scores) must keep the dense path:
:func:`check_block_kernel_compatible` says so.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from pallas_kernels.block_sparse_matmul import block_sparse_matmul, make_block_meta


def live_tiles(w2: jax.Array, b: int) -> jax.Array:
    """``(K, N) -> (K/b, N/b)`` bool: tiles of ``w2`` with any non-zero entry."""
    k, n = w2.shape
    if k % b or n % b:
        raise ValueError(f"block-sparse linear: weight of shape {(k, n)} (flattened to "
                         f"fan_in x fan_out) is not a multiple of the block size {b}; pick "
                         f"a block size dividing both")
    tiles = jnp.reshape(w2 != 0, (k // b, b, n // b, b))
    return jnp.any(tiles, axis=(1, 3))


def block_sparse_dot(x: jax.Array, w: jax.Array, in_ndim: int, b: int, *,
                     interpret: bool | None = None) -> jax.Array:
    """``x (..., *in) @ w (*in, *out) -> (..., *out)``, skipping all-zero ``b x b`` tiles.

    Args:
      x: activations whose trailing ``in_ndim`` axes match ``w``'s leading ones.
      w: kernel laid out ``(*fan_in_dims, *fan_out_dims)`` (as DenseGeneral's).
      in_ndim: number of fan-in axes of ``w``.
      b: tile size; ``prod(fan_in_dims)`` and ``prod(fan_out_dims)`` must be multiples.
      interpret: Pallas interpret mode; None interprets on CPU only.
    """
    in_shape, out_shape = w.shape[:in_ndim], w.shape[in_ndim:]
    if tuple(x.shape[x.ndim - in_ndim:]) != tuple(in_shape):
        raise ValueError(f"x shape {x.shape} must end in the kernel's fan-in axes {in_shape}")
    k, n = math.prod(in_shape), math.prod(out_shape)
    w2 = jnp.reshape(w, (k, n))
    meta = make_block_meta(jax.lax.stop_gradient(live_tiles(w2, b)), b, b)
    lead = x.shape[:x.ndim - in_ndim]
    y = block_sparse_matmul(jnp.reshape(x, (*lead, k)), w2, meta, interpret=interpret)
    return jnp.reshape(y, (*lead, *out_shape))


def block_kernel_problem(structure: str, method: str, score: str) -> str | None:
    """Why the kernel path would not give the dense path's updates for this sparse setup
    (pruned tiles must stay exactly zero and no dense gradient of a pruned weight may be
    read), or None when it would."""
    if structure != "block":
        return f"the block-sparse kernel needs sparsity.structure='block', got {structure!r}"
    if method != "prune":
        return (f"the block-sparse kernel needs sparsity.method='prune' (hard masks); "
                f"{method!r} reads dense gradients of pruned weights")
    if score == "saliency":
        return ("the block-sparse kernel needs a gradient-free sparsity.score ('magnitude' or "
                "'random'); 'saliency' scores weights by their dense gradients")
    return None


def check_block_kernel_compatible(structure: str, method: str, score: str) -> None:
    """Raises :func:`block_kernel_problem`'s reason, if there is one."""
    problem = block_kernel_problem(structure, method, score)
    if problem is not None:
        raise ValueError(problem)
