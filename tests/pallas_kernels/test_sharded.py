"""Kernels inside jax.shard_map on 8 fake CPU devices (interpret mode).

Interpret mode needs ``check_vma=False``: JAX 0.10's Pallas interpreter re-evaluates the
kernel with varying operands and trips its own check. The compiled paths are lowered
with ``check_vma=True`` in ``test_lowering.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from pallas_kernels.block_sparse_matmul import (
    BSBlockSizes,
    block_sparse_matmul,
    block_sparse_matmul_reference,
    make_block_meta,
)
from pallas_kernels.newton_schulz import (
    KELLER_COEFFS,
    NSBlockSizes,
    newton_schulz,
    newton_schulz_reference,
)


def test_stack_sharded_ns_and_data_parallel_block_sparse_grads():
    mesh = jax.make_mesh((8,), ("dev",))
    k = jax.random.split(jax.random.key(0), 4)
    stack = jax.random.normal(k[0], (8, 32, 48))             # one matrix per device
    x = jax.random.normal(k[1], (8 * 8, 64))                 # 8 rows per device
    w = jax.random.normal(k[2], (64, 96))
    mask = jax.random.uniform(k[3], (4, 3)) < 0.5
    meta = make_block_meta(mask, 16, 32)
    coeffs = KELLER_COEFFS[:2]

    def per_device(stack, x, w, meta):
        ortho = newton_schulz(stack, coeffs, block=NSBlockSizes(32, 32, 16),
                              compute_dtype=jnp.float32)
        loss = lambda w: jnp.sum(block_sparse_matmul(x, w, meta, block=BSBlockSizes(16)) ** 2)
        return ortho, jax.lax.psum(jax.grad(loss)(w), "dev")

    fn = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P("dev"), P("dev"), P(), P()),
                               out_specs=(P("dev"), P()), check_vma=False))
    put = lambda a, spec: jax.device_put(a, NamedSharding(mesh, spec))
    ortho, dw = fn(put(stack, P("dev")), put(x, P("dev")), put(w, P()), put(meta, P()))

    assert ortho.sharding.spec == P("dev", None, None)
    np.testing.assert_allclose(
        ortho, newton_schulz_reference(stack, coeffs, compute_dtype=jnp.float32),
        rtol=2e-5, atol=2e-5)
    dw_ref = jax.grad(lambda w: jnp.sum(
        block_sparse_matmul_reference(x, w, mask, 16, 32) ** 2))(w)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-5, atol=1e-4)
