"""Muon: parity with optax.contrib.muon, hand-computed updates, scales, routing, stacking."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxlab.diagnostics import collect_stats
from jaxlab.nn import ModelConfig, TransformerLM
from jaxlab.optim.muon import MuonState, muon, shape_scale
from jaxlab.optim.newton_schulz import newton_schulz
from jaxlab.partition import MATRIX, ParamInfo, describe_params, infos_list
from jaxlab.train import optimizer as registry

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, tie_embeddings=False)


def model_tree(seed=0):
    """A model-shaped plain dict (scan-stacked blocks, 4-D attention kernels, untied head)
    with random values, and its ParamInfo tree from the NNX metadata."""
    state = nnx.state(TransformerLM(CFG, rngs=nnx.Rngs(seed)), nnx.Param)
    pure = nnx.to_pure_dict(state)
    treedef = jax.tree.structure(pure)
    return pure, jax.tree.unflatten(treedef, infos_list(describe_params(state)))


def random_like(tree, seed):
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(treedef, [jax.random.normal(jax.random.key(seed * 1000 + k), x.shape)
                                        for k, x in enumerate(leaves)])


def is_info(x):
    return isinstance(x, ParamInfo)


def rel_err(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def optax_routing(infos):
    """optax.contrib.muon dimension numbers for jaxlab's matrices; None sends to Adam."""
    def one(i):
        if i.label != MATRIX:
            return None
        b, f = i.batch_ndim, i.fan_in_ndim
        return optax.contrib.MuonDimensionNumbers(tuple(range(b, b + f)),
                                                  tuple(range(b + f, len(i.shape))))
    return jax.tree.map(one, infos, is_leaf=is_info)


@pytest.mark.parametrize("ns_variant", ["plain", pytest.param("auto", marks=pytest.mark.slow)])
def test_parity_with_optax_contrib_muon(ns_variant):
    """Aligned options: Keller coefficients (optax 'standard'), 5 steps, Frobenius
    normalisation with eps 1e-8, beta 0.95 with optax's bias-corrected Nesterov momentum,
    Keller update scale (optax consistent_rms=None), decoupled matrix weight decay 0.1,
    the same routing (jaxlab's labels passed to optax as muon_weight_dimension_numbers:
    stacked/multi-axis kernels to Muon, embedding/head/norms to Adam) and the same Adam
    group (lr, b1 0.9, b2 0.999, eps 1e-8, Nesterov, no decay). 5 steps of random
    gradients, params updated in between; every leaf within 1e-5 relative."""
    params, infos = model_tree()
    ref = optax.contrib.muon(0.02, ns_coeffs="standard", ns_steps=5, beta=0.95, eps=1e-8,
                             weight_decay=0.1, adam_b1=0.9, adam_b2=0.999,
                             preconditioning="frobenius",
                             muon_weight_dimension_numbers=optax_routing(infos))
    mine = muon(0.02, infos, ns_coeffs="keller", ns_steps=5, beta=0.95, eps=1e-8,
                nesterov=True, bias_correction=True, update_scale="keller", weight_decay=0.1,
                adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8, adam_nesterov=True,
                adam_weight_decay=0.0, ns_variant=ns_variant)
    p_ref = p_mine = params
    s_ref, s_mine = ref.init(params), mine.init(params)
    up_ref, up_mine = jax.jit(ref.update), jax.jit(mine.update)
    for t in range(5):
        g = random_like(params, t)
        u_ref, s_ref = up_ref(g, s_ref, p_ref)
        u_mine, s_mine = up_mine(g, s_mine, p_mine)
        for a, b, i in zip(jax.tree.leaves(u_mine), jax.tree.leaves(u_ref), infos_list(infos)):
            assert rel_err(a, b) < 1e-5, (t, i.path, rel_err(a, b))
        p_ref, p_mine = optax.apply_updates(p_ref, u_ref), optax.apply_updates(p_mine, u_mine)


def test_first_step_is_lr_scale_ns_of_the_gradient():
    """Step 1 with Nesterov: M = (1-b) G, U = b M + (1-b) G, a multiple of G; NS removes
    the multiple, so the matrix update is -lr * scale * NS(G), matrix by matrix."""
    params, infos = model_tree()
    g = random_like(params, 7)
    tx = muon(0.05, infos, update_scale="keller", weight_decay=0.0)
    u, _ = tx.update(g, tx.init(params), params)
    for info, ui, gi in zip(infos_list(infos), jax.tree.leaves(u), jax.tree.leaves(g)):
        if info.label != MATRIX:
            continue
        expected = info.from_matrices(newton_schulz(info.as_matrices(gi)))
        scale = np.sqrt(max(1.0, info.fan_out / info.fan_in))
        np.testing.assert_allclose(ui, -0.05 * scale * expected, rtol=2e-5, atol=1e-7)


def test_moonlight_scale_gives_update_rms_0_2():
    """Exact orthogonalisation ((2, -1.5, 0.5) x 30 steps) of a full-rank 48 x 96 gradient:
    every singular value 1, RMS 1/sqrt(96); the moonlight scale 0.2 sqrt(96) -> RMS 0.2."""
    params = {"h": {"w": jnp.zeros((48, 96))}}
    infos = describe_params(params)
    tx = muon(1.0, infos, update_scale="moonlight", ns_coeffs=(2.0, -1.5, 0.5), ns_steps=30)
    g = {"h": {"w": jax.random.normal(jax.random.key(0), (48, 96))}}
    u, _ = tx.update(g, tx.init(params), params)
    rms = float(jnp.sqrt(jnp.mean(jnp.square(u["h"]["w"]))))
    assert rms == pytest.approx(0.2, rel=1e-5)


def test_shape_scales():
    tall, wide = ParamInfo("a", MATRIX, (64, 16)), ParamInfo("b", MATRIX, (16, 64))
    assert shape_scale(tall, "keller") == 1.0
    assert shape_scale(wide, "keller") == pytest.approx(2.0)
    assert shape_scale(wide, "moonlight") == pytest.approx(0.2 * 8.0)
    assert shape_scale(wide, 0.5) == 0.5
    with pytest.raises(ValueError, match="unknown update_scale 'adam'; valid:"):
        shape_scale(wide, "adam")


def test_weight_decay_alone_shrinks_weights():
    """Zero gradient: NS(0) = 0, so W <- W (1 - lr wd) on matrices; the AdamW group
    decays embedding and head by its own rate, never the norm gains."""
    params, infos = model_tree()
    zeros = jax.tree.map(jnp.zeros_like, params)
    lr, wd, adam_wd = 0.05, 0.3, 0.2
    tx = muon(lr, infos, weight_decay=wd, adam_weight_decay=adam_wd)
    u, _ = tx.update(zeros, tx.init(params), params)
    new = optax.apply_updates(params, u)
    for info, w, w1 in zip(infos_list(infos), jax.tree.leaves(params), jax.tree.leaves(new)):
        factor = {"matrix": 1 - lr * wd, "embedding": 1 - lr * adam_wd,
                  "head": 1 - lr * adam_wd, "vector": 1.0}[info.label]
        np.testing.assert_allclose(w1, w * factor, rtol=1e-6, err_msg=info.path)


def test_routing_embeddings_head_vectors_get_adamw():
    """Non-matrix leaves get exactly optax.adamw's update with the AdamW-group settings;
    matrices do not (their update has the orthogonal-matrix RMS)."""
    params, infos = model_tree()
    tx = muon(0.01, infos, adam_learning_rate=0.003, adam_b1=0.8, adam_b2=0.9,
              adam_weight_decay=0.0)
    adam = optax.adamw(0.003, b1=0.8, b2=0.9, weight_decay=0.0)
    s, s_adam = tx.init(params), adam.init(params)
    for t in range(3):
        g = random_like(params, t)
        u, s = tx.update(g, s, params)
        u_adam, s_adam = adam.update(g, s_adam, params)
        for info, a, b in zip(infos_list(infos), jax.tree.leaves(u), jax.tree.leaves(u_adam)):
            if info.label == MATRIX:
                assert rel_err(a, b) > 0.1, info.path
            else:
                np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=info.path)


def test_scan_stacked_weight_equals_separate_matrices():
    """A (L, in, out) leaf gets the same updates as L separate 2-D leaves."""
    L, fi, fo = 3, 24, 40
    w = jax.random.normal(jax.random.key(0), (L, fi, fo))
    stacked = {"blocks": {"mlp": {"kernel": w}}}
    separate = {f"layer{k}": {"mlp": {"kernel": w[k]}} for k in range(L)}
    info_s, info_p = describe_params(stacked), describe_params(separate)
    assert info_s["blocks"]["mlp"]["kernel"].num_matrices == L
    tx_s, tx_p = muon(0.02, info_s, stack=False), muon(0.02, info_p, stack=False)
    s_s, s_p = tx_s.init(stacked), tx_p.init(separate)
    for t in range(3):
        g = jax.random.normal(jax.random.key(10 + t), (L, fi, fo))
        u_s, s_s = tx_s.update({"blocks": {"mlp": {"kernel": g}}}, s_s, stacked)
        u_p, s_p = tx_p.update({f"layer{k}": {"mlp": {"kernel": g[k]}} for k in range(L)},
                               s_p, separate)
        for k in range(L):
            np.testing.assert_allclose(u_s["blocks"]["mlp"]["kernel"][k],
                                       u_p[f"layer{k}"]["mlp"]["kernel"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("other", [{"stack": False}, {"ns_chunk": 3}, {"ns_chunk": 1}])
def test_stacking_and_chunking_change_nothing(other):
    """One NS call per stack of same-shape matrices vs one per leaf, and the stacks run in
    chunks of 3 (the 8 attention matrices in 4 calls of 2) or 1 matrix at a time."""
    params, infos = model_tree()
    a, b = muon(0.02, infos, stack=True, ns_chunk="all"), muon(0.02, infos, **other)
    sa, sb = a.init(params), b.init(params)
    for t in range(2):
        g = random_like(params, t)
        ua, sa = jax.jit(a.update)(g, sa, params)
        ub, sb = jax.jit(b.update)(g, sb, params)
        for x, y in zip(jax.tree.leaves(ua), jax.tree.leaves(ub)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_labels_inferred_when_infos_not_given():
    params = {"embed": {"embedding": jnp.ones((16, 8))}, "h": {"w": jnp.ones((8, 12)),
              "b": jnp.ones(12)}}
    g = random_like(params, 1)
    a = muon(0.1, None)
    b = muon(0.1, describe_params(params))
    ua, _ = a.update(g, a.init(params), params)
    ub, _ = b.update(g, b.init(params), params)
    for x, y in zip(jax.tree.leaves(ua), jax.tree.leaves(ub)):
        np.testing.assert_array_equal(x, y)


def test_nnx_state_through_build_optimizer_with_diagnostics():
    """The registry path the training loop uses: nnx.State params, gin-free defaults,
    diagnostics computed inside jit."""
    model = TransformerLM(CFG, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    opt = registry.build_optimizer(params, 10, optimizer="muon")
    state = opt.tx.init(params)

    @jax.jit
    def step(params, state, tokens):
        def loss(p):
            logits = nnx.merge(graphdef, p)(tokens[:, :-1])
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits,
                                                                            tokens[:, 1:]))
        g = jax.grad(loss)(params)
        u, state = opt.tx.update(g, state, params)
        return optax.apply_updates(params, u), state, collect_stats(state)

    tokens = jax.random.randint(jax.random.key(0), (2, 9), 0, CFG.vocab_size)
    for _ in range(2):
        params, state, diag = step(params, state, tokens)
    assert set(diag) == {"muon/momentum_norm", "muon/update_norm"}
    assert all(np.isfinite(float(v)) and float(v) > 0 for v in diag.values())
    muon_state = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, MuonState))
                  if isinstance(s, MuonState)]
    assert len(muon_state) == 1 and muon_state[0].stats["muon/update_norm"] == diag["muon/update_norm"]


@pytest.mark.parametrize("kwargs,match", [({"ns_impl": "cuda"}, "unknown ns_impl 'cuda'"),
                                          ({"ns_chunk": 0}, "ns_chunk=0; valid"),
                                          ({"ns_dtype": "float16"}, "ns_dtype 'float16'"),
                                          ({"ns_coeffs": "fast"}, "unknown Newton-Schulz")])
def test_bad_options_are_clear_errors(kwargs, match):
    _, infos = model_tree()
    with pytest.raises(ValueError, match=match):
        muon(0.1, infos, **kwargs)


@pytest.mark.parametrize("lr,kwargs,match", [
    (-0.01, {}, r"learning_rate = -0.01 is outside \[0, inf\)"),
    (float("nan"), {}, "learning_rate must be a number, got nan"),
    (0.1, {"beta": 1.0}, r"momentum beta = 1.0 is outside \[0, 1\)"),
    (0.1, {"beta": -0.1}, r"momentum beta = -0.1 is outside \[0, 1\)"),
    (0.1, {"weight_decay": -0.1}, r"weight_decay = -0.1 is outside \[0, inf\)"),
    (0.1, {"adam_weight_decay": -1}, r"adam_weight_decay = -1 is outside"),
    (0.1, {"adam_b2": 1.2}, r"adam_b2 = 1.2 is outside \[0, 1\)"),
    (0.1, {"ns_coeffs": (1.0, 2.0)}, r"one \(a, b, c\) or a sequence of \(a, b, c\) triples"),
    (0.1, {"ns_coeffs": [(1.0, 2.0, 3.0), (1.0, 2.0)]}, "triples of numbers"),
    (0.1, {"ns_variant": "fastest"}, "unknown ns_variant 'fastest'; valid: .'auto', 'plain', 'gram'"),
    (0.1, {"ns_steps": 0}, "ns_steps must be an integer >= 1, got 0"),
    (0.1, {"update_scale": "big"}, "unknown update_scale 'big'"),
])
@pytest.mark.parametrize("labelled", [True, False])
def test_nonsense_is_refused_at_construction(lr, kwargs, match, labelled):
    """Both with a labelled tree and deferred (infos=None, labelled at init): the error
    comes from muon() itself, before any init or update."""
    _, infos = model_tree()
    with pytest.raises(ValueError, match=match):
        muon(lr, infos if labelled else None, **kwargs)


def test_bf16_newton_schulz_close_to_f32():
    params, infos = model_tree()
    g = random_like(params, 3)
    a, b = muon(0.02, infos), muon(0.02, infos, ns_dtype="bfloat16")
    ua, _ = a.update(g, a.init(params), params)
    ub, _ = b.update(g, b.init(params), params)
    for info, x, y in zip(infos_list(infos), jax.tree.leaves(ub), jax.tree.leaves(ua)):
        assert x.dtype == jnp.float32
        assert rel_err(x, y) < (0.1 if info.label == MATRIX else 1e-6), info.path


def test_pallas_ns_impl_matches_xla():
    """ns_impl='pallas' (interpret mode on CPU, bf16 products) vs the XLA path in bf16."""
    pytest.importorskip("pallas_kernels.newton_schulz.ops")
    params = {"blocks": {"w": jax.random.normal(jax.random.key(0), (2, 32, 48))},
              "h": {"w": jax.random.normal(jax.random.key(1), (48, 32))}}
    infos = describe_params(params)
    g = random_like(params, 2)
    a = muon(0.02, infos, ns_impl="pallas", ns_dtype="bfloat16")
    b = muon(0.02, infos, ns_impl="xla", ns_dtype="bfloat16", ns_variant="plain")
    f32 = muon(0.02, infos, ns_variant="plain")
    ua, _ = a.update(g, a.init(params), params)
    ub, _ = b.update(g, b.init(params), params)
    uf, _ = f32.update(g, f32.init(params), params)
    for x, y, z in zip(jax.tree.leaves(ua), jax.tree.leaves(ub), jax.tree.leaves(uf)):
        # both bf16 paths sit ~5% from the f32 result; they agree with each other as
        # closely as either agrees with f32
        assert rel_err(x, y) <= 1.5 * max(rel_err(y, z), 1e-3)
        assert rel_err(x, z) < 0.1
