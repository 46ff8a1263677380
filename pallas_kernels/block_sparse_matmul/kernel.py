"""Pallas kernels for ``x @ (W * expand(block_mask))`` that skip dead tiles of W.

Block sparsity is how sparse training turns into wall-clock savings on H100 and TPU
(neither exposes unstructured or, on Hopper via Pallas, 2:4 sparse MMA); cf. block-sparse
GPU kernels (Gray, Radford & Kingma 2017, openai/blocksparse) and the TPU splash-attention
scalar-prefetch pattern. Work and memory traffic scale with the number of live tiles.

Kernels (shapes already padded by ``ops.py``; tile lists from :mod:`.meta`):

- :func:`sparse_matmul`: ``Y = X @ R`` where R's live tiles are listed per output tile
  column. Forward: R = W. Input gradient: R = W^T (``transpose_w=True``), lists per
  K-tile row.
- :func:`sparse_weight_grad`: ``dW = X^T G`` on live tiles only, zero elsewhere.

Bodies: ``"triton"`` (GPU: one program per output tile loops over its live contraction
tiles with a data-dependent trip count; tile offsets come from scalar loads) and
``"mosaic_tpu"`` (TPU: the live-tile lists are scalar-prefetched into SMEM and drive the
BlockSpec index maps, so dead tiles are never copied into VMEM).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels.platform import is_power_of_2, match_varying, out_struct

_NN = (((1,), (0,)), ((), ()))  # lhs @ rhs
_NT = (((1,), (1,)), ((), ()))  # lhs @ rhs^T
_TN = (((0,), (0,)), ((), ()))  # lhs^T @ rhs


@dataclasses.dataclass(frozen=True)
class BSBlockSizes:
    """Launch parameters of the block-sparse kernels (W's tiles live in the meta).

    block_m: rows of x per output tile (M is zero-padded to it; shrunk for small M).
    num_warps, num_stages: Triton launch parameters (GPU only; None = Triton default).
    """

    block_m: int = 128
    num_warps: int | None = None
    num_stages: int | None = None

    def __post_init__(self):
        if not is_power_of_2(self.block_m) or self.block_m < 8:
            raise ValueError(f"BSBlockSizes.block_m must be a power of two >= 8, "
                             f"got {self.block_m!r}")
        for name in ("num_warps", "num_stages"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"BSBlockSizes.{name} must be a positive int or None, got {v!r}")


def _params(backend: str, semantics: tuple[str, ...], blocks: BSBlockSizes):
    if backend == "mosaic_tpu":
        from jax.experimental.pallas import tpu as pltpu

        return pltpu.CompilerParams(dimension_semantics=semantics)
    from jax.experimental.pallas import triton as pltriton

    return pltriton.CompilerParams(num_warps=blocks.num_warps, num_stages=blocks.num_stages)


# --- Y = X @ R over live tiles ----------------------------------------------------------


def _matmul_kernel_triton(count_ref, idx_ref, x_ref, w_ref, o_ref, *, block_q, transpose_w):
    """x: (bm, Q) row panel; w: (Q, bp) column panel, or (bp, Q) row panel if transposed;
    count/idx: whole (P,), (P, nq) lists; o: (bm, bp)."""
    j = pl.program_id(1)

    def body(s, acc):
        q = pl.multiple_of(idx_ref[j, s] * block_q, block_q)
        xs = x_ref[:, pl.ds(q, block_q)]
        if transpose_w:
            return acc + lax.dot_general(xs, w_ref[:, pl.ds(q, block_q)], _NT,
                                         preferred_element_type=jnp.float32)
        return acc + lax.dot_general(xs, w_ref[pl.ds(q, block_q), :], _NN,
                                     preferred_element_type=jnp.float32)

    acc = lax.fori_loop(0, count_ref[j], body, jnp.zeros(o_ref.shape, jnp.float32))
    o_ref[...] = acc.astype(o_ref.dtype)


def _matmul_kernel_tpu(count_ref, idx_ref, x_ref, w_ref, o_ref, acc_ref, *, transpose_w):
    """x: (bm, bq) tile; w: (bq, bp) or (bp, bq) tile picked by idx[j, s]; grid axis 2 = s."""
    j, s = pl.program_id(1), pl.program_id(2)

    @pl.when(s == 0)
    def _():
        acc_ref[...] = jnp.zeros_like(acc_ref)

    @pl.when(s < count_ref[j])
    def _():
        acc_ref[...] += lax.dot_general(x_ref[...], w_ref[...], _NT if transpose_w else _NN,
                                        preferred_element_type=jnp.float32)

    @pl.when(s == pl.num_programs(2) - 1)
    def _():
        o_ref[...] = acc_ref[...].astype(o_ref.dtype)


def sparse_matmul(x, w, count, idx, *, block_q: int, block_p: int, transpose_w: bool,
                  blocks: BSBlockSizes, backend: str, interpret: bool) -> jax.Array:
    """Y (M, P) = X (M, Q) @ R, R = W (Q, P) or W^T with W (P, Q) if ``transpose_w``.

    count (P/bp,) and idx (P/bp, Q/bq) list the live Q-tiles of each output tile column.
    """
    m, q_dim = x.shape
    p_dim = w.shape[0] if transpose_w else w.shape[1]
    bm = blocks.block_m
    npt, nqt = p_dim // block_p, q_dim // block_q
    out_shape = out_struct((m, p_dim), x.dtype, x, w, count, idx)
    w_block = (block_p, block_q) if transpose_w else (block_q, block_p)

    if backend == "triton":
        w_panel = (block_p, q_dim) if transpose_w else (q_dim, block_p)
        call = pl.pallas_call(
            functools.partial(_matmul_kernel_triton, block_q=block_q, transpose_w=transpose_w),
            out_shape=out_shape, grid=(m // bm, npt),
            in_specs=[pl.BlockSpec(count.shape, lambda i, j: (0,)),
                      pl.BlockSpec(idx.shape, lambda i, j: (0, 0)),
                      pl.BlockSpec((bm, q_dim), lambda i, j: (i, 0)),
                      pl.BlockSpec(w_panel, (lambda i, j: (j, 0)) if transpose_w
                                   else (lambda i, j: (0, j)))],
            out_specs=pl.BlockSpec((bm, block_p), lambda i, j: (i, j)),
            compiler_params=_params(backend, (), blocks), interpret=interpret,
            name="block_sparse_matmul")
        return call(count, idx, x, w)

    from jax.experimental.pallas import tpu as pltpu

    def w_map(i, j, s, cnt, ids):
        return (j, ids[j, s]) if transpose_w else (ids[j, s], j)

    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=2, grid=(m // bm, npt, nqt),
        in_specs=[pl.BlockSpec((bm, block_q), lambda i, j, s, cnt, ids: (i, ids[j, s])),
                  pl.BlockSpec(w_block, w_map)],
        out_specs=pl.BlockSpec((bm, block_p), lambda i, j, s, cnt, ids: (i, j)),
        scratch_shapes=[pltpu.VMEM((bm, block_p), jnp.float32)])
    call = pl.pallas_call(
        functools.partial(_matmul_kernel_tpu, transpose_w=transpose_w),
        out_shape=out_shape, grid_spec=grid_spec,
        compiler_params=_params(backend, ("parallel", "parallel", "arbitrary"), blocks),
        interpret=interpret, name="block_sparse_matmul")
    return call(count, idx, x, w)


# --- dW = X^T G on live tiles -----------------------------------------------------------


def _wgrad_kernel_triton(mask_ref, x_ref, g_ref, o_ref, *, block_m):
    """x: (M, bk) and g: (M, bn) column panels; mask: whole (nk, nn); o: (bk, bn) tile."""
    kb, nb = pl.program_id(0), pl.program_id(1)

    def body(r, acc):
        rows = pl.ds(pl.multiple_of(r * block_m, block_m), block_m)
        return acc + lax.dot_general(x_ref[rows, :], g_ref[rows, :], _TN,
                                     preferred_element_type=jnp.float32)

    n_chunks = jnp.where(mask_ref[kb, nb] != 0, x_ref.shape[0] // block_m, 0)
    acc = lax.fori_loop(0, n_chunks, body, jnp.zeros(o_ref.shape, jnp.float32))
    o_ref[...] = acc.astype(o_ref.dtype)


def _wgrad_kernel_tpu(lk_ref, ln_ref, nl_ref, x_ref, g_ref, zeros_ref, o_ref, acc_ref):
    """x: (bm, bk), g: (bm, bn) row chunks of live tile p; grid axis 1 walks M."""
    del lk_ref, ln_ref, zeros_ref  # the lists drive the index maps; zeros alias the output
    p, r = pl.program_id(0), pl.program_id(1)
    last = r == pl.num_programs(1) - 1
    live = p < nl_ref[0]

    @pl.when(live & (r == 0))
    def _():
        acc_ref[...] = jnp.zeros_like(acc_ref)

    @pl.when(live)
    def _():
        acc_ref[...] += lax.dot_general(x_ref[...], g_ref[...], _TN,
                                        preferred_element_type=jnp.float32)

    @pl.when(live & last)
    def _():
        o_ref[...] = acc_ref[...].astype(o_ref.dtype)

    # No live tile: every slot maps to tile (0, 0), which must still come out zero.
    @pl.when((nl_ref[0] == 0) & (p == 0))
    def _():
        o_ref[...] = jnp.zeros_like(o_ref)


def sparse_weight_grad(x, g, meta, *, blocks: BSBlockSizes, backend: str,
                       interpret: bool) -> jax.Array:
    """dW (K, N) = X (M, K)^T @ G (M, N) on the live tiles of ``meta``; zero on dead ones."""
    m, k_dim = x.shape
    n_dim = g.shape[1]
    bm, bk, bn = blocks.block_m, meta.block_k, meta.block_n
    nkt, nnt = meta.block_mask.shape
    out_shape = out_struct((k_dim, n_dim), x.dtype, x, g, meta.block_mask)

    if backend == "triton":
        call = pl.pallas_call(
            functools.partial(_wgrad_kernel_triton, block_m=bm),
            out_shape=out_shape, grid=(nkt, nnt),
            in_specs=[pl.BlockSpec((nkt, nnt), lambda kb, nb: (0, 0)),
                      pl.BlockSpec((m, bk), lambda kb, nb: (0, kb)),
                      pl.BlockSpec((m, bn), lambda kb, nb: (0, nb))],
            out_specs=pl.BlockSpec((bk, bn), lambda kb, nb: (kb, nb)),
            compiler_params=_params(backend, (), blocks), interpret=interpret,
            name="block_sparse_weight_grad")
        return call(meta.block_mask.astype(jnp.int32), x, g)

    from jax.experimental.pallas import tpu as pltpu

    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=3, grid=(nkt * nnt, m // bm),
        in_specs=[pl.BlockSpec((bm, bk), lambda p, r, lk, ln, nl: (r, lk[p])),
                  pl.BlockSpec((bm, bn), lambda p, r, lk, ln, nl: (r, ln[p])),
                  pl.BlockSpec(memory_space=pl.ANY)],
        out_specs=pl.BlockSpec((bk, bn), lambda p, r, lk, ln, nl: (lk[p], ln[p])),
        scratch_shapes=[pltpu.VMEM((bk, bn), jnp.float32)])
    call = pl.pallas_call(
        _wgrad_kernel_tpu, out_shape=out_shape, grid_spec=grid_spec,
        # flat operand 5 (after 3 prefetched lists, x and g) is the zero-filled output.
        # Both axes "arbitrary": padded slots rely on the last live tile's buffer staying
        # resident, which a megacore split of the slot axis would break.
        input_output_aliases={5: 0},
        compiler_params=_params(backend, ("arbitrary", "arbitrary"), blocks),
        interpret=interpret, name="block_sparse_weight_grad")
    zeros = match_varying(jnp.zeros((k_dim, n_dim), x.dtype), x, g)[0]  # aliased output
    return call(meta.live_k, meta.live_n, meta.num_live, x, g, zeros)
