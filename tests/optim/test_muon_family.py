"""NorMuon, AdaMuon and Dion: updates computed by hand from each paper's algorithm (numpy,
with jaxlab's Newton-Schulz as NS), their invariants, stacked and expert weights equal to
per-matrix ones, and clear errors at construction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.optim.adamuon import adamuon
from jaxlab.optim.dion import dion, dion_rank, gram_schmidt_qr, joint_qr
from jaxlab.optim.newton_schulz import newton_schulz
from jaxlab.optim.normuon import normuon
from jaxlab.partition import ParamInfo, describe_params

LR = 0.01


def ns(x):
    """jaxlab's default NS (Keller, 5 steps) on one numpy matrix."""
    return np.asarray(newton_schulz(jnp.asarray(x, jnp.float32)), np.float64)


def grads(shape, steps, seed=0):
    return [np.asarray(jax.random.normal(jax.random.key(seed + t), shape)) for t in range(steps)]


def run(tx, w, gs):
    """Matrix updates of ``tx`` on the one-leaf tree ``{"w": {"kernel": w}}``."""
    params = {"w": {"kernel": jnp.asarray(w)}}
    state, out = tx.init(params), []
    for g in gs:
        u, state = tx.update({"w": {"kernel": jnp.asarray(g)}}, state, params)
        out.append(np.asarray(u["w"]["kernel"]))
    return out, state


def infos_of(w):
    return describe_params({"w": {"kernel": jnp.asarray(w)}})


# ---------------------------------------------------------------------------- NorMuon


def normuon_by_hand(w, gs, *, beta=0.95, beta2=0.95, eps=1e-10, axis="fan_out",
                    scale="moonlight", wd=0.1):
    """arXiv 2510.05491 with the authors' Nesterov momentum; ``w (fan_in, fan_out)``."""
    fi, fo = w.shape
    keep = 1 if axis == "fan_out" else 0  # numpy axis kept (one v per neuron on it)
    m, v, out = np.zeros_like(w), 0.0, []
    for g in gs:
        m = beta * m + (1 - beta) * g
        o = ns(beta * m + (1 - beta) * g)
        v = beta2 * v + (1 - beta2) * np.mean(o ** 2, axis=1 - keep, keepdims=True)
        ohat = o / (np.sqrt(v) + eps)
        if scale == "moonlight":
            d = 0.2 * np.sqrt(fi * fo) * ohat / np.linalg.norm(ohat)
        else:
            d = np.sqrt(max(1.0, fo / fi)) * np.linalg.norm(o) * ohat / np.linalg.norm(ohat)
        out.append(-LR * (d + wd * w))
    return out


@pytest.mark.parametrize("shape", [(24, 40), (40, 24)])
@pytest.mark.parametrize("kw", [{}, {"v_axis": "fan_in"}, {"update_scale": "keller"}])
def test_normuon_matches_hand_computed(shape, kw):
    w = np.asarray(jax.random.normal(jax.random.key(7), shape))
    gs = grads(shape, 3)
    got, state = run(normuon(LR, infos_of(w), **kw), w, gs)
    ref = normuon_by_hand(w, gs, axis=kw.get("v_axis", "fan_out"),
                          scale=kw.get("update_scale", "moonlight"))
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-7)
    v = state.inner_states["muon"].inner_state[0].v[0]
    assert v.shape == (1, shape[1] if kw.get("v_axis", "fan_out") == "fan_out" else shape[0])


def test_normuon_equalises_neuron_norms():
    """The point of the method: after normalisation every output neuron (column of a
    ``(fan_in, fan_out)`` kernel) of the first update has the same norm, while Muon's
    orthogonalised update of a rank-deficient gradient leaves them uneven."""
    w = np.zeros((32, 48), np.float32)
    g = np.asarray(jax.random.normal(jax.random.key(1), (32, 4)) @
                   jax.random.normal(jax.random.key(2), (4, 48)))
    (u,), _ = run(normuon(LR, infos_of(w), weight_decay=0.0), w, [g])
    cols = np.linalg.norm(u, axis=0)
    assert cols.max() / cols.min() < 1.001
    muon_cols = np.linalg.norm(ns(g), axis=0)
    assert muon_cols.max() / muon_cols.min() > 1.5
    np.testing.assert_allclose(np.sqrt(np.mean(u ** 2)), 0.2 * LR, rtol=1e-4)


# ---------------------------------------------------------------------------- AdaMuon


def adamuon_by_hand(w, gs, *, beta=0.95, beta2=None, sign=True, eps=1e-8, wd=0.1):
    """arXiv 2507.11005 Algorithm 1 (v2/v3) with the authors' Nesterov EMA momentum."""
    beta2 = beta if beta2 is None else beta2
    m, v, out = np.zeros_like(w), 0.0, []
    for g in gs:
        m = beta * m + (1 - beta) * g
        u = beta * m + (1 - beta) * g
        o = ns(np.sign(u) if sign else u)
        v = beta2 * v + (1 - beta2) * o * o
        ohat = o / (np.sqrt(v) + eps)
        gamma = 0.2 * np.sqrt(w.size) / (np.linalg.norm(ohat) + eps)
        out.append(-LR * (gamma * ohat + wd * w))
    return out


@pytest.mark.parametrize("kw", [{}, {"sign": False, "beta2": 0.999}])
def test_adamuon_matches_hand_computed(kw):
    w = np.asarray(jax.random.normal(jax.random.key(3), (24, 40)))
    gs = grads((24, 40), 3, seed=5)
    got, _ = run(adamuon(LR, infos_of(w), **kw), w, gs)
    for a, b in zip(got, adamuon_by_hand(w, gs, **kw)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-7)


def test_adamuon_first_step_is_elementwise_sign_times_rms():
    """At step 1, ``V = (1 - beta) O^2``, so ``Ohat = O / (sqrt(1 - beta) |O| + eps)`` is a
    sign matrix up to eps: the update is ``0.2 * sign(O)`` exactly in RMS and sign."""
    w = np.zeros((16, 24), np.float32)
    g = grads((16, 24), 1, seed=9)[0]
    (u,), _ = run(adamuon(LR, infos_of(w), weight_decay=0.0), w, [g])
    o = ns(np.sign(g))
    np.testing.assert_allclose(u, -LR * 0.2 * np.sign(o), rtol=1e-4, atol=1e-9)


# ---------------------------------------------------------------------------- Dion


def dion_by_hand(w, gs, q0, *, mu=0.95, eps=1e-8, wd=0.01):
    """arXiv 2504.05295 Algorithm 1 (microsoft/dion reference): ``w (fan_in, fan_out)``,
    taken long side first; ``q0 (n, r)`` the initial right factor."""
    fi, fo = w.shape
    flip = fi < fo
    m, q, out = np.zeros_like(w.T if flip else w), q0.astype(np.float64), []
    for g in gs:
        b = m + (g.T if flip else g)
        p, _ = np.linalg.qr(b @ q)
        r = b.T @ p
        m = b - (1 - mu) * p @ r.T
        q = r / (np.linalg.norm(r, axis=0, keepdims=True) + eps)
        o = p @ q.T
        out.append(-LR * (np.sqrt(fo / fi) * (o.T if flip else o) + wd * w))
    return out


def dion_q0(state):
    return np.asarray(state.inner_states["muon"].inner_state[0].q[0][0])


@pytest.mark.parametrize("shape", [(40, 24), (24, 40)])
@pytest.mark.parametrize("rank_fraction", [1.0, 0.25])
@pytest.mark.parametrize("qr", ["householder", "gram_schmidt"])
def test_dion_matches_hand_computed(shape, rank_fraction, qr):
    w = np.asarray(jax.random.normal(jax.random.key(4), shape))
    gs = grads(shape, 4, seed=11)
    tx = dion(LR, infos_of(w), rank_fraction=rank_fraction, qr=qr)
    q0 = dion_q0(tx.init({"w": {"kernel": jnp.asarray(w)}}))
    assert q0.shape == (24, dion_rank(ParamInfo("w", "matrix", shape), rank_fraction))
    got, _ = run(tx, w, gs)
    for a, b in zip(got, dion_by_hand(w, gs, q0)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-7)


def test_gram_schmidt_qr_is_householder_up_to_column_signs():
    """CGS2 on a stack (including an ill-conditioned matrix, cond 1e4): orthonormal
    columns, the same factor as LAPACK's QR up to one sign per column, and Q R = X; a zero
    column (the joint QR's padding) stays zero."""
    x = np.array(jax.random.normal(jax.random.key(0), (3, 40, 12)))
    u, _, vt = np.linalg.svd(x[2], full_matrices=False)
    x[2] = (u * np.logspace(0, -4, 12)) @ vt
    q = np.asarray(gram_schmidt_qr(jnp.asarray(x)))
    ref = np.asarray(jnp.linalg.qr(jnp.asarray(x))[0])
    for k in range(3):
        np.testing.assert_allclose(q[k].T @ q[k], np.eye(12), atol=2e-6)
        signs = np.sign(np.sum(q[k] * ref[k], axis=0))
        np.testing.assert_allclose(q[k], ref[k] * signs, atol=2e-4 if k == 2 else 2e-6)
        r = q[k].T @ x[k]
        np.testing.assert_allclose(np.triu(r), r, atol=1e-5 * np.abs(r).max())
        np.testing.assert_allclose(q[k] @ r, x[k], atol=1e-5)
    padded = np.concatenate([x[0], np.zeros((40, 3), np.float32)], axis=1)[None]
    got = np.asarray(gram_schmidt_qr(jnp.asarray(padded)))
    np.testing.assert_array_equal(got[0, :, 12:], 0.0)
    np.testing.assert_allclose(got[0, :, :12], q[0], atol=1e-6)
    # the joint call's padding changes nothing (well-conditioned stacks: with cond 1e4 the
    # different matmul shapes' rounding grows to ~1e-6 in the last columns)
    a, b = joint_qr([jnp.asarray(x[:1]), jnp.asarray(x[1:2, :30, :7])], method="gram_schmidt")
    np.testing.assert_allclose(np.asarray(a), q[:1], atol=1e-6)
    np.testing.assert_allclose(np.asarray(b), np.asarray(gram_schmidt_qr(x[1:2, :30, :7])),
                               atol=1e-6)


def test_dion_low_rank_update_and_error_feedback():
    """Rank 6 of 24: each update has rank 6; what it did not carry stays in the momentum
    (``M = B - (1 - mu) P R^T``), so after a step the momentum keeps all of ``G``'s
    component outside the update's column space."""
    w = np.zeros((40, 24), np.float32)
    g = grads((40, 24), 1, seed=2)[0]
    tx = dion(LR, infos_of(w), rank_fraction=0.25, weight_decay=0.0)
    (u,), state = run(tx, w, [g])
    assert np.linalg.matrix_rank(u, tol=1e-6 * np.abs(u).max()) == 6
    mom = np.asarray(state.inner_states["muon"].inner_state[0].mu["w"]["kernel"])
    p, _ = np.linalg.qr(u)  # the update's column space (rank 6: its first 6 columns)
    p = p[:, :6]
    outside = g - p @ (p.T @ g)
    np.testing.assert_allclose(mom - p @ (p.T @ mom), outside, rtol=1e-4, atol=1e-5)


def test_dion_full_rank_momentum_is_plain_and_update_orthogonal():
    """Full rank: ``P P^T B = B``, so the error feedback leaves ``M = mu B``; on a fixed
    gradient the warm start is subspace iteration, so ``P Q^T`` converges to the polar
    factor of ``B`` (measured: max |sigma - 1| 0.92, 0.13, 0.015, 1e-4 after 1, 6, 31,
    100 steps)."""
    w = np.zeros((24, 24), np.float32)
    g = grads((24, 24), 1, seed=3)[0]
    tx = dion(LR, infos_of(w), weight_decay=0.0)
    ups, state = run(tx, w, [g] * 100)
    mom = np.asarray(state.inner_states["muon"].inner_state[0].mu["w"]["kernel"])
    b = sum(0.95 ** k * g for k in range(100))  # B_100 = G (1 + mu + ... + mu^99)
    np.testing.assert_allclose(mom, 0.95 * b, rtol=1e-4)
    err = [np.abs(np.linalg.svd(u / -LR, compute_uv=False) - 1).max() for u in ups]
    assert err[0] > 0.5 and err[30] < err[5] / 4 and err[99] < 1e-3, err


def test_dion_zero_gradient_keeps_q_and_gives_zero_update():
    w = np.ones((16, 8), np.float32)
    tx = dion(LR, infos_of(w), weight_decay=0.0)
    params = {"w": {"kernel": jnp.asarray(w)}}
    state = tx.init(params)
    u, new = tx.update({"w": {"kernel": jnp.zeros((16, 8))}}, state, params)
    np.testing.assert_array_equal(np.asarray(u["w"]["kernel"]), 0.0)
    np.testing.assert_allclose(
        np.asarray(new.inner_states["muon"].inner_state[0].q[0]),
        np.asarray(state.inner_states["muon"].inner_state[0].q[0]) /
        np.linalg.norm(np.asarray(state.inner_states["muon"].inner_state[0].q[0]), axis=1,
                       keepdims=True), rtol=1e-5)


# ---------------------------------------------------------------------------- all three

FAMILY = {
    "normuon": lambda infos: normuon(LR, infos),
    "adamuon": lambda infos: adamuon(LR, infos),
    "dion": lambda infos: dion(LR, infos, rank_fraction=0.5),
}


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_stacked_and_expert_weights_equal_per_matrix(name):
    """A ``(L, E, in, out)`` leaf under ``blocks/experts`` gets the update of its ``L E``
    matrices as separate 2-D leaves (and so does a ``(L, in, out)`` leaf)."""
    L, E, fi, fo = 2, 3, 16, 24
    w = np.asarray(jax.random.normal(jax.random.key(0), (L, E, fi, fo)))
    v = np.asarray(jax.random.normal(jax.random.key(1), (L, fi, fo)))
    stacked = {"blocks": {"experts": {"w": jnp.asarray(w)}, "mlp": {"kernel": jnp.asarray(v)}}}
    separate = {**{f"e{l}_{e}": {"kernel": jnp.asarray(w[l, e])}
                   for l in range(L) for e in range(E)},
                **{f"m{l}": {"kernel": jnp.asarray(v[l])} for l in range(L)}}
    info_s, info_p = describe_params(stacked), describe_params(separate)
    assert info_s["blocks"]["experts"]["w"].num_matrices == L * E
    tx_s, tx_p = FAMILY[name](info_s), FAMILY[name](info_p)
    s_s, s_p = tx_s.init(stacked), tx_p.init(separate)
    if name == "dion":  # the same initial right factors, matrix by matrix
        qs = s_s.inner_states["muon"].inner_state[0].q
        inner = s_p.inner_states["muon"].inner_state[0]
        order = sorted(separate)  # leaf order of the separate tree
        q_sep = {k: (qs[0][int(k[1]) * E + int(k[3])] if k[0] == "e" else qs[1][int(k[1])])
                 for k in order}
        inner = inner._replace(q=tuple(q_sep[k][None] for k in order))
        s_p = s_p._replace(inner_states={**s_p.inner_states, "muon": s_p.inner_states[
            "muon"]._replace(inner_state=(inner, *s_p.inner_states["muon"].inner_state[1:]))})
    for t in range(3):
        gw = jax.random.normal(jax.random.key(10 + t), w.shape)
        gv = jax.random.normal(jax.random.key(20 + t), v.shape)
        u_s, s_s = tx_s.update({"blocks": {"experts": {"w": gw}, "mlp": {"kernel": gv}}},
                               s_s, stacked)
        g_p = {**{f"e{l}_{e}": {"kernel": gw[l, e]} for l in range(L) for e in range(E)},
               **{f"m{l}": {"kernel": gv[l]} for l in range(L)}}
        u_p, s_p = tx_p.update(g_p, s_p, separate)
        for l in range(L):
            np.testing.assert_allclose(u_s["blocks"]["mlp"]["kernel"][l],
                                       u_p[f"m{l}"]["kernel"], rtol=1e-4, atol=1e-7)
            for e in range(E):
                np.testing.assert_allclose(u_s["blocks"]["experts"]["w"][l, e],
                                           u_p[f"e{l}_{e}"]["kernel"], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("fn, kwargs, match", [
    (normuon, {"beta2": 1.0}, r"beta2 = 1.0 is outside \[0, 1\)"),
    (normuon, {"v_axis": "rows"}, "unknown v_axis 'rows'"),
    (normuon, {"update_scale": "dion"}, "unknown update_scale 'dion'"),
    (normuon, {"eps": 0.0}, r"eps = 0.0 is outside \(0, inf\)"),
    (adamuon, {"beta": -0.1}, r"beta = -0.1 is outside \[0, 1\)"),
    (adamuon, {"weight_decay": -1.0}, r"weight_decay = -1.0 is outside"),
    (dion, {"rank_fraction": 0.0}, r"rank_fraction = 0.0 is outside \(0, 1\]"),
    (dion, {"rank_fraction": 1.5}, r"rank_fraction = 1.5 is outside"),
    (dion, {"power_iters": 0}, "power_iters must be an integer >= 1"),
    (dion, {"mu": 1.0}, r"mu = 1.0 is outside \[0, 1\)"),
    (dion, {"update_scale": "keller2"}, "unknown update_scale 'keller2'"),
    (dion, {"qr": "cholesky"}, "unknown qr 'cholesky'"),
])
@pytest.mark.parametrize("labelled", [False, True])
def test_nonsense_is_refused_at_construction(fn, kwargs, match, labelled):
    infos = infos_of(np.ones((8, 8), np.float32)) if labelled else None
    with pytest.raises(ValueError, match=match):
        fn(LR, infos, **kwargs)


@pytest.mark.parametrize("fn", [normuon, adamuon, dion])
def test_learning_rate_nan_refused(fn):
    with pytest.raises(ValueError, match="learning_rate must be a number, got nan"):
        fn(float("nan"), None)
