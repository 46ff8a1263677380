"""Public block-sparse matmul ``x @ (w * expand(block_mask))`` with a custom VJP.

Forward and input gradient run :func:`kernel.sparse_matmul` over the live tiles listed in
the :class:`~pallas_kernels.block_sparse_matmul.meta.BlockMeta`; the weight gradient runs
:func:`kernel.sparse_weight_grad` on live tiles only (zero on dead tiles, exactly the
gradient of the masked product). Rows of x (M = prod of leading dims) are zero-padded to
``block.block_m``; W's shape must equal the meta's tiled shape, else ValueError.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pallas_kernels.block_sparse_matmul.kernel import (
    BSBlockSizes,
    sparse_matmul,
    sparse_weight_grad,
)
from pallas_kernels.block_sparse_matmul.meta import BlockMeta
from pallas_kernels.platform import (
    fit_block,
    match_varying,
    resolve_backend,
    resolve_interpret,
    round_up,
)


def _blocks_for(block: BSBlockSizes, m: int, tpu_tiles: bool) -> BSBlockSizes:
    bm = fit_block(block.block_m, m, 128 if tpu_tiles else 16)
    return BSBlockSizes(block_m=bm, num_warps=block.num_warps, num_stages=block.num_stages)


def _pad_rows(a: jax.Array, bm: int) -> jax.Array:
    return jnp.pad(a, ((0, round_up(a.shape[0], bm) - a.shape[0]), (0, 0)))


def _forward(x, w, meta, block, backend, interpret):
    m = x.shape[0]
    blocks = _blocks_for(block, m, backend == "mosaic_tpu" and not interpret)
    y = sparse_matmul(_pad_rows(x, blocks.block_m), w, meta.col_count, meta.col_idx,
                      block_q=meta.block_k, block_p=meta.block_n, transpose_w=False,
                      blocks=blocks, backend=backend, interpret=interpret)
    return y[:m]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _bsmm(x, w, meta, block, backend, interpret):
    return _forward(x, w, meta, block, backend, interpret)


def _bsmm_fwd(x, w, meta, block, backend, interpret):
    return _forward(x, w, meta, block, backend, interpret), (x, w, meta)


def _bsmm_bwd(block, backend, interpret, res, g):
    x, w, meta = res
    m = x.shape[0]
    blocks = _blocks_for(block, m, backend == "mosaic_tpu" and not interpret)
    g = _pad_rows(g.astype(x.dtype), blocks.block_m)
    kw = {"blocks": blocks, "backend": backend, "interpret": interpret}
    dx = sparse_matmul(g, w, meta.row_count, meta.row_idx, block_q=meta.block_n,
                       block_p=meta.block_k, transpose_w=True, **kw)[:m]
    dw = sparse_weight_grad(_pad_rows(x, blocks.block_m), g, meta, **kw)
    return dx, dw.astype(w.dtype), None


_bsmm.defvjp(_bsmm_fwd, _bsmm_bwd)


def check_shapes(x: jax.Array, w: jax.Array, meta: BlockMeta) -> None:
    """Raise ValueError unless x (..., K), w (K, N) and the meta's tiling agree."""
    if not isinstance(meta, BlockMeta):
        raise TypeError(f"meta must come from make_block_meta, got {type(meta).__name__}")
    if meta.block_mask.ndim != 2:
        raise ValueError(f"meta is for a stack of matrices (block_mask {meta.block_mask.shape});"
                         " index it to one matrix before calling")
    if w.ndim != 2 or tuple(w.shape) != meta.shape:
        raise ValueError(
            f"w shape {tuple(w.shape)} does not match the block mask "
            f"{tuple(meta.block_mask.shape)} of ({meta.block_k}, {meta.block_n}) tiles, i.e. "
            f"{meta.shape}; K and N must be multiples of the tile size (pad w or pick a "
            f"tile size dividing both)")
    if x.ndim < 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(f"x shape {tuple(x.shape)} must end in K={w.shape[0]} to multiply "
                         f"w {tuple(w.shape)}")


def block_sparse_matmul(x: jax.Array, w: jax.Array, meta: BlockMeta, *,
                        interpret: bool | None = None,
                        block: BSBlockSizes = BSBlockSizes(),  # noqa: B008 (frozen, immutable)
                        backend: str | None = None) -> jax.Array:
    """``x @ (w * expand(meta.block_mask))`` skipping dead tiles of w.

    Args:
      x: (..., K) activations; leading dims are flattened to M rows (padded to a tile).
      w: (K, N) weight, K = nk * meta.block_k, N = nn * meta.block_n. Values in dead
        tiles are ignored (treated as zero), so w need not be pre-masked.
      meta: :func:`make_block_meta` of the (nk, nn) tile mask, built once per mask update.
      interpret: None = interpret on CPU only. backend: "triton", "mosaic_tpu" or None.
      block: row tile and Triton launch parameters.

    Returns: (..., N) in ``result_type(x, w)``; products accumulate in f32. Gradients:
    dx = g (w * mask)^T over live tiles; dw = x^T g on live tiles, zero on dead ones.

    Sharding: call inside ``jax.shard_map`` (e.g. rows of x over the data axis, w and
    meta replicated); with check_vma=True dw is psum-ed over x's axes like ``jnp.dot``'s.
    Interpret mode inside shard_map needs check_vma=False (a JAX 0.10 interpreter limit).
    """
    x, w = jnp.asarray(x), jnp.asarray(w)
    check_shapes(x, w, meta)
    if not isinstance(block, BSBlockSizes):
        raise TypeError(f"block must be a BSBlockSizes, got {type(block).__name__}")
    interpret = resolve_interpret(interpret)
    backend = resolve_backend(backend)
    if backend == "mosaic_tpu" and not interpret and (meta.block_k % 128 or meta.block_n % 128):
        raise ValueError(f"Mosaic TPU needs tiles that are multiples of 128, got "
                         f"({meta.block_k}, {meta.block_n})")
    dtype = jnp.result_type(x.dtype, w.dtype)
    lead = x.shape[:-1]
    x2 = x.reshape((-1, x.shape[-1])).astype(dtype)
    if x2.shape[0] == 0:
        return jnp.zeros(lead + (w.shape[1],), dtype)
    x2, w = match_varying(x2, w.astype(dtype))  # inside shard_map: dW psum-ed like jnp.dot's
    y = _bsmm(x2, w, meta, block, backend, interpret)
    return y.reshape(lead + (w.shape[1],))
