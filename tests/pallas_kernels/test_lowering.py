"""The compiled (non-interpret) kernel paths lower for GPU and TPU without a device.

``jit(...).trace(...).lower(lowering_platforms=...)`` runs the Pallas Triton and Mosaic
TPU lowerings on this CPU machine: unsupported primitives, non-power-of-two Triton tiles
and TPU tiles breaking the (8, 128) rule fail here. Not covered: the Triton/Mosaic
compilers behind the custom call (register/VMEM limits) and run-time behaviour.
"""

import re

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from pallas_kernels.block_sparse_matmul import BSBlockSizes, block_sparse_matmul, make_block_meta
from pallas_kernels.newton_schulz import KELLER_COEFFS, NSBlockSizes, newton_schulz

TARGETS = {  # platform: (backend, custom-call target, NS tiles, row tile)
    "cuda": ("triton", "__gpu$xla.gpu.triton", NSBlockSizes(num_warps=8, num_stages=3),
             BSBlockSizes(128, num_warps=8, num_stages=3)),
    "tpu": ("mosaic_tpu", "tpu_custom_call", NSBlockSizes(256, 256, 256), BSBlockSizes(256)),
}


def lower_text(fn, platform, *args):
    try:
        return jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()
    except ImportError as e:  # a jaxlib without the Triton / Mosaic dialect bindings
        pytest.skip(f"{platform} lowering unavailable: {e}")


def custom_calls(text):
    return set(re.findall(r"custom_call @([\w$.]+)", text))


@pytest.mark.parametrize("platform", list(TARGETS))
def test_newton_schulz_lowers(platform):
    backend, target, block, _ = TARGETS[platform]
    x = jax.ShapeDtypeStruct((12, 768, 300), jnp.bfloat16)  # batched, tall, padded n
    text = lower_text(lambda x: newton_schulz(x, KELLER_COEFFS[:1], block=block,
                                              interpret=False, backend=backend), platform, x)
    assert custom_calls(text) == {target}
    assert "ns_symmetric_product" in text and "ns_update" in text


@pytest.mark.parametrize("platform", list(TARGETS))
def test_block_sparse_matmul_fwd_bwd_lowers(platform):
    backend, target, _, block = TARGETS[platform]
    meta = make_block_meta(jnp.arange(12).reshape(3, 4) % 3 == 0, 128, 128)

    def fwd_bwd(x, w, meta):
        f = lambda x, w: block_sparse_matmul(x, w, meta, interpret=False, block=block,
                                             backend=backend)
        y, vjp = jax.vjp(f, x, w)
        return y, vjp(y)

    text = lower_text(fwd_bwd, platform, jax.ShapeDtypeStruct((300, 384), jnp.bfloat16),
                      jax.ShapeDtypeStruct((384, 512), jnp.bfloat16), meta)
    assert custom_calls(text) == {target}
    assert "block_sparse_matmul" in text and "block_sparse_weight_grad" in text


@pytest.mark.parametrize("platform", list(TARGETS))
def test_lowers_inside_shard_map_with_vma_checks(platform):
    """Muon stacks same-shape matrices and shards the stack axis; each device then runs
    the kernels on whole matrices inside shard_map (check_vma=True: outputs must declare
    the mesh axes they vary over)."""
    backend, target, ns_block, bs_block = TARGETS[platform]
    mesh = jax.make_mesh((8,), ("stack",))
    meta = make_block_meta(jnp.eye(3, 4, dtype=bool), 128, 128)

    def per_device(x, w, rows, meta):
        ortho = newton_schulz(x, KELLER_COEFFS[:1], block=ns_block, interpret=False,
                              backend=backend)
        y, vjp = jax.vjp(lambda r, w: block_sparse_matmul(
            r, w, meta, interpret=False, block=bs_block, backend=backend), rows, w)
        return ortho, vjp(y)[1]

    fn = jax.shard_map(per_device, mesh=mesh, in_specs=(P("stack"), P(), P("stack"), P()),
                       out_specs=(P("stack"), P("stack")))
    stack = jax.NamedSharding(mesh, P("stack"))
    text = lower_text(fn, platform,
                      jax.ShapeDtypeStruct((8, 256, 384), jnp.bfloat16, sharding=stack),
                      jax.ShapeDtypeStruct((384, 512), jnp.bfloat16),
                      jax.ShapeDtypeStruct((8 * 128, 384), jnp.bfloat16, sharding=stack),
                      meta)
    assert custom_calls(text) >= {target}
    assert "ns_update" in text and "block_sparse_weight_grad" in text
