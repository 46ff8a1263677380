"""Layerwise rules (arXiv 2510.15262): doubling the width halves the hidden-matrix lr and
multiplies its weight decay by sqrt(2); vector-like parameters keep lr and get no decay."""

import math

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxlab.nn import ModelConfig, TransformerLM
from jaxlab.optim.layerwise import infer_width, layerwise_rules
from jaxlab.partition import MATRIX, VECTOR, describe_params, infos_list
from jaxlab.train import optimizer as registry
from jaxlab.train.gin_setup import optimizer_config

LR, WD, BASE = 1e-2, 0.1, 64


def model_params(d):
    cfg = ModelConfig(d_model=d, n_layers=1, n_heads=2, vocab_size=32, max_seq_len=32)
    return jax.jit(lambda: nnx.state(TransformerLM(cfg, rngs=nnx.Rngs(params=0)), nnx.Param))()


@pytest.fixture(scope="module")
def params():
    return {d: model_params(d) for d in (BASE, 2 * BASE)}


def config(wd=WD, **kw) -> registry.OptimizerConfig:
    """AdamW at a constant LR and weight decay ``wd``, rules tuned at width BASE."""
    return registry.OptimizerConfig(
        learning_rate=LR, clip_norm=None, hparams={"weight_decay": wd},
        schedule={"name": "constant", "warmup_steps": 0},
        layerwise_rules={"base_width": BASE}, **kw)


def by_path(tree, infos):
    return {i.path: x for i, x in zip(infos_list(infos), jax.tree.leaves(tree))}


def test_width_is_d_model(params):
    assert infer_width(describe_params(params[BASE])) == BASE
    assert infer_width(describe_params(params[2 * BASE])) == 2 * BASE
    assert infer_width(describe_params({"w": jnp.ones((48, 96)), "b": jnp.ones((96,))})) == 48


def test_multipliers_double_width(params):
    small = layerwise_rules(describe_params(params[BASE]), base_width=BASE)
    big = layerwise_rules(describe_params(params[2 * BASE]), base_width=BASE)
    infos = describe_params(params[2 * BASE])
    lr_s, lr_b = by_path(small.lr, infos), by_path(big.lr, infos)
    wd_s, wd_b = by_path(small.wd, infos), by_path(big.wd, infos)
    for info in infos_list(infos):
        p = info.path
        if info.label == MATRIX:
            assert (lr_s[p], wd_s[p]) == (1.0, 1.0)
            assert lr_b[p] == 0.5
            assert wd_b[p] == pytest.approx(math.sqrt(2), rel=1e-12)
        else:  # embedding and norm gains: vector-like
            assert lr_s[p] == lr_b[p] == 1.0
            assert wd_s[p] == wd_b[p] == 0.0


def f64_mean(x):
    """Mean in float64 (a float32 reduction over thousands of entries is off by ~1e-5)."""
    return float(np.mean(np.asarray(x, np.float64)))


def _one_step(params, grads, wd=WD):
    opt = registry.build_optimizer(params, 100, config(wd, layerwise=True))
    updates, _ = opt.tx.update(grads, opt.tx.init(params), params)
    return by_path(updates, opt.infos), by_path(params, opt.infos), opt.infos


def test_effective_decay_and_lr_through_build_optimizer(params):
    """Zero gradients isolate the decay step -lr_leaf wd_leaf W; unit gradients isolate the
    first Adam step -lr_leaf g / (|g| + eps) = -lr_leaf (1 - 1e-8)."""
    shrink, step = {}, {}
    for d in (BASE, 2 * BASE):
        zeros = jax.tree.map(jnp.zeros_like, params[d])
        upd, par, infos = _one_step(params[d], zeros)
        shrink[d] = {p: f64_mean(upd[p] / par[p]) for p in upd}
        upd, _, _ = _one_step(params[d], jax.tree.map(jnp.ones_like, params[d]), wd=0.0)
        step[d] = {p: f64_mean(upd[p]) for p in upd}
        labels = {i.path: i.label for i in infos_list(infos)}
    for p, label in labels.items():
        if label == MATRIX:
            assert shrink[BASE][p] == pytest.approx(-LR * WD, rel=1e-5)
            assert shrink[2 * BASE][p] == pytest.approx(-LR * WD * 0.5 * math.sqrt(2), rel=1e-5)
            assert step[2 * BASE][p] == pytest.approx(0.5 * step[BASE][p], rel=1e-6)
        else:
            assert shrink[BASE][p] == shrink[2 * BASE][p] == 0.0
            assert step[2 * BASE][p] == pytest.approx(step[BASE][p], rel=1e-6)
        assert step[BASE][p] == pytest.approx(-LR, rel=1e-6)


def test_at_base_width_matrices_match_plain_adamw(params):
    """At width == base_width the hidden matrices train exactly as with plain AdamW."""
    p = params[BASE]
    g = jax.tree.map(lambda x: jnp.sin(jnp.arange(x.size, dtype=x.dtype)).reshape(x.shape), p)
    upd, _, infos = _one_step(p, g)
    plain = registry.build_optimizer(p, 100, config())
    ref = by_path(plain.tx.update(g, plain.tx.init(p), p)[0], infos)
    for info in infos_list(infos):
        if info.label in (MATRIX, VECTOR):
            np.testing.assert_array_equal(upd[info.path], ref[info.path], err_msg=info.path)


def test_one_gin_binding_turns_it_on(params):
    gin.parse_config(f"""
        build_optimizer.layerwise = True
        layerwise_rules.width = 128
        layerwise_rules.base_width = {BASE}
        make_schedule.name = 'constant'
        make_schedule.warmup_steps = 0
        adamw.weight_decay = {WD}
    """)
    p = params[BASE]  # width forced to 128 = 2 x base by gin
    opt = registry.build_optimizer(p, 100, optimizer_config(learning_rate=LR, clip_norm=None))
    upd = by_path(opt.tx.update(jax.tree.map(jnp.zeros_like, p), opt.tx.init(p), p)[0], opt.infos)
    par = by_path(p, opt.infos)
    q = "blocks/attn/q/kernel"
    np.testing.assert_allclose(upd[q], -LR * WD * 0.5 * math.sqrt(2) * par[q], rtol=1e-5)


def test_factory_without_wd_mult_is_refused(params):
    registry.OPTIMIZERS["_sgd_for_test"] = lambda infos, lr, make_lr: optax.sgd(lr)
    try:
        with pytest.raises(ValueError, match="'_sgd_for_test' does not support layerwise"):
            registry.build_optimizer(params[BASE], 10, optimizer="_sgd_for_test", layerwise=True)
    finally:
        del registry.OPTIMIZERS["_sgd_for_test"]


def test_bad_rules_raise(params):
    infos = describe_params(params[BASE])
    with pytest.raises(ValueError, match="width and base_width must be >= 1, got width=0"):
        layerwise_rules(infos, width=0)
    with pytest.raises(ValueError, match=r"layerwise_rules.matrix must be \(lr_exponent"):
        layerwise_rules(infos, matrix=(-1.0,))
    with pytest.raises(ValueError, match="cannot infer the model width"):
        infer_width(describe_params({"b": jnp.ones((8,))}))
