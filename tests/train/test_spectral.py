"""sigma_max by block power iteration agrees with jnp.linalg.svd within 1%."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxlab.nn import ModelConfig, TransformerLM
from jaxlab.partition import MATRIX, describe_params, infos_list
from jaxlab.train.spectral import power_iteration_sigma_max, top_singular_values


def svd_sigma_max(w_NxIxO):
    return np.asarray(jnp.linalg.svd(w_NxIxO, compute_uv=False)[:, 0])


@pytest.mark.parametrize("shape", [(2, 256, 256), (2, 128, 512), (1, 768, 96)])
def test_random_matrices_within_one_percent(shape):
    w = jax.random.normal(jax.random.key(sum(shape)), shape)
    est = jax.jit(power_iteration_sigma_max)(w)
    np.testing.assert_allclose(est, svd_sigma_max(w), rtol=1e-2)
    assert np.all(np.asarray(est) <= svd_sigma_max(w) * (1 + 1e-5))  # Rayleigh-Ritz bound


def _trained_mlp_weights():
    """A 2-layer tanh MLP fitted by AdamW for 200 steps to a random teacher."""
    k = jax.random.split(jax.random.key(0), 5)
    x = jax.random.normal(k[0], (512, 64))
    teacher = jnp.tanh(x @ jax.random.normal(k[1], (64, 32))) @ jax.random.normal(k[2], (32, 16))
    params = {"w1": jax.random.normal(k[3], (64, 256)) / 8, "w2": jax.random.normal(k[4], (256, 16)) / 16}
    loss = lambda p: jnp.mean((jnp.tanh(x @ p["w1"]) @ p["w2"] - teacher) ** 2)
    tx = optax.adamw(1e-2, weight_decay=0.1)

    @jax.jit
    def step(p, s):
        g = jax.grad(loss)(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    p, s = params, tx.init(params)
    loss0 = loss(p)
    for _ in range(200):
        p, s = step(p, s)
    assert loss(p) < 0.5 * loss0  # it did train
    return p


def test_trained_matrices_within_one_percent():
    p = _trained_mlp_weights()
    infos = describe_params(p)
    out = top_singular_values(p, infos)
    assert set(out) == {"sigma_max/w1", "sigma_max/w2"}
    for name in ("w1", "w2"):
        np.testing.assert_allclose(out[f"sigma_max/{name}"], svd_sigma_max(p[name][None]),
                                   rtol=1e-2)


def test_stacked_transformer_kernels_one_value_per_layer():
    cfg = ModelConfig(d_model=64, n_layers=3, n_heads=4, vocab_size=32, max_seq_len=32)
    params = jax.jit(lambda: nnx.state(TransformerLM(cfg, rngs=nnx.Rngs(params=0)), nnx.Param))()
    infos = describe_params(params)
    out = jax.jit(lambda p: top_singular_values(p, infos))(params)
    matrices = [i for i in infos_list(infos) if i.label == MATRIX]
    assert len(out) == len(matrices) > 0
    leaves = dict(zip([i.path for i in infos_list(infos)], jax.tree.leaves(params)))
    for info in matrices:
        est = out[f"sigma_max/{info.path}"]
        assert est.shape == (cfg.n_layers,), info.path
        np.testing.assert_allclose(est, svd_sigma_max(info.as_matrices(leaves[info.path])),
                                   rtol=1e-2, err_msg=info.path)
    assert not any("embed" in k for k in out)  # embeddings and vectors are not measured


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"got shape \(4, 4\)"):
        power_iteration_sigma_max(jnp.ones((4, 4)))
    p = {"w": jnp.ones((4, 4))}
    with pytest.raises(ValueError, match="do not match"):
        top_singular_values({"w": jnp.ones((4, 5))}, describe_params(p))
