"""Pallas kernels for one Newton-Schulz step ``X <- a X + (b A + c A^2) X``, ``A = X X^T``.

Muon (Keller Jordan, github KellerJordan/Muon) orthogonalises momentum with a quintic NS
iteration; Polar Express (arXiv 2505.16932) varies (a, b, c) per step. ``X X^T`` and
``A^2 = A A^T`` are symmetric, so only the upper triangle of (block_m x block_m) tiles is
computed (the triangle idea of Dao AI Lab's gram-newton-schulz) and the lower triangle is
mirrored. Per step on an (m, n) matrix, m <= n, this costs ~ m^2 n + m^3 (two triangles)
+ 2 m^2 n (the update) FLOPs instead of 4 m^2 n + 2 m^3.

Two kernels per step, each with two bodies over the same tiling:

- :func:`symmetric_product`: ``S = alpha Y Y^T + beta C`` on upper-triangle tiles, for
  ``A = X X^T`` (alpha=1, no C) and ``B = c A A^T + b A`` (C = A).
- :func:`ns_update`: ``X' = a X + B X``.

Bodies: ``"triton"`` (GPU, Triton backend: each program holds full contraction panels and
loops over ``block_k`` chunks in registers) and ``"mosaic_tpu"`` (TPU: the contraction is
the last, "arbitrary", grid axis with an f32 VMEM accumulator). Inputs are bf16 (or the
compute dtype), products accumulate in f32 and the epilogue runs in f32 before one cast.
All shapes here are already padded to the tiles by ``ops.py``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels.platform import is_power_of_2, out_struct

_NT = (((1,), (1,)), ((), ()))  # dot_general dims for  lhs @ rhs^T


@dataclasses.dataclass(frozen=True)
class NSBlockSizes:
    """Tile sizes of the NS kernels (powers of two; Mosaic TPU wants multiples of 128).

    block_m: rows of X per tile; A and B are tiled (block_m, block_m).
    block_n: columns of X per output tile of the update ``a X + B X``.
    block_k: contraction chunk (over n for X X^T, over m for A A^T and B X; capped at
      block_m for the latter).
    num_warps, num_stages: Triton launch parameters (GPU only; None = Triton default).
    """

    block_m: int = 128
    block_n: int = 128
    block_k: int = 64
    num_warps: int | None = None
    num_stages: int | None = None

    def __post_init__(self):
        for name in ("block_m", "block_n", "block_k"):
            v = getattr(self, name)
            if not is_power_of_2(v) or v < 8:
                raise ValueError(f"NSBlockSizes.{name} must be a power of two >= 8, got {v!r}")
        for name in ("num_warps", "num_stages"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"NSBlockSizes.{name} must be a positive int or None, got {v!r}")


# ---------------------------------------------------------------------------------------
# Upper-triangle enumeration without lookup tables.
#
# The nb (nb + 1) / 2 tiles (i, j), i <= j, are laid out as a dense (R, W) rectangle by
# pairing triangle row r with row nb - 1 - r (even nb: R = nb/2, W = nb + 1) or, for odd
# nb, row 0 alone and rows 1..nb-1 paired the same way (R = (nb+1)/2, W = nb). Only
# integer compares and selects, so it lowers in Triton and Mosaic index maps alike.
# ---------------------------------------------------------------------------------------


def triangle_grid(nb: int) -> tuple[int, int]:
    """(R, W) rectangle holding exactly the nb (nb + 1) / 2 upper-triangle tiles."""
    return ((nb + 1) // 2, nb) if nb % 2 else (nb // 2, nb + 1)


def triangle_tile(r, c, nb: int):
    """Tile (i, j), i <= j, at rectangle position (r, c) of :func:`triangle_grid`."""
    first = c < nb - r
    if nb % 2:
        i2, j2 = nb - r, c
    else:
        i2, j2 = nb - 1 - r, c - 1
    return jnp.where(first, r, i2), jnp.where(first, r + c, j2)


def mirror_upper(s: jax.Array, block: int) -> jax.Array:
    """Fill the lower-triangle tiles of ``s`` (..., m, m) from the upper ones (transposed).

    The kernels never write lower tiles (they hold garbage, NaN in interpret mode);
    ``where`` selects without reading them arithmetically. O(m^2) memory vs O(m^2 n) FLOPs.
    """
    tile = jnp.arange(s.shape[-1]) // block
    upper = tile[:, None] <= tile[None, :]
    return jnp.where(upper, s, jnp.swapaxes(s, -1, -2))


def _compiler_params(backend: str, semantics: tuple[str, ...], blocks: NSBlockSizes):
    if backend == "mosaic_tpu":
        from jax.experimental.pallas import tpu as pltpu

        return pltpu.CompilerParams(dimension_semantics=semantics)
    from jax.experimental.pallas import triton as pltriton

    return pltriton.CompilerParams(num_warps=blocks.num_warps, num_stages=blocks.num_stages)


def _sym_epilogue(acc, c_ref, alpha: float, beta: float, dtype):
    out = acc if alpha == 1.0 else alpha * acc
    if c_ref is not None:
        out = out + beta * c_ref[...].astype(jnp.float32)
    return out.astype(dtype)


# --- symmetric product: Triton body ---------------------------------------------------


def _sym_kernel_triton(yi_ref, yj_ref, *refs, alpha, beta, block_k, has_c):
    """yi/yj: (bm, K) row panels of Y for tile rows i and j; out: (bm, bm) tile (i, j)."""
    c_ref, o_ref = refs if has_c else (None, refs[0])
    bm = yi_ref.shape[0]

    def body(kk, acc):
        s = pl.ds(pl.multiple_of(kk * block_k, block_k), block_k)
        return acc + lax.dot_general(yi_ref[:, s], yj_ref[:, s], _NT,
                                     preferred_element_type=jnp.float32)

    acc = lax.fori_loop(0, yi_ref.shape[1] // block_k, body,
                        jnp.zeros((bm, bm), jnp.float32))
    o_ref[...] = _sym_epilogue(acc, c_ref, alpha, beta, o_ref.dtype)


# --- symmetric product: Mosaic TPU body ----------------------------------------------


def _sym_kernel_tpu(yi_ref, yj_ref, *refs, alpha, beta, has_c):
    """yi/yj: (bm, bk) chunks; grid axis 3 walks the contraction; acc: f32 VMEM scratch."""
    if has_c:
        c_ref, o_ref, acc_ref = refs
    else:
        c_ref, (o_ref, acc_ref) = None, refs
    kk = pl.program_id(3)

    @pl.when(kk == 0)
    def _():
        acc_ref[...] = jnp.zeros_like(acc_ref)

    acc_ref[...] += lax.dot_general(yi_ref[...], yj_ref[...], _NT,
                                    preferred_element_type=jnp.float32)

    @pl.when(kk == pl.num_programs(3) - 1)
    def _():
        o_ref[...] = _sym_epilogue(acc_ref[...], c_ref, alpha, beta, o_ref.dtype)


def symmetric_product(y, c=None, *, alpha: float = 1.0, beta: float = 0.0,
                      blocks: NSBlockSizes, backend: str, interpret: bool) -> jax.Array:
    """``alpha * Y Y^T + beta * C`` for Y (B, m, K) and C (B, m, m) symmetric or None.

    m must be a multiple of ``blocks.block_m`` and K of the contraction chunk. Only the
    nb (nb + 1) / 2 upper tiles are computed; the result is mirrored to a full (B, m, m).
    """
    nbatch, m, k = y.shape
    bm = blocks.block_m
    bk = min(blocks.block_k, k)
    if m % bm or k % bk:
        raise ValueError(f"symmetric_product: Y shape {y.shape} must tile by "
                         f"(block_m={bm}, block_k={bk})")
    nb = m // bm
    rows, width = triangle_grid(nb)
    has_c = c is not None
    out_shape = out_struct((nbatch, m, m), y.dtype, y, *([c] if has_c else []))
    flops = nbatch * (nb * (nb + 1) // 2) * 2 * bm * bm * k
    cost = pl.CostEstimate(flops=flops, transcendentals=0,
                           bytes_accessed=y.size * y.dtype.itemsize * (nb + 1) // 2
                           + (2 if has_c else 1) * nbatch * m * m * y.dtype.itemsize)

    if backend == "triton":
        def panel(row):
            def index_map(b, r, cc):
                i, j = triangle_tile(r, cc, nb)
                return (b, (i, j)[row], 0)
            return pl.BlockSpec((None, bm, k), index_map)

        def tile_map(b, r, cc):
            i, j = triangle_tile(r, cc, nb)
            return (b, i, j)

        in_specs = [panel(0), panel(1)]
        if has_c:
            in_specs.append(pl.BlockSpec((None, bm, bm), tile_map))
        kernel = functools.partial(_sym_kernel_triton, alpha=alpha, beta=beta,
                                   block_k=bk, has_c=has_c)
        call = pl.pallas_call(
            kernel, out_shape=out_shape, grid=(nbatch, rows, width), in_specs=in_specs,
            out_specs=pl.BlockSpec((None, bm, bm), tile_map),
            compiler_params=_compiler_params(backend, (), blocks),
            interpret=interpret, cost_estimate=cost, name="ns_symmetric_product")
    else:
        from jax.experimental.pallas import tpu as pltpu

        def chunk(row):
            def index_map(b, r, cc, kk):
                i, j = triangle_tile(r, cc, nb)
                return (b, (i, j)[row], kk)
            return pl.BlockSpec((None, bm, bk), index_map)

        def tile_map(b, r, cc, kk):
            i, j = triangle_tile(r, cc, nb)
            return (b, i, j)

        in_specs = [chunk(0), chunk(1)]
        if has_c:
            in_specs.append(pl.BlockSpec((None, bm, bm), tile_map))
        kernel = functools.partial(_sym_kernel_tpu, alpha=alpha, beta=beta, has_c=has_c)
        call = pl.pallas_call(
            kernel, out_shape=out_shape, grid=(nbatch, rows, width, k // bk),
            in_specs=in_specs, out_specs=pl.BlockSpec((None, bm, bm), tile_map),
            scratch_shapes=[pltpu.VMEM((bm, bm), jnp.float32)],
            compiler_params=_compiler_params(
                backend, ("parallel", "parallel", "parallel", "arbitrary"), blocks),
            interpret=interpret, cost_estimate=cost, name="ns_symmetric_product")

    args = (y, y, c) if has_c else (y, y)
    return mirror_upper(call(*args), bm)


# --- update X' = a X + B X -------------------------------------------------------------


def _update_kernel_triton(b_ref, xcol_ref, xtile_ref, o_ref, *, a, block_k):
    """b: (bm, m) row panel of B; xcol: (m, bn) column panel of X; xtile/o: (bm, bn)."""

    def body(kk, acc):
        s = pl.ds(pl.multiple_of(kk * block_k, block_k), block_k)
        return acc + jnp.dot(b_ref[:, s], xcol_ref[s, :], preferred_element_type=jnp.float32)

    acc = lax.fori_loop(0, b_ref.shape[1] // block_k, body,
                        jnp.zeros(o_ref.shape, jnp.float32))
    o_ref[...] = (a * xtile_ref[...].astype(jnp.float32) + acc).astype(o_ref.dtype)


def _update_kernel_tpu(b_ref, xk_ref, xtile_ref, o_ref, acc_ref, *, a):
    """b: (bm, bk); xk: (bk, bn); xtile/o: (bm, bn); grid axis 3 walks the contraction."""
    kk = pl.program_id(3)

    @pl.when(kk == 0)
    def _():
        acc_ref[...] = a * xtile_ref[...].astype(jnp.float32)

    acc_ref[...] += jnp.dot(b_ref[...], xk_ref[...], preferred_element_type=jnp.float32)

    @pl.when(kk == pl.num_programs(3) - 1)
    def _():
        o_ref[...] = acc_ref[...].astype(o_ref.dtype)


def ns_update(bmat, x, *, a: float, blocks: NSBlockSizes, backend: str,
              interpret: bool) -> jax.Array:
    """``a X + B X`` for B (B, m, m) and X (B, m, n), tiles (block_m, block_n)."""
    nbatch, m, n = x.shape
    bm, bn = blocks.block_m, blocks.block_n
    bk = min(blocks.block_k, bm)
    if bmat.shape != (nbatch, m, m) or m % bm or n % bn:
        raise ValueError(f"ns_update: B {bmat.shape} and X {x.shape} must be (B, m, m) and "
                         f"(B, m, n) with m % {bm} == 0 and n % {bn} == 0")
    out_shape = out_struct(x.shape, x.dtype, x, bmat)
    item = x.dtype.itemsize
    cost = pl.CostEstimate(flops=2 * nbatch * m * m * n, transcendentals=0,
                           bytes_accessed=item * (bmat.size * (n // bn) + x.size * (m // bm + 2)))
    if backend == "triton":
        call = pl.pallas_call(
            functools.partial(_update_kernel_triton, a=a, block_k=bk),
            out_shape=out_shape, grid=(nbatch, m // bm, n // bn),
            in_specs=[pl.BlockSpec((None, bm, m), lambda b, i, j: (b, i, 0)),
                      pl.BlockSpec((None, m, bn), lambda b, i, j: (b, 0, j)),
                      pl.BlockSpec((None, bm, bn), lambda b, i, j: (b, i, j))],
            out_specs=pl.BlockSpec((None, bm, bn), lambda b, i, j: (b, i, j)),
            compiler_params=_compiler_params(backend, (), blocks),
            interpret=interpret, cost_estimate=cost, name="ns_update")
    else:
        from jax.experimental.pallas import tpu as pltpu

        call = pl.pallas_call(
            functools.partial(_update_kernel_tpu, a=a),
            out_shape=out_shape, grid=(nbatch, m // bm, n // bn, m // bk),
            in_specs=[pl.BlockSpec((None, bm, bk), lambda b, i, j, kk: (b, i, kk)),
                      pl.BlockSpec((None, bk, bn), lambda b, i, j, kk: (b, kk, j)),
                      pl.BlockSpec((None, bm, bn), lambda b, i, j, kk: (b, i, j))],
            out_specs=pl.BlockSpec((None, bm, bn), lambda b, i, j, kk: (b, i, j)),
            scratch_shapes=[pltpu.VMEM((bm, bn), jnp.float32)],
            compiler_params=_compiler_params(
                backend, ("parallel", "parallel", "parallel", "arbitrary"), blocks),
            interpret=interpret, cost_estimate=cost, name="ns_update")
    return call(bmat, x, x)


def ns_step(x, a: float, b: float, c: float, *, blocks: NSBlockSizes, backend: str,
            interpret: bool) -> jax.Array:
    """One NS step on padded X (B, m, n), m <= n: A = X X^T, B = b A + c A^2, a X + B X."""
    kw = {"blocks": blocks, "backend": backend, "interpret": interpret}
    amat = symmetric_product(x, **kw)
    bmat = symmetric_product(amat, amat, alpha=c, beta=b, **kw)
    return ns_update(bmat, x, a=a, **kw)
