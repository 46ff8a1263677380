"""Newton-Schulz Pallas kernels vs the pure-JAX reference and a plain f32 XLA NS.

Both kernel bodies (Triton GPU, Mosaic TPU) run in interpret mode on CPU. Tolerances
(relative Frobenius error, per matrix stack):

- compute_dtype=f32 vs reference: 2e-5. Same math, only the f32 summation order differs
  (measured ~1.5e-6 after 5 Keller steps); any tiling/triangle bug is an O(1) error.
- bf16 vs the bf16 reference (identical rounding points): 1e-2, i.e. ~2.5 bf16 ulps
  (2^-8 = 3.9e-3). Summation order occasionally flips a bf16 rounding of A, B or X and NS
  amplifies it (p'(0) = a = 3.4); measured <= 3.7e-3.
- bf16 vs plain f32 XLA NS: the kernel may not be less accurate than the bf16 XLA path:
  err(kernel) <= 1.1 err(bf16 reference) + 2e-3, and <= 3e-2 (measured 1.3-1.9%).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.newton_schulz import (
    KELLER_COEFFS,
    POLAR_EXPRESS_COEFFS,
    NSBlockSizes,
    newton_schulz,
    newton_schulz_reference,
)
from pallas_kernels.newton_schulz.kernel import symmetric_product, triangle_grid, triangle_tile
from pallas_kernels.platform import resolve_interpret

BACKENDS = ["triton", "mosaic_tpu"]
SMALL = NSBlockSizes(block_m=32, block_n=32, block_k=16)
SHAPES = {
    "wide_padded": (48, 80),      # m, n not multiples of 32: zero-padded to (64, 96)
    "tall_padded": (96, 40),      # m > n: iterated on the transpose
    "batched_square": (3, 64, 64),
}


def rel(p, q):
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return float(np.linalg.norm(p - q) / np.linalg.norm(q))


def xla_newton_schulz_f32(x, coeffs, eps=1e-7):
    """Plain XLA NS in f32, as Muon's default path writes it (the comparison target)."""
    x = x.astype(jnp.float32)
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = jnp.swapaxes(x, -1, -2)
    x = x / (jnp.linalg.norm(x, axis=(-2, -1), keepdims=True) + eps)
    for a, b, c in coeffs:
        A = x @ jnp.swapaxes(x, -1, -2)
        x = a * x + (b * A + c * A @ A) @ x
    return jnp.swapaxes(x, -1, -2) if tall else x


def sample(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def test_triangle_rectangle_covers_each_upper_tile_once():
    for nb in range(1, 14):
        rows, width = triangle_grid(nb)
        got = sorted(tuple(int(v) for v in triangle_tile(np.int32(r), np.int32(c), nb))
                     for r in range(rows) for c in range(width))
        assert got == [(i, j) for i in range(nb) for j in range(i, nb)], nb


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("nb", [3, 4])  # odd and even tile counts fold differently
def test_symmetric_product_matches_dense(backend, nb):
    y = sample((2, 16 * nb, 48), seed=nb)
    c = sample((2, 16 * nb, 16 * nb), seed=7)
    c = c + jnp.swapaxes(c, -1, -2)
    blocks = NSBlockSizes(block_m=16, block_n=16, block_k=16)
    got = symmetric_product(y, c, alpha=-0.5, beta=2.0, blocks=blocks, backend=backend,
                            interpret=True)
    want = -0.5 * y @ jnp.swapaxes(y, -1, -2) + 2.0 * c
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(SHAPES))
def test_f32_matches_reference(backend, name):
    # two steps with different coefficients: the kernels are identical for every step
    coeffs = POLAR_EXPRESS_COEFFS[:2]
    x = sample(SHAPES[name])
    got = newton_schulz(x, coeffs, block=SMALL, backend=backend, compute_dtype=jnp.float32)
    want = newton_schulz_reference(x, coeffs, compute_dtype=jnp.float32)
    assert got.shape == x.shape and got.dtype == x.dtype
    assert rel(got, want) < 2e-5
    assert rel(want, xla_newton_schulz_f32(x, coeffs)) < 2e-5  # reference == plain NS


@functools.cache
def bf16_case(backend, name):
    """(input, Pallas NS, bf16 reference, f32 XLA NS) for a bf16 input; cached."""
    x = sample(SHAPES[name], seed=1).astype(jnp.bfloat16)
    got = newton_schulz(x, KELLER_COEFFS, block=SMALL, backend=backend)
    return (x, got, newton_schulz_reference(x, KELLER_COEFFS),
            xla_newton_schulz_f32(x, KELLER_COEFFS))


@pytest.mark.parametrize("backend,name", [("triton", n) for n in SHAPES]
                         + [("mosaic_tpu", "batched_square")])  # TPU body: f32 test covers all
def test_bf16_matches_reference_and_xla(backend, name):
    """The Muon comparison: Pallas NS (bf16 operands, f32 accumulation) vs XLA NS."""
    x, got, want, exact = bf16_case(backend, name)
    assert got.dtype == jnp.bfloat16 and got.shape == x.shape
    assert rel(got, want) < 1e-2
    err, err_ref = rel(got, exact), rel(want, exact)
    assert err <= 1.1 * err_ref + 2e-3 and err < 3e-2, (err, err_ref)


def test_keller_singular_value_band():
    """Keller's 5 steps put sigma/||X||_F >= 0.01 into about [0.68, 1.13] (docs/methods.md,
    Newton-Schulz); the bf16 kernel output's singular values stay within 3e-2 of the f32 ones."""
    _, got, _, exact = bf16_case("triton", "tall_padded")  # sigma_min / ||x||_F ~ 0.05
    s32 = np.linalg.svd(np.asarray(exact), compute_uv=False)
    s = np.linalg.svd(np.asarray(got, np.float32), compute_uv=False)
    assert s32.min() > 0.68 and s32.max() < 1.13
    np.testing.assert_allclose(np.sort(s), np.sort(s32), atol=3e-2)


def test_exact_coefficients_orthogonalise():
    """(2, -1.5, 0.5) is the cubic NS that converges to the polar factor: X X^T = I."""
    q1, _ = jnp.linalg.qr(sample((32, 32), seed=4))
    q2, _ = jnp.linalg.qr(sample((64, 32), seed=5))
    x = (q1 * jnp.linspace(0.5, 1.0, 32)) @ q2.T  # condition number 2
    y = newton_schulz(x, ((2.0, -1.5, 0.5),) * 7, block=SMALL, compute_dtype=jnp.float32)
    np.testing.assert_allclose(y @ y.T, np.eye(32), atol=1e-5)
    np.testing.assert_allclose(y, q1 @ q2.T, atol=1e-5)  # the polar factor U V^T


def test_gradient_matches_reference_under_jit():
    x = sample((40, 64), seed=6)
    r = sample((40, 64), seed=7)
    coeffs = KELLER_COEFFS[:2]

    def loss(f):
        return lambda x: jnp.sum(f(x) * r)

    g = jax.jit(jax.grad(loss(lambda x: newton_schulz(
        x, coeffs, block=SMALL, compute_dtype=jnp.float32))))(x)
    g_ref = jax.grad(loss(lambda x: newton_schulz_reference(
        x, coeffs, compute_dtype=jnp.float32)))(x)
    assert rel(g, g_ref) < 1e-6  # the VJP is the reference's (documented), exactly


def test_interpret_defaults_to_cpu():
    assert jax.default_backend() == "cpu" and resolve_interpret(None) is True
    with pytest.raises(TypeError, match="interpret"):
        resolve_interpret("yes")


def test_bad_inputs_raise_clear_errors():
    x = sample((16, 32))
    with pytest.raises(ValueError, match="triples"):
        newton_schulz(x, ((1.0, 2.0),))
    with pytest.raises(TypeError, match="static sequence"):
        jax.jit(lambda x, c: newton_schulz(x, c))(x, jnp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"\(\.\.\., m, n\)"):
        newton_schulz(jnp.ones(8), KELLER_COEFFS)
    with pytest.raises(ValueError, match="block_m must be a power of two"):
        NSBlockSizes(block_m=100)
    with pytest.raises(ValueError, match="backend must be one of"):
        newton_schulz(x, KELLER_COEFFS, backend="cuda")
    with pytest.raises(ValueError, match="multiples of 128"):
        newton_schulz(x, KELLER_COEFFS, backend="mosaic_tpu", interpret=False)
