"""Muon under a mesh of 8 fake CPU devices: sharded update equals the single-device one,
and the compiled update has no collectives inside the Newton-Schulz iterations."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlab.mesh import make_mesh
from jaxlab.nn import ModelConfig, TransformerLM
from jaxlab.optim.adamuon import adamuon
from jaxlab.optim.dion import dion
from jaxlab.optim.muon import muon
from jaxlab.optim.normuon import normuon
from jaxlab.optim.trasmuon import trasmuon
from jaxlab.partition import describe_params
from jaxlab.sharding import state_shardings

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, tie_embeddings=False)
COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")


@pytest.fixture(scope="module")
def model_state():
    state = nnx.state(TransformerLM(CFG, rngs=nnx.Rngs(0)), nnx.Param)
    return state, describe_params(state)


def sharded(state, spec):
    mesh = make_mesh(spec)
    params = jax.device_put(state, state_shardings(state, mesh))
    grads = jax.tree.map(lambda x: 0.3 * x + 0.1, params)
    return params, grads


def compiled_text(tx, params, grads) -> str:
    return jax.jit(tx.update).lower(grads, tx.init(params), params).compile().as_text()


def collective_counts(text: str) -> dict[str, int]:
    return {k: len(re.findall(rf"\b{k}(-start)?\(", text)) for k in COLLECTIVES}


def while_bodies_without_collectives(text: str) -> bool:
    """True if no while-loop body computation of the HLO contains a collective."""
    for body in set(re.findall(r"while\(.*?body=%?([\w.\-]+)", text)):
        block = re.search(rf"%?{re.escape(body)} .*?\n}}", text, re.DOTALL).group(0)
        if any(c in block for c in COLLECTIVES):
            return False
    return True


@pytest.mark.parametrize("name,spec", [
    ("muon", "fsdp=4,tensor=2"), ("muon", "data=8"), ("muon chunked", "fsdp=4,tensor=2"),
    ("muon aol", "fsdp=4,tensor=2"), ("normuon", "fsdp=4,tensor=2"),
    ("adamuon", "fsdp=4,tensor=2"),
    pytest.param("trasmuon", "fsdp=4,tensor=2", marks=pytest.mark.slow)])
def test_sharded_update_equals_single_device(model_state, spec, name):
    state, infos = model_state
    make = {"muon": lambda: muon(0.02, infos, weight_decay=0.1),
            # one matrix per NS call on the single device; the sharded stack stays whole
            "muon chunked": lambda: muon(0.02, infos, weight_decay=0.1, ns_chunk=1),
            "muon aol": lambda: muon(0.02, infos, ns_precondition="aol",
                                     ns_coeffs="turbo_muon", ns_steps=4),
            "normuon": lambda: normuon(0.02, infos), "adamuon": lambda: adamuon(0.02, infos),
            "dion": lambda: dion(0.02, infos, rank_fraction=0.5),
            "trasmuon": lambda: trasmuon(0.02, infos, weight_decay=0.1)}[name]
    tx = make()
    params, grads = sharded(state, spec)
    assert len(jax.tree.leaves(params)[0].sharding.device_set) == 8
    one = jax.devices()[0]
    s_sh, s_1 = tx.init(params), jax.device_put(tx.init(jax.device_get(params)), one)
    p_sh, p_1 = params, jax.device_put(jax.device_get(params), one)
    update = jax.jit(tx.update)
    for t in range(2):
        g_sh = jax.tree.map(lambda g, k=1.0 + t: g * k, grads)
        u_sh, s_sh = update(g_sh, s_sh, p_sh)
        u_1, s_1 = update(jax.device_put(jax.device_get(g_sh), one), s_1, p_1)
        assert len(jax.tree.leaves(u_1)[0].sharding.device_set) == 1
        for a, b in zip(jax.tree.leaves(u_sh), jax.tree.leaves(u_1)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        p_sh = jax.tree.map(jnp.add, p_sh, u_sh)
        p_1 = jax.tree.map(jnp.add, p_1, u_1)


@pytest.mark.parametrize("spec", ["fsdp=4,tensor=2",
                                  pytest.param("data=8", marks=pytest.mark.slow)])
def test_no_collectives_inside_newton_schulz(model_state, spec):
    """Each NS iteration on a sharded matrix would need its own all-reduce/all-gather, so
    the count of collectives would grow with ns_steps. With the stack axis sharded it is
    the same for 3 and 6 steps: all collectives are the re-layouts before and after NS.
    Control: per-leaf NS on FSDP/tensor-sharded leaves (shard=False) does grow."""
    state, infos = model_state
    params, grads = sharded(state, spec)
    t3 = compiled_text(muon(0.02, infos, ns_steps=3), params, grads)
    t6 = compiled_text(muon(0.02, infos, ns_steps=6), params, grads)
    assert collective_counts(t3) == collective_counts(t6)
    # if XLA rolled the iterations into a while loop, its body is collective-free too
    assert while_bodies_without_collectives(t3) and while_bodies_without_collectives(t6)
    if spec == "fsdp=4,tensor=2":
        u3 = collective_counts(compiled_text(muon(0.02, infos, ns_steps=3, shard=False),
                                             params, grads))
        u6 = collective_counts(compiled_text(muon(0.02, infos, ns_steps=6, shard=False),
                                             params, grads))
        grown = sum(u6.values()) - sum(u3.values())
        assert grown >= 3 * 7, (u3, u6)  # >= one collective per extra step per matrix leaf


@pytest.mark.parametrize("qr_one", ["gram_schmidt", "householder"])
def test_dion_sharded_update_equals_single_device(model_state, qr_one):
    """On the 8 fake CPU devices Dion's `qr='auto'` takes Gram-Schmidt (jaxlib 0.10's
    LAPACK QR deadlocks when the devices run it at once); its sharded update equals the
    single-device one with the same method and with Householder QR (the column signs the
    two methods differ by cancel in P Q^T), over 3 steps of state (momentum, Q)."""
    state, infos = model_state
    params, grads = sharded(state, "fsdp=4,tensor=2")
    tx_sh = dion(0.02, infos, rank_fraction=0.5)
    tx_1 = dion(0.02, infos, rank_fraction=0.5, qr=qr_one)
    one = jax.devices()[0]
    s_sh, s_1 = tx_sh.init(params), jax.device_put(tx_1.init(jax.device_get(params)), one)
    p_sh, p_1 = params, jax.device_put(jax.device_get(params), one)
    up_sh, up_1 = jax.jit(tx_sh.update), jax.jit(tx_1.update)
    for t in range(3):
        g_sh = jax.tree.map(lambda g, k=1.0 + t: g * k, grads)
        u_sh, s_sh = up_sh(g_sh, s_sh, p_sh)
        u_1, s_1 = up_1(jax.device_put(jax.device_get(g_sh), one), s_1, p_1)
        for a, b in zip(jax.tree.leaves(u_sh), jax.tree.leaves(u_1)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        p_sh = jax.tree.map(jnp.add, p_sh, u_sh)
        p_1 = jax.tree.map(jnp.add, p_1, u_1)
    q = jax.tree.leaves(s_sh)  # the sharded state stays sharded
    assert any(len(getattr(x, "sharding", one).device_set) == 8 for x in q if x.ndim == 3)
