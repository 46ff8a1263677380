"""The optimizer registry: names, errors, and diagnostics that survive wrapping."""

import jax.numpy as jnp
import optax
import pytest

from jaxlab.train import optimizer as registry


@pytest.fixture
def counting_optimizer():
    """A registered factory whose diagnostics read its own state (the step count)."""

    def factory(infos, lr, make_lr, wd_mult=None):
        tx = optax.chain(optax.scale_by_adam(), optax.scale_by_learning_rate(lr))
        return tx, lambda state: {"count": state[0].count}

    registry.register("_counting")(factory)
    yield "_counting"
    del registry.OPTIMIZERS["_counting"]


@pytest.mark.parametrize("clip_norm", [None, 1.0])
@pytest.mark.parametrize("layerwise", [False, True])
def test_diagnostics_see_the_factory_state_through_wrappers(counting_optimizer, clip_norm,
                                                             layerwise):
    params = {"blocks": {"w": jnp.ones((2, 8, 8))}, "norm": jnp.ones(8)}
    opt = registry.build_optimizer(params, 10, optimizer=counting_optimizer,
                                   clip_norm=clip_norm, layerwise=layerwise)
    state = opt.tx.init(params)
    for _ in range(3):
        _, state = opt.tx.update(params, state, params)
    assert int(opt.diagnostics(state)["count"]) == 3


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown optimizer 'lion'; valid: .*adamw"):
        registry.build_optimizer({"w": jnp.ones((2, 2))}, 10, optimizer="lion")


def test_adamw_decays_matrices_not_vectors():
    params = {"h": {"w": jnp.ones((4, 4)), "b": jnp.ones(4)}}
    opt = registry.build_optimizer(params, 10, clip_norm=None)
    zero = {"h": {"w": jnp.zeros((4, 4)), "b": jnp.zeros(4)}}
    state = opt.tx.init(params)
    for _ in range(5):  # past the warmup's lr(0) = 0; zero grads keep Adam's moments 0
        updates, state = opt.tx.update(zero, state, params)
    lr = float(opt.lr(4))
    assert lr > 1e-4
    assert float(jnp.abs(updates["h"]["b"]).max()) == 0.0
    assert jnp.allclose(updates["h"]["w"], -lr * 0.1 * params["h"]["w"], rtol=1e-6)
