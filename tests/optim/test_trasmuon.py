"""TrasMuon reconstruction: the properties of REFERENCE.md section 2 and a hand-computed step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.optim import registry
from jaxlab.optim.newton_schulz import newton_schulz
from jaxlab.optim.partition import describe_params
from jaxlab.optim.trasmuon import clip_factor, scale_by_trasmuon, trasmuon

FI, FO = 24, 40


def tree(x):
    return {"blocks": {"w": x}}


def run(grads, steps_kwargs=None, **kwargs):
    """Updates and final state of scale_by_trasmuon over a list of gradients (L, FI, FO)."""
    params = tree(jnp.zeros_like(grads[0]))
    tx = scale_by_trasmuon(describe_params(params), **kwargs)
    state = tx.init(params)
    outs = []
    for g in grads:
        u, state = tx.update(tree(g), state)
        outs.append(u["blocks"]["w"])
    return outs, state


def rand(seed, shape=(2, FI, FO)):
    return jax.random.normal(jax.random.key(seed), shape)


def test_calibrated_update_has_frobenius_norm_sqrt_fan_in_fan_out():
    """With c = 1 (alpha = 0) and scale 1, ||U||_F = sqrt(fan_in fan_out) per matrix."""
    outs, _ = run([rand(0), rand(1), rand(2)], alpha=0.0, update_scale="none")
    for u in outs:
        np.testing.assert_allclose(jnp.linalg.norm(u, axis=(1, 2)), np.sqrt(FI * FO) * np.ones(2),
                                   rtol=1e-5)


def test_largest_energy_feature_gets_smallest_clip():
    g = rand(3).at[:, 5, :].multiply(8.0)  # input feature 5 carries most energy
    _, state = run([g])
    c = np.asarray(state.c[0])
    energy = np.sum(np.asarray(g) ** 2, axis=2)
    assert np.all(np.argmin(c, axis=1) == np.argmax(energy, axis=1))
    assert np.all(np.argmin(c, axis=1) == 5)


@pytest.mark.parametrize("gate", ["soft", "gated"])
def test_clip_factor_stays_in_range(gate):
    g = rand(4) * jnp.exp(3 * rand(5, (2, FI, 1)))  # energies over ~6 orders of magnitude
    _, state = run([g, 2 * g, g], gate=gate, c_min=0.1)
    c = np.asarray(state.c[0])
    assert c.min() >= 0.1 and c.max() <= 1.0
    assert np.isclose(c.min(), 0.1)  # the most energetic features hit the floor
    r = jnp.logspace(-3, 6, 50)
    cf = clip_factor(r, gate, alpha=1.0, tau=1.0, c_min=0.1)
    assert float(cf.min()) >= 0.1 and float(cf.max()) <= 1.0


def test_gated_gate_leaves_low_ratios_unclipped():
    r = jnp.array([0.0, 0.5, 1.0, 1.5, 10.0])
    c = clip_factor(r, "gated", alpha=1.0, tau=1.0, c_min=0.1)
    np.testing.assert_allclose(c[:3], 1.0)
    np.testing.assert_allclose(c[3:], 1 / (1 + np.log1p(np.array([1.5, 10.0]))), rtol=1e-6)
    np.testing.assert_allclose(clip_factor(r, "soft"), np.clip(1 / (1 + np.log1p(r)), 0.1, 1),
                               rtol=1e-6)


def test_permuting_input_features_permutes_clip():
    perm = np.random.default_rng(0).permutation(FI)
    g = rand(6)
    outs, state = run([g, rand(7)])
    outs_p, state_p = run([g[:, perm, :], rand(7)[:, perm, :]])
    np.testing.assert_allclose(state_p.c[0], state.c[0][:, perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs_p[-1], outs[-1][:, perm, :], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("k", [10.0, 1e3])
def test_scaling_every_gradient_leaves_updates_unchanged(k):
    """Invariant up to the eps terms: NS, the calibration and r = E / Eref are all
    scale-free. (With gradients ~0.01 here, E ~ 1e-5 and eps = 1e-8 in r shows at 1e-3.)"""
    grads = [rand(10), rand(11), rand(12)]
    outs, _ = run(grads)
    outs_k, _ = run([k * g for g in grads])
    for a, b in zip(outs_k, outs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_two_steps_match_the_formulas_by_hand():
    """numpy re-derivation of the reconstruction (defaults: b1=b2=bE=0.95, alpha=1,
    c_min=0.1, eps=1e-8, soft gate, v per output neuron, E per input feature, RMS 0.2)."""
    grads = [rand(20, (1, FI, FO)), rand(21, (1, FI, FO))]
    outs, _ = run(grads)
    b1 = b2 = be = 0.95
    eps = 1e-8
    m = np.zeros((FI, FO))
    v = np.zeros(FO)
    eref = None
    for t, g in enumerate(grads):
        m = b1 * m + (1 - b1) * np.asarray(g[0], np.float64)
        o = np.asarray(newton_schulz(jnp.asarray(m, jnp.float32)), np.float64)
        v = b2 * v + (1 - b2) * np.mean(o ** 2, axis=0)
        b = o / np.sqrt(v[None, :] + eps)
        u = b * np.sqrt(FI * FO) / (np.linalg.norm(b) + eps)
        e = np.sum(m ** 2, axis=1)
        eref = np.median(e) if eref is None else be * eref + (1 - be) * np.median(e)
        r = e / (eref + eps)
        c = np.clip(1 / (1 + np.log1p(r)), 0.1, 1.0)
        expected = 0.2 * u * c[:, None]
        np.testing.assert_allclose(outs[t][0], expected, rtol=2e-4, atol=1e-6)


def test_axis_options_and_clip_ema():
    _, state = run([rand(30)], v_axis="fan_in", energy_axis="fan_out", c_ema=0.9)
    assert state.v[0].shape == (2, FI) and state.c[0].shape == (2, FO)
    _, s1 = run([rand(31), rand(32)], c_ema=0.9)
    _, s0 = run([rand(31)], c_ema=None)
    _, s_raw = run([rand(31), rand(32)], c_ema=None)
    np.testing.assert_allclose(s1.c[0], 0.9 * s0.c[0] + 0.1 * s_raw.c[0], rtol=1e-5)


@pytest.mark.parametrize("kwargs,match", [({"gate": "hard"}, "unknown gate 'hard'"),
                                          ({"v_axis": "rows"}, "v_axis='rows'"),
                                          ({"energy_axis": "cols"}, "energy_axis='cols'"),
                                          ({"update_scale": "big"}, "unknown update_scale")])
def test_bad_options_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        scale_by_trasmuon(describe_params(tree(jnp.zeros((2, FI, FO)))), **kwargs)


def test_registry_build_and_diagnostics():
    params = {"embed": {"embedding": jnp.ones((32, 8))},
              "blocks": {"w": jax.random.normal(jax.random.key(0), (2, 8, 16)),
                         "norm": jnp.ones((2, 8))}}
    opt = registry.build_optimizer(params, 10, optimizer="trasmuon")
    state = opt.tx.init(params)
    update = jax.jit(opt.tx.update)
    for t in range(2):
        g = jax.tree.map(lambda x, k=t: jax.random.normal(jax.random.key(k), x.shape), params)
        _, state = update(g, state, params)
    d = jax.jit(opt.diagnostics)(state)
    for key in ("ratio_max", "ratio_mean", "clip_min", "clip_mean", "v_mean", "update_norm",
                "momentum_norm"):
        assert np.isfinite(float(d[f"trasmuon/{key}"])), key
    assert 0.1 <= float(d["trasmuon/clip_min"]) <= float(d["trasmuon/clip_mean"]) <= 1.0


def test_non_matrix_leaves_go_to_adamw():
    params = {"embed": {"embedding": jnp.ones((32, 8))}, "blocks": {"w": jnp.ones((2, 8, 16))}}
    infos = describe_params(params)
    tx = trasmuon(0.1, infos)
    g = jax.tree.map(lambda x: jnp.full(x.shape, 0.5), params)
    u, _ = tx.update(g, tx.init(params), params)
    # Adam's first step is -lr * sign(g) (bias-corrected moments)
    np.testing.assert_allclose(u["embed"]["embedding"], -0.1, rtol=1e-5)
