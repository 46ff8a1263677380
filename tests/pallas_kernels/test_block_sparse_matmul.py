"""Block-sparse matmul kernels vs ``x @ (w * expand(mask))``: outputs, dx and dW.

Both kernel bodies run in interpret mode on CPU (the Mosaic TPU one also once under the
TPU interpreter, which simulates SMEM scalar prefetch and VMEM). Tolerances: f32 inputs
rtol = atol = 1e-5 (only the f32 summation order differs from the dense reference);
bf16 inputs: both sides accumulate in f32 and round once, so they may differ by one bf16
rounding of the output: rtol 2^-7 (one ulp of the 8-bit significand), atol 1e-3.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.block_sparse_matmul import (
    BSBlockSizes,
    block_sparse_matmul,
    block_sparse_matmul_reference,
    expand_block_mask,
    make_block_meta,
)
from pallas_kernels.block_sparse_matmul.kernel import sparse_weight_grad

BACKENDS = ["triton", "mosaic_tpu"]
BLOCK = BSBlockSizes(block_m=16)
# name: (x leading dims, K, N, block_k, block_n, tile density)
CASES = {
    "rows_padded_rect_tiles": ((40,), 64, 96, 16, 32, 0.5),   # M=40 padded to 48
    "batched_wide": ((2, 3, 4), 32, 128, 16, 32, 0.3),
    "tall_dense": ((16,), 96, 32, 32, 16, 1.0),
    "all_dead": ((24,), 64, 64, 16, 16, 0.0),
}


def make_case(name, dtype=jnp.float32, seed=0):
    lead, k, n, bk, bn, density = CASES[name]
    kx, kw, km, kg = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(kx, lead + (k,), jnp.float32).astype(dtype)
    w = jax.random.normal(kw, (k, n), jnp.float32).astype(dtype)
    mask = jax.random.uniform(km, (k // bk, n // bn)) < density
    if 0 < density < 1:  # make sure some tile column and some tile row are fully dead
        mask = mask.at[:, 0].set(False).at[-1, :].set(False).at[0, 1].set(True)
    g = jax.random.normal(kg, lead + (n,), jnp.float32).astype(dtype)
    return x, w, mask, g, bk, bn


def run_both(x, w, mask, g, bk, bn, backend, interpret=True):
    meta = make_block_meta(mask, bk, bn)

    @jax.jit
    def kernel(x, w, g, meta):
        f = lambda x, w: block_sparse_matmul(x, w, meta, interpret=interpret, block=BLOCK,
                                             backend=backend)
        y, vjp = jax.vjp(f, x, w)
        return (y, *vjp(g))

    @jax.jit
    def reference(x, w, g):
        f = lambda x, w: block_sparse_matmul_reference(x, w, mask, bk, bn)
        y, vjp = jax.vjp(f, x, w)
        return (y, *vjp(g))

    return kernel(x, w, g, meta), reference(x, w, g)


def test_meta_lists_hand_computed():
    mask = np.array([[1, 0, 1, 0],
                     [0, 0, 1, 0],
                     [1, 0, 0, 0]], bool)  # (nk=3, nn=4); column 1 and 3 dead
    meta = make_block_meta(mask, 8, 16)
    assert meta.shape == (24, 64) and float(meta.density) == pytest.approx(4 / 12, abs=1e-7)
    np.testing.assert_array_equal(meta.col_count, [2, 0, 2, 0])
    np.testing.assert_array_equal(meta.col_idx, [[0, 2, 2], [0, 0, 0], [0, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(meta.row_count, [2, 1, 1])
    np.testing.assert_array_equal(meta.row_idx, [[0, 2, 2, 2], [2, 2, 2, 2], [0, 0, 0, 0]])
    assert int(meta.num_live[0]) == 4
    np.testing.assert_array_equal(meta.live_k, [0, 0, 1, 2] + [2] * 8)
    np.testing.assert_array_equal(meta.live_n, [0, 2, 2, 0] + [0] * 8)


def test_meta_is_a_jittable_vmappable_pytree():
    masks = jax.random.uniform(jax.random.key(0), (3, 4, 5)) < 0.5
    stacked = jax.jit(jax.vmap(lambda m: make_block_meta(m, 16, 32)))(masks)
    one = make_block_meta(masks[1], 16, 32)
    for a, b in zip(jax.tree.leaves(jax.tree.map(lambda a: a[1], stacked)), jax.tree.leaves(one)):
        np.testing.assert_array_equal(a, b)
    assert stacked.block_k == 16 and stacked.block_n == 32
    np.testing.assert_array_equal(expand_block_mask(masks[1], 16, 32)[::16, ::32], masks[1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_f32_outputs_and_grads_match_reference(backend, name):
    x, w, mask, g, bk, bn = make_case(name)
    (y, dx, dw), (yr, dxr, dwr) = run_both(x, w, mask, g, bk, bn, backend)
    assert y.shape == yr.shape and dx.shape == x.shape and dw.shape == w.shape
    for got, want in ((y, yr), (dx, dxr), (dw, dwr)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    dead = ~np.asarray(expand_block_mask(mask, bk, bn))
    assert np.all(np.asarray(dw)[dead] == 0)  # dW is exactly zero on dead tiles


@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_within_one_output_rounding(backend):
    x, w, mask, g, bk, bn = make_case("rows_padded_rect_tiles", jnp.bfloat16, seed=1)
    (y, dx, dw), (yr, dxr, dwr) = run_both(x, w, mask, g, bk, bn, backend)
    for got, want in ((y, yr), (dx, dxr), (dw, dwr)):
        assert got.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                                   rtol=2**-7, atol=1e-3)


def test_dead_tiles_are_never_read():
    """NaN in every dead tile of w: a kernel that multiplied them by zero would return NaN."""
    x, w, mask, g, bk, bn = make_case("rows_padded_rect_tiles", seed=2)
    w_nan = jnp.where(expand_block_mask(mask, bk, bn), w, jnp.nan)
    (y, dx, dw), (yr, dxr, dwr) = run_both(x, w_nan, mask, g, bk, bn, "triton")
    for got, want in ((y, yr), (dx, dxr), (dw, dwr)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_mosaic_tpu_body_under_tpu_interpreter():
    """The TPU body under the Mosaic TPU interpreter (SMEM prefetch, VMEM scratch, NaN-
    filled uninitialised memory); then dW of a fully dead mask (its own zero-write path)."""
    interp = pltpu.InterpretParams()
    x, w, mask, g, bk, bn = make_case("rows_padded_rect_tiles", seed=3)
    (y, dx, dw), (yr, dxr, dwr) = run_both(x, w, mask, g, bk, bn, "mosaic_tpu", interp)
    for got, want in ((y, yr), (dx, dxr), (dw, dwr)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    dead = make_block_meta(jnp.zeros_like(mask), bk, bn)
    dw0 = sparse_weight_grad(x[:32], g[:32], dead, blocks=BLOCK,  # rows: 2 tiles of 16
                             backend="mosaic_tpu", interpret=interp)
    np.testing.assert_array_equal(dw0, np.zeros(w.shape, np.float32))


def test_bad_shapes_raise_clear_errors():
    meta = make_block_meta(jnp.ones((4, 3), bool), 16, 32)  # W must be (64, 96)
    x = jnp.ones((8, 64))
    with pytest.raises(ValueError, match=r"w shape \(64, 100\).*\(16, 32\) tiles.*\(64, 96\)"):
        block_sparse_matmul(x, jnp.ones((64, 100)), meta)
    with pytest.raises(ValueError, match=r"x shape \(8, 60\) must end in K=64"):
        block_sparse_matmul(jnp.ones((8, 60)), jnp.ones((64, 96)), meta)
    stacked = jax.vmap(lambda m: make_block_meta(m, 16, 32))(jnp.ones((2, 4, 3), bool))
    with pytest.raises(ValueError, match="stack"):
        block_sparse_matmul(x, jnp.ones((64, 96)), stacked)
    with pytest.raises(ValueError, match="block_mask must be"):
        make_block_meta(jnp.ones((2, 4, 3), bool), 16, 32)
    with pytest.raises(ValueError, match="block_m must be a power of two"):
        BSBlockSizes(block_m=24)
    with pytest.raises(ValueError, match="multiples of 128"):
        block_sparse_matmul(x, jnp.ones((64, 96)), meta, backend="mosaic_tpu", interpret=False)
