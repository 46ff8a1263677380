"""The causal attention core against ``jax.nn.dot_product_attention``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlab.nn import ModelConfig, TransformerLM
from jaxlab.nn.attention import causal_attention


def _qkv(kv_heads, dtype=jnp.float32, b=2, t=48, h=8, dh=16):
    ks = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(ks[0], (b, t, h, dh), dtype)
    k = jax.random.normal(ks[1], (b, t, kv_heads, dh), dtype)
    v = jax.random.normal(ks[2], (b, t, kv_heads, dh), dtype)
    w = jax.random.normal(ks[3], (b, t, h, dh), jnp.float32)
    return q, k, v, w


def _reference(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")


@pytest.mark.parametrize("kv_heads", [8, 2, 1])
def test_causal_attention_matches_dot_product_attention(kv_heads):
    q, k, v, w = _qkv(kv_heads)
    np.testing.assert_allclose(causal_attention(q, k, v), _reference(q, k, v),
                               rtol=1e-5, atol=1e-5)
    # The custom backward (probabilities recomputed from the log-sum-exp) gives the
    # same gradients as differentiating the reference.
    grads = jax.grad(lambda *a: jnp.sum(causal_attention(*a) * w), (0, 1, 2))(q, k, v)
    ref = jax.grad(lambda *a: jnp.sum(_reference(*a) * w), (0, 1, 2))(q, k, v)
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


def test_causal_attention_bfloat16():
    q, k, v, w = _qkv(2, jnp.bfloat16)
    out = causal_attention(q, k, v)
    assert out.dtype == jnp.bfloat16
    ref = _reference(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32))
    np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=3e-2)
    grads = jax.grad(lambda *a: jnp.sum(causal_attention(*a).astype(jnp.float32) * w),
                     (0, 1, 2))(q, k, v)
    assert all(g.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_model_attention_impls_agree():
    """The same parameters give the same loss and gradients with either attention core."""
    kw = {"d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64}
    tokens = jax.random.randint(jax.random.key(1), (2, 24), 0, 256)

    def loss_and_grads(impl):
        model = TransformerLM(ModelConfig(attention_impl=impl, **kw), rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model)
        return jax.value_and_grad(lambda p: jnp.mean(nnx.merge(graphdef, p)(tokens) ** 2))(params)

    results = [loss_and_grads(impl) for impl in ("jaxlab", "xla")]
    (la, ga), (lb, gb) = results
    np.testing.assert_allclose(la, lb, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_attention_impl_validated():
    with pytest.raises(ValueError, match="attention_impl"):
        ModelConfig(attention_impl="flash")
