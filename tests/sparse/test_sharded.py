"""Masks on 8 fake CPU devices: sharded like their params, equal to single-device masks,
kept through an orbax checkpoint restored onto another mesh."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from jaxlab.mesh import make_mesh
from jaxlab.nn import ModelConfig, TransformerLM, cross_entropy
from jaxlab.partition import describe_params
from jaxlab.sharding import abstract_with_shardings, state_shardings
from jaxlab.sparse import PruneSpec, PruningSchedule, plan_leaves, prune

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, max_seq_len=16)
SPEC = PruneSpec(sparsity=0.6, distribution="erk",
                 schedule=PruningSchedule("cubic", start=1, end=3, frequency=1))


def setup(mesh_spec):
    model = nnx.eval_shape(lambda: TransformerLM(CFG, rngs=nnx.Rngs(params=0)))
    graphdef, abstract = nnx.split(model, nnx.Param)
    infos = describe_params(abstract)
    tx = prune(optax.adamw(1e-2), infos, SPEC)
    if mesh_spec is None:
        params = nnx.state(TransformerLM(CFG, rngs=nnx.Rngs(params=0)), nnx.Param)
        return graphdef, params, tx, infos, None, None
    mesh = make_mesh(mesh_spec)
    psh = state_shardings(abstract, mesh)
    params = jax.jit(lambda: nnx.state(TransformerLM(CFG, rngs=nnx.Rngs(params=0)), nnx.Param),
                     out_shardings=psh)()
    osh = jax.jit(tx.init).lower(abstract_with_shardings(abstract, psh)).compile().output_shardings
    return graphdef, params, tx, infos, psh, osh


def train(graphdef, params, tx, psh, osh, steps=4):
    tokens = jax.random.randint(jax.random.key(1), (8, 17), 0, CFG.vocab_size)

    def step(p, s):
        g = jax.grad(lambda q: cross_entropy(nnx.merge(graphdef, q)(tokens[:, :-1]),
                                             tokens[:, 1:]))(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    if psh is None:
        state, fn = tx.init(params), jax.jit(step)
    else:
        state = jax.jit(tx.init, out_shardings=osh)(params)
        fn = jax.jit(step, out_shardings=(psh, osh))
    for _ in range(steps):
        params, state = fn(params, state)
    return params, state


def assert_like_params(state, params, infos):
    leaves = jax.tree.leaves(params)
    for plan, mask in zip(plan_leaves(infos, SPEC), state.masks):
        p = leaves[plan.index]
        assert mask.sharding.is_equivalent_to(p.sharding, p.ndim), (plan.info.path, mask.sharding,
                                                                     p.sharding)
        assert mask.dtype == jnp.bool_


def test_sharded_masks_match_single_device_and_survive_restore(tmp_path):
    g, params, tx, infos, psh, osh = setup("fsdp=4,tensor=2")
    assert_like_params(jax.jit(tx.init, out_shardings=osh)(params), params, infos)
    assert any(len(set(x.sharding.spec) - {None}) == 2 for x in jax.tree.leaves(params))
    params, state = train(g, params, tx, psh, osh)
    assert_like_params(state, params, infos)

    g1, p1, tx1, _, _, _ = setup(None)
    p1, s1 = train(g1, p1, tx1, None, None)
    for a, b in zip(state.masks, s1.masks):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert not np.asarray(a).all()

    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
    ckpt.wait_until_finished()
    _, abstract_p, tx2, infos2, psh2, osh2 = setup("data=2,fsdp=2,tensor=2")
    target = {"params": abstract_with_shardings(params, psh2),
              "opt_state": abstract_with_shardings(state, osh2)}
    restored = ckpt.restore(tmp_path / "ckpt", target)
    assert_like_params(restored["opt_state"], restored["params"], infos2)
    for a, b in zip(restored["opt_state"].masks, state.masks):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(restored["opt_state"].count) == 4
    # the restored run keeps pruned weights at exactly zero
    leaves = jax.tree.leaves(restored["params"])
    for plan, mask in zip(plan_leaves(infos2, SPEC), restored["opt_state"].masks):
        assert np.all(np.asarray(leaves[plan.index])[~np.asarray(mask)] == 0.0)
