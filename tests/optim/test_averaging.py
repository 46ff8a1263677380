"""EMA and windowed SWA hold hand-computable averages of the post-update parameters."""

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxlab.nn import ModelConfig, TransformerLM
from jaxlab.optim import averaging
from jaxlab.train import optimizer as registry
from jaxlab.train.gin_setup import optimizer_config


def run(tx, steps, p0=1.0):
    """SGD(lr 0.1) on constant gradient 1 from p = 1: p_t = 1 - 0.1 t. Returns the
    averaged value after each step."""
    params = {"w": jnp.full((3,), p0)}
    state = tx.init(params)
    step = jax.jit(lambda p, s: tx.update(jax.tree.map(jnp.ones_like, p), s, p))
    out = []
    for _ in range(steps):
        updates, state = step(params, state)
        params = optax.apply_updates(params, updates)
        avg = averaging.averaged_params(state, params)["w"]
        assert np.ptp(np.asarray(avg)) == 0
        out.append(float(avg[0]))
    return out, params, state


def test_ema_hand_computed():
    # p = 0.9, 0.8, 0.7; a_t = 0.5 a_{t-1} + 0.5 p_t from a_0 = 1.
    out, _, state = run(averaging.ema(optax.sgd(0.1), decay=0.5), 3)
    np.testing.assert_allclose(out, [0.95, 0.875, 0.7875], rtol=1e-6)
    assert int(state.count) == 3


def test_swa_windows_hand_computed():
    # horizon 4, interval 2: samples p2 = 0.8, p4 = 0.6 | p6 = 0.4, p8 = 0.2.
    out, params, _ = run(averaging.swa(optax.sgd(0.1), horizon=4, interval=2), 8)
    expected = [0.9,        # step 1: no sample yet, raw params
                0.8,        # step 2: window {p2}
                0.8,        # step 3
                0.7,        # step 4: window {p2, p4} closes
                0.7,        # step 5: new window empty -> last window
                0.4,        # step 6: {p6}
                0.4,        # step 7
                0.3]        # step 8: {p6, p8}
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(params["w"], 0.2, rtol=1e-6)  # raw trajectory untouched


def test_bf16_params_average_in_float32():
    """decay 0.999: each step moves the average by 1e-3 of the gap, below bf16 resolution
    near 1 (2^-8); the float32 average still tracks it, and reads back as bf16."""
    tx = averaging.ema(optax.sgd(0.1), decay=0.999)
    params = {"w": jnp.ones((2,), jnp.bfloat16)}
    state = tx.init(params)
    assert state.avg["w"].dtype == jnp.float32
    expected = 1.0
    for _ in range(3):
        updates, state = tx.update({"w": jnp.ones((2,), jnp.bfloat16)}, state, params)
        params = optax.apply_updates(params, updates)
        expected = 0.999 * expected + 0.001 * float(params["w"][0])
    np.testing.assert_allclose(state.avg["w"], expected, rtol=1e-6)
    assert float(state.avg["w"][0]) < 1.0 - 1e-4  # a bf16 average would have stayed at 1
    assert averaging.averaged_params(state, params)["w"].dtype == jnp.bfloat16


def test_updates_are_those_of_the_inner_optimizer():
    p = {"w": jnp.arange(4.0)}
    g = {"w": jnp.array([1.0, -2.0, 3.0, 0.5])}
    inner = optax.adam(1e-2)
    for tx in (averaging.ema(inner, 0.9), averaging.swa(inner, 10, 5)):
        u, _ = tx.update(g, tx.init(p), p)
        np.testing.assert_array_equal(u["w"], inner.update(g, inner.init(p), p)[0]["w"])


def test_build_optimizer_averaging_on_model_state_with_donation():
    gin.clear_config()
    gin.parse_config("build_optimizer.averaging = 'ema'\nweight_averaging.ema_decay = 0.5\n"
                     "make_schedule.name = 'constant'\nmake_schedule.warmup_steps = 0")
    try:
        cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, vocab_size=32, max_seq_len=16)
        params = jax.jit(lambda: nnx.state(TransformerLM(cfg, rngs=nnx.Rngs(params=0)), nnx.Param))()
        opt = registry.build_optimizer(params, 10, optimizer_config(learning_rate=1e-2))
    finally:
        gin.clear_config()
    assert opt.eval_params is not None
    state = jax.jit(opt.tx.init)(params)
    start = jax.tree.map(jnp.array, params)

    def step(p, s):
        g = jax.tree.map(jnp.ones_like, p)
        u, s = opt.tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    step_donating = jax.jit(step, donate_argnums=(0, 1))
    p1, s1 = step_donating(params, state)
    avg = opt.eval_params(p1, s1)
    assert jax.tree.structure(avg) == jax.tree.structure(p1)
    for a, x0, x1 in zip(jax.tree.leaves(avg), jax.tree.leaves(start), jax.tree.leaves(p1)):
        np.testing.assert_allclose(a, 0.5 * x0 + 0.5 * x1, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("call, match", [
    (lambda: averaging.ema(optax.sgd(1.0), 1.0), r"decay must be in \[0, 1\), got 1.0"),
    (lambda: averaging.swa(optax.sgd(1.0), 10, 3), "horizon=10, interval=3"),
    (lambda: averaging.weight_averaging(optax.sgd(1.0), "lawa"), "unknown weight averaging 'lawa'"),
    (lambda: averaging.averaged_params(optax.sgd(1.0).init({}), {}), "no EMA/SWA state"),
])
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
