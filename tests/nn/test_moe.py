"""Mixture of experts: the dropless and capacity paths against every-expert-on-every-token,
the capacity's priority order, the load-balancing loss by hand, gradients, accounting,
labels, per-expert Muon updates, an expert-sharded mesh against one device, training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlab.data import DataConfig
from jaxlab.mesh import make_mesh
from jaxlab.nn import ModelConfig, TransformerLM, count_params, flops_per_token, param_counts
from jaxlab.nn.moe import MoE, moe_reference
from jaxlab.optim.muon import muon, shape_scale
from jaxlab.optim.newton_schulz import newton_schulz
from jaxlab.partition import describe_params, infos_list
from jaxlab.sharding import batch_sharding, state_shardings
from jaxlab.tasks import LanguageModelTask
from jaxlab.train.config import TrainConfig
from jaxlab.train.loop import Run
from jaxlab.train.metrics import read_metrics
from jaxlab.train.optimizer import OptimizerConfig


def cfg(**kw):
    base = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, moe_experts=4, moe_top_k=2)
    return ModelConfig(**{**base, **kw})


def layer_and_input(**kw):
    moe = MoE(cfg(**kw), rngs=nnx.Rngs(0))
    return moe, jax.random.normal(jax.random.key(1), (2, 12, 32))


@pytest.mark.parametrize("kw", [{}, {"moe_capacity_factor": 2.0},
                                {"moe_renormalize": True}, {"moe_top_k": 1}])
def test_fast_paths_equal_every_expert_on_every_token(kw):
    """Dropless, and a capacity of N k / E * (E / k) = N slots (nothing can drop)."""
    moe, x = layer_and_input(**kw)
    y, aux = moe(x)
    np.testing.assert_allclose(y, moe_reference(moe, x), atol=1e-6)
    assert float(aux["moe_dropped_frac"]) == 0.0


def test_capacity_drops_later_choices_first():
    """Capacity C = ceil(c N k / E): an expert takes every token's first choice in token
    order, then the second choices, and drops what does not fit; the output is the
    reference with the dropped assignments' gates zeroed (computed here in numpy)."""
    moe, x = layer_and_input(moe_capacity_factor=0.75)
    n, k, e = 24, 2, 4
    cap = int(np.ceil(0.75 * n * k / e))
    ids, gates, _ = moe.route(x.reshape(n, 32))
    ids, gates = np.asarray(ids), np.asarray(gates).copy()
    fill = np.zeros(e, int)
    for choice in range(k):
        for tok in range(n):
            ex = ids[tok, choice]
            if fill[ex] < cap:
                fill[ex] += 1
            else:
                gates[tok, choice] = 0.0
    dropped = float(np.mean(gates == 0.0))
    xs = x.reshape(n, 32)
    g = jnp.einsum("nd,edf->enf", xs, moe.gate[...])
    u = jnp.einsum("nd,edf->enf", xs, moe.up[...])
    out = jnp.einsum("enf,efd->end", jax.nn.silu(g) * u, moe.down[...])
    w = np.zeros((n, e))
    w[np.arange(n)[:, None], ids] = gates
    want = jnp.einsum("ne,end->nd", w, out).reshape(x.shape)
    y, aux = moe(x)
    assert 0 < dropped < 0.5
    assert float(aux["moe_dropped_frac"]) == pytest.approx(dropped)
    np.testing.assert_allclose(y, want, atol=1e-6)


def test_load_balancing_loss_by_hand():
    moe, x = layer_and_input()
    xs = np.asarray(x.reshape(-1, 32), np.float64)
    logits = xs @ np.asarray(moe.router[...], np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top = np.argsort(-p, axis=1)[:, :2]
    f = np.bincount(top.reshape(-1), minlength=4) / top.size
    want = 4 * np.sum(f * p.mean(0))
    _, aux = moe(x)
    assert float(aux["moe_load_loss"]) == pytest.approx(want, rel=1e-5)
    # all tokens on experts 0 and 1 with all the probability there: loss E / k = 2
    skew = MoE(cfg(), rngs=nnx.Rngs(0))
    skew.router[...] = jnp.zeros((32, 4)).at[:, :2].set(50.0)
    _, aux = skew(jnp.abs(x))
    assert float(aux["moe_load_loss"]) == pytest.approx(2.0, rel=1e-4)


@pytest.mark.parametrize("kw", [{}, {"moe_capacity_factor": 2.0}])
def test_gradients_equal_the_reference(kw):
    moe, x = layer_and_input(**kw)
    graphdef, state = nnx.split(moe)

    def loss(state, fn):
        return jnp.sum(jnp.sin(fn(nnx.merge(graphdef, state), x)))

    fast = jax.grad(loss)(state, lambda m, x: m(x)[0])
    slow = jax.grad(loss)(state, moe_reference)
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(slow)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_accounting_counts_active_parameters():
    c = cfg()
    counts = param_counts(c)
    model = TransformerLM(c, rngs=nnx.Rngs(0))
    assert counts["total"] == count_params(nnx.state(model, nnx.Param))
    d, f, L = 32, c.expert_ff_dim, 2
    assert counts["non_embedding_stored"] - counts["non_embedding"] == L * 2 * 3 * d * f
    dense = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=2 * f)
    # top-2 of experts of width f = one dense MLP of width 2f, plus the router
    assert counts["non_embedding"] == param_counts(dense)["non_embedding"] + L * d * 4
    assert flops_per_token(c, 64)["forward"] == pytest.approx(
        flops_per_token(dense, 64)["forward"] + 2 * L * d * 4)


def test_expert_stacks_get_per_expert_muon_updates():
    """Labels: router to AdamW (head), each (L, E, ...) expert stack as L E matrices; the
    first Muon step of expert (l, e) is -lr (scale NS(G[l, e]) + wd W[l, e])."""
    model = TransformerLM(cfg(), rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    params = nnx.to_pure_dict(state)
    infos = jax.tree.unflatten(jax.tree.structure(params),
                               infos_list(describe_params(state)))
    gate_info = infos["blocks"]["mlp"]["gate"]
    assert gate_info.label == "matrix" and gate_info.num_matrices == 8
    assert infos["blocks"]["mlp"]["router"].label == "head"
    tx = muon(0.02, infos, weight_decay=0.1)
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(4), p.shape), params)
    u, _ = tx.update(grads, tx.init(params), params)
    g, w = grads["blocks"]["mlp"]["gate"], params["blocks"]["mlp"]["gate"]
    scale = shape_scale(gate_info, "moonlight")
    for l in range(2):
        for e in range(4):
            want = -0.02 * (scale * newton_schulz(g[l, e]) + 0.1 * w[l, e])
            np.testing.assert_allclose(u["blocks"]["mlp"]["gate"][l, e], want, rtol=1e-5,
                                       atol=1e-7)


def test_expert_sharded_mesh_equals_one_device():
    """data=2, expert=4 on 8 fake devices: the expert stacks are split over the expert
    axis and the loss and gradients equal the single-device ones."""
    c = cfg()
    model = TransformerLM(c, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model, nnx.Param)
    tokens = jax.random.randint(jax.random.key(2), (4, 16), 0, 64)

    def loss(state, tokens):
        logits, aux = nnx.merge(graphdef, state)(tokens, with_aux=True)
        lse = jax.nn.logsumexp(logits, -1)
        return jnp.mean(lse - logits[..., 0]) + 0.01 * jnp.mean(aux["moe_load_loss"])

    one = jax.jit(jax.value_and_grad(loss))(state, tokens)
    mesh = make_mesh("data=2,expert=4")
    sharded_state = jax.device_put(state, state_shardings(state, mesh))
    gate = sharded_state["blocks"]["mlp"]["gate"][...]
    assert gate.sharding.spec[1] == "expert" and len(gate.sharding.device_set) == 8
    many = jax.jit(jax.value_and_grad(loss))(
        sharded_state, jax.device_put(tokens, batch_sharding(mesh)))
    np.testing.assert_allclose(many[0], one[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(many[1]), jax.tree.leaves(one[1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_moe_lm_trains_through_the_loop(tmp_path):
    tcfg = TrainConfig(steps=30, batch_size=8, seq_len=32, mesh="data=1", log_every=1,
                       eval_every=0, checkpoint_every=0, progress=False,
                       async_checkpoint=False)
    opt = OptimizerConfig(optimizer="muon", learning_rate=0.01)
    model = ModelConfig(d_model=32, n_layers=2, n_heads=4, max_seq_len=64, moe_experts=4)
    summary = Run(tmp_path, LanguageModelTask(model, DataConfig(), 32), tcfg, opt).run()
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert summary["status"] == "done"
    assert rows[-1]["ce_loss"] < rows[0]["ce_loss"] - 1.0
    assert 1.0 <= rows[-1]["moe/load_loss"] < 2.0
    assert summary["params_non_embedding"] < summary["params_non_embedding_stored"]
