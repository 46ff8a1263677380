"""The prune wrapper: exact zeros every step, no moment leakage, N:M, blocks, SR-STE, AdamS."""
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxlab.diagnostics import WithStats, collect_stats
from jaxlab.nn import ModelConfig, TransformerLM, cross_entropy
from jaxlab.partition import ParamInfo, describe_params
from jaxlab.sparse import (
    PruneSpec,
    PruningSchedule,
    SparsityConfig,
    adams,
    block_mask,
    maybe_prune,
    nm_mask,
    plan_leaves,
    prune,
    sparsity_config,
    sr_ste,
)
from jaxlab.sparse.prune import PruneState
from jaxlab.train.optimizer import build_optimizer

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, max_seq_len=16)


def tiny_model():
    model = TransformerLM(CFG, rngs=nnx.Rngs(params=0))
    graphdef, params = nnx.split(model, nnx.Param)
    tokens = jax.random.randint(jax.random.key(1), (4, 17), 0, CFG.vocab_size)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}

    def loss(p):
        return cross_entropy(nnx.merge(graphdef, p)(batch["inputs"]), batch["targets"])

    return params, loss


def small_tree():
    """A scan-like stack, a plain matrix and a vector, with a quadratic loss."""
    k = jax.random.split(jax.random.key(0), 3)
    params = {"blocks": {"w": jax.random.normal(k[0], (2, 16, 32))},
              "w2": jax.random.normal(k[1], (32, 16)), "norm": jnp.ones((16,))}
    target = jax.tree.map(lambda x: 0.5 * x + 0.1, params)

    def loss(p):
        return sum(jnp.sum(jnp.square(a - b) * (1 + jnp.abs(b))) for a, b in
                   zip(jax.tree.leaves(p), jax.tree.leaves(target)))

    return params, loss


_GRAD = {}


def grad_fn(loss):
    if loss not in _GRAD:
        _GRAD[loss] = jax.jit(jax.grad(loss))
    return _GRAD[loss]


def param_trees(tree, params):
    """All params-structured subtrees of an optimizer state (moments)."""
    treedef = jax.tree.structure(params)
    found = []

    def visit(x):
        try:
            items = treedef.flatten_up_to(x)
        except (ValueError, TypeError):
            return False
        if all(not jax.tree.leaves(i) or getattr(i, "shape", None) == jnp.shape(p)
               for i, p in zip(items, jax.tree.leaves(params))):
            found.append(items)
            return True
        return False

    jax.tree.map(lambda x: x, tree, is_leaf=visit)
    return found


def _pruner(state):
    """The prune wrapper's state (``maybe_prune`` adds a ``WithStats`` around it)."""
    return state.inner if isinstance(state, WithStats) else state


def run_and_check(tx, params, loss, plans, steps=6, event=2):
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        g = jax.grad(loss)(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    p = params
    for t in range(steps):
        p, state = step(p, state)
        leaves = jax.tree.leaves(p)
        for plan, mask in zip(plans, _pruner(state).masks):
            w = np.asarray(leaves[plan.index])
            if t >= event:
                assert not np.asarray(mask).all()
                assert np.all(w[~np.asarray(mask)] == 0.0), (t, plan.info.path)
                assert (w[np.asarray(mask)] != 0).mean() > 0.99
    moments = param_trees(_pruner(state).inner_state, params)
    assert moments, "no moments found in the inner state"
    for items in moments:
        for plan, mask in zip(plans, _pruner(state).masks):
            v = items[plan.index]
            if jax.tree.leaves(v):
                assert np.all(np.asarray(v)[~np.asarray(mask)] == 0.0), plan.info.path
    return p, state


SPEC = PruneSpec(sparsity=0.5, schedule=PruningSchedule("oneshot", start=2))


def test_adamw_exact_zeros_and_no_moment_leak():
    params, loss = tiny_model()
    infos = describe_params(params)
    plans = plan_leaves(infos, SPEC)
    assert {p.info.label for p in plans} == {"matrix"} and len(plans) == 7
    tx = prune(optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2)), infos, SPEC, plans)
    _, state = run_and_check(tx, params, loss, plans)
    for plan, mask, nnz in zip(plans, state.masks, state.nonzeros):
        assert int(nnz) == int(np.asarray(mask).sum()) == plan.final_nonzeros == plan.size // 2


def test_moments_are_reset_not_just_decayed():
    """Without the reset, Adam's mu at newly pruned entries would be b1^k * old != 0."""
    params, loss = small_tree()
    infos = describe_params(params)
    plans = plan_leaves(infos, SPEC)
    tx = prune(optax.adam(1e-2), infos, SPEC, plans)
    state = tx.init(params)
    update, grad = jax.jit(tx.update), grad_fn(loss)
    for _ in range(3):
        u, state = update(grad(params), state, params)
    mu = jax.tree.leaves(state.inner_state[0].mu)
    for plan, mask in zip(plans, state.masks):
        assert np.all(np.asarray(mu[plan.index])[~np.asarray(mask)] == 0.0)
        assert np.all(np.asarray(mu[plan.index])[np.asarray(mask)] != 0.0)


def test_muon_like_partitioned_inner_optimizer():
    """optax.contrib.muon keeps per-group masked states; moments are found and reset."""
    params, loss = tiny_model()
    infos = describe_params(params)
    plans = plan_leaves(infos, SPEC)
    tx = prune(optax.contrib.muon(1e-2), infos, SPEC, plans)
    run_and_check(tx, params, loss, plans)


@pytest.mark.skipif(importlib.util.find_spec("jaxlab.optim.muon") is None,
                    reason="jaxlab.optim.muon not landed yet")
def test_jaxlab_muon_exact_zeros():
    params, loss = tiny_model()
    opt = build_optimizer(params, 10, optimizer="muon")
    infos = describe_params(params)
    tx = maybe_prune(opt.tx, infos, 10,
                     sparsity_config(target=0.5, schedule="oneshot", start=2, unit="step"))
    run_and_check(tx, params, loss, plan_leaves(infos, SPEC))


def test_gin_config_through_build_optimizer_and_diagnostics():
    import gin

    from jaxlab.train.gin_setup import optimizer_config
    params, loss = tiny_model()
    with gin.unlock_config():
        gin.parse_config(["sparsity.target = 0.5", "sparsity.schedule = 'cubic'",
                          "sparsity.start = 0.2", "sparsity.end = 0.6", "sparsity.unit = 'fraction'",
                          "sparsity.frequency = 2", "sparsity.distribution = 'erk'"])
    try:
        opt = build_optimizer(params, 10, optimizer_config())
    finally:
        gin.clear_config()
    state = opt.tx.init(params)
    assert isinstance(state, WithStats) and isinstance(state.inner, PruneState)
    p = params
    update, grad = jax.jit(opt.tx.update), grad_fn(loss)
    for _ in range(10):
        u, state = update(grad(p), state, p)
        p = optax.apply_updates(p, u)
    d = collect_stats(state)
    n_matrix = sum(x.size for x, i in zip(jax.tree.leaves(params), jax.tree.leaves(
        opt.infos, is_leaf=lambda i: isinstance(i, ParamInfo))) if i.label == "matrix")
    total = sum(x.size for x in jax.tree.leaves(params))
    assert int(d["sparse/nonzero_params"]) == total - n_matrix + round(0.5 * n_matrix)
    assert float(d["sparse/density/matrix"]) == pytest.approx(0.5, abs=1e-6)
    assert float(d["sparse/density/vector"]) == 1.0
    emb = CFG.vocab_size * CFG.d_model
    assert int(d["sparse/nonzero_non_embedding"]) == int(d["sparse/nonzero_params"]) - emb
    assert float(d["sparse/target_sparsity"]) == 0.5


def test_identity_when_dense():
    tx = optax.sgd(0.1)
    assert maybe_prune(tx, None, 10, SparsityConfig()) is tx
    assert maybe_prune(tx, None, 10, sparsity_config()) is tx


def nm_info(shape, batch_ndim, fan_in_ndim):
    return ParamInfo("k", "matrix", shape, batch_ndim, fan_in_ndim)


@pytest.mark.parametrize("shape,b,f,axis", [((3, 16, 2, 4), 1, 1, 1), ((2, 2, 8, 12), 1, 2, 2)])
def test_nm_groups_along_fan_in(shape, b, f, axis):
    w = jax.random.normal(jax.random.key(0), shape)
    info = nm_info(shape, b, f)
    mask = np.asarray(jax.jit(nm_mask, static_argnums=(1, 2, 3))(jnp.abs(w), info, 2, 4))
    w = np.abs(np.asarray(w))
    g = np.moveaxis(mask, axis, -1).reshape(-1, 4)
    gw = np.moveaxis(w, axis, -1).reshape(-1, 4)
    assert np.all(g.sum(-1) == 2)
    assert np.all(np.sort(gw, -1)[:, 2:].min(-1) <= np.where(g, gw, np.inf).min(-1))
    with pytest.raises(ValueError, match="multiple of M"):
        nm_mask(jnp.ones((6, 8)), nm_info((6, 8), 0, 1))


def test_nm_prune_every_group_exact():
    params, loss = tiny_model()
    infos = describe_params(params)
    spec = PruneSpec(structure="nm", schedule=PruningSchedule("oneshot", 0))
    plans = plan_leaves(infos, spec)
    tx = prune(optax.adamw(1e-2), infos, spec, plans)
    p, state = run_and_check(tx, params, loss, plans, steps=2, event=0)
    for plan, mask in zip(plans, state.masks):
        info = plan.info
        axis = info.batch_ndim + info.fan_in_ndim - 1
        g = np.moveaxis(np.asarray(mask), axis, -1).reshape(-1, 4)
        assert np.all(g.sum(-1) == 2), info.path


def test_block_masks_and_block_mask_export():
    params = {"w": jax.random.normal(jax.random.key(0), (3, 16, 32))}
    params["blocks"] = {"x": params.pop("w")}
    infos = describe_params(params)
    spec = PruneSpec(sparsity=0.75, structure="block", block_size=8,
                     schedule=PruningSchedule("oneshot", 0))
    plans = plan_leaves(infos, spec)
    tx = prune(optax.sgd(0.0), infos, spec, plans)
    g = jax.tree.map(jnp.zeros_like, params)
    u, state = tx.update(g, tx.init(params), params)
    (mask,) = state.masks
    tiles = np.asarray(block_mask(mask, plans[0].info, 8))
    assert tiles.shape == (3, 2, 4)
    assert np.all(tiles.sum(axis=(1, 2)) == 2)  # 8 tiles per matrix, 25% kept
    full = np.repeat(np.repeat(tiles, 8, axis=1), 8, axis=2)
    np.testing.assert_array_equal(full, np.asarray(mask))
    # kept tiles are the ones with the largest L1 norm
    w = np.abs(np.asarray(params["blocks"]["x"])).reshape(3, 2, 8, 4, 8).sum((2, 4))
    for i in range(3):
        assert w[i][tiles[i]].min() >= w[i][~tiles[i]].max()


@pytest.mark.parametrize("score", ["random", "saliency"])
def test_other_scores_global_scope(score):
    params, loss = small_tree()
    infos = describe_params(params)
    spec = PruneSpec(sparsity=0.5, score=score, scope="global",
                     schedule=PruningSchedule("oneshot", 2))
    plans = plan_leaves(infos, spec)
    _, state = run_and_check(prune(optax.adam(1e-2), infos, spec, plans), params, loss, plans)
    total = sum(int(n) for n in state.nonzeros)
    assert total == sum(p.final_nonzeros for p in plans)  # exact global count
    assert len({int(n) / p.size for n, p in zip(state.nonzeros, plans)}) > 1  # moved between layers


def test_sr_ste_update_hand_computed():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
    params = {"w": w}
    infos = describe_params(params)
    plans = plan_leaves(infos, PruneSpec(structure="nm"))
    lr, lam = 0.1, 0.5
    tx = sr_ste(optax.sgd(lr), plans, 2, 4, decay=lam)
    state = tx.init(params)
    e0 = np.asarray(nm_mask(jnp.abs(w), plans[0].info))
    u, state = tx.update({"w": g}, state, params)
    w_np, g_np = np.asarray(w), np.asarray(g)
    w1 = w_np - lr * (g_np + lam * (1 - e0) * w_np)
    np.testing.assert_allclose(np.asarray(state.dense[0]), w1, rtol=1e-6, atol=1e-7)
    e1 = np.asarray(nm_mask(jnp.asarray(np.abs(w1)), plans[0].info))
    new = np.asarray(optax.apply_updates(params, u)["w"])
    np.testing.assert_allclose(new, w1 * e1, rtol=1e-6, atol=1e-7)
    assert np.all(new[~e1] == 0.0)


def test_adams_reconstruction_decays_then_hard_prunes():
    params, loss = small_tree()
    infos = describe_params(params)
    plans = plan_leaves(infos, PruneSpec(structure="nm"))
    tx = adams(optax.adam(1e-2), plans, total_steps=12, decay=2.0, refresh=2, start=0, end=8)
    state, p = tx.init(params), params
    step = jax.jit(lambda p, s: tx.update(jax.grad(loss)(p), s, p))
    out_norms = []
    for t in range(12):
        u, state = step(p, state)
        p = optax.apply_updates(p, u)
        leaves = jax.tree.leaves(p)
        out = sum(float(np.abs(np.asarray(leaves[pl.index])[~np.asarray(m)]).sum())
                  for pl, m in zip(plans, state.masks))
        out_norms.append(out)
        if t >= 8:
            assert out == 0.0
    assert out_norms[7] < out_norms[1]  # the L1 decay shrinks the weights outside the mask
