"""Newton-Schulz over a stack in sequential chunks (matrix_stacking.in_chunks): the chunk
rule, the same result as one batched call, and a stack on a mesh left whole."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxlab.mesh import make_mesh
from jaxlab.optim.matrix_stacking import CPU_CHUNK_BYTES, chunk_size, in_chunks
from jaxlab.optim.newton_schulz import newton_schulz

B = CPU_CHUNK_BYTES  # 'auto' on CPU: as many matrices as fit in B bytes


@pytest.mark.parametrize("num,matrix_bytes,chunk,backend,want", [
    (32, B // 4, "auto", "cpu", 4),
    (24, B // 2 - 1, "auto", "cpu", 2),
    (24, B // 2 + 1, "auto", "cpu", 1),     # two would not fit
    (16, 3 * B, "auto", "cpu", 1),          # bigger than the budget: one at a time
    (32, B // 64, "auto", "cpu", 32),       # the whole stack fits
    (30, B // 8, "auto", "cpu", 6),         # largest divisor of 30 not above 8
    (32, B // 4, "auto", "gpu", 32),        # accelerators: one batched call
    (32, B // 4, "all", "cpu", 32),
    (12, B, 5, "cpu", 4),                   # largest divisor of 12 not above 5
    (7, B, 3, "cpu", 1),                    # 7 is prime
    (6, B, 100, "cpu", 6),
])
def test_chunk_size(num, matrix_bytes, chunk, backend, want):
    assert chunk_size(num, matrix_bytes, chunk, backend) == want


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "half", None])
def test_bad_chunk_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=rf"ns_chunk={bad!r}; valid: \('auto', 'all'\)"):
        in_chunks(newton_schulz, bad)


@pytest.mark.parametrize("chunk,calls", [(1, (1,)), (2, (2,)), (4, (3,)), ("all", (6,))])
def test_chunked_equals_one_batched_call(chunk, calls):
    """Chunk sizes actually used (traced shapes) and the same NS result per matrix."""
    x = jax.random.normal(jax.random.key(0), (6, 24, 40))
    seen = []

    def ns(y):
        seen.append(y.shape[0])
        return newton_schulz(y)

    out = jax.jit(in_chunks(ns, chunk))(x)
    assert tuple(seen) == calls
    np.testing.assert_allclose(out, newton_schulz(x), rtol=1e-5, atol=1e-6)
    for k in range(6):  # and each matrix on its own
        np.testing.assert_allclose(out[k], newton_schulz(x[k]), rtol=1e-5, atol=1e-6)


def test_stack_sharded_on_a_mesh_is_left_whole():
    """Under a mesh the stack axis is already split over devices; chunking it would make
    lax.map slice across shards. Each device gets one call on its whole slice."""
    mesh = make_mesh("data=8")
    x = jax.device_put(jax.random.normal(jax.random.key(1), (16, 8, 12)),
                       NamedSharding(mesh, P("data", None, None)))
    seen = []

    def ns(y):
        seen.append(y.shape[0])
        return newton_schulz(y)

    out = jax.jit(in_chunks(ns, 1))(x)
    assert seen == [16]
    np.testing.assert_allclose(out, newton_schulz(jnp.asarray(np.asarray(x))), rtol=1e-5,
                               atol=1e-6)
