"""Uniform / ER / ERK densities and exact counts on hand-computed toy trees."""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.partition import describe_params, infos_list
from jaxlab.sparse.distributions import distribute, solve_densities
from jaxlab.sparse.plan import PruneSpec, embedding_sparsity, plan_leaves


def toy():
    # raw ERK densities (fan_in + fan_out) / (fan_in fan_out): a 1.0, b 0.25, c 34/64
    return {"a": jnp.zeros((2, 2)), "b": jnp.zeros((8, 8)), "c": jnp.zeros((2, 32)),
            "norm": jnp.zeros((8,))}


def test_erk_dense_resolve_hand_computed():
    infos = [i for i in infos_list(describe_params(toy())) if i.label == "matrix"]
    dens = solve_densities(infos, 0.5, "erk")
    # Target 66 of 132. First eps = 66 / 54 makes `a` denser than 1 -> dense (4 kept);
    # re-solve on b, c: eps = (66 - 4) / (16 + 34) = 1.24.
    assert dens["a"] == 1.0
    assert dens["b"] == pytest.approx(0.25 * 1.24, abs=1e-12)
    assert dens["c"] == pytest.approx(34 / 64 * 1.24, abs=1e-12)
    counts = distribute(infos, 0.5, "erk")
    # 19.84 and 42.16 real counts: floors 19 + 42 + 4 = 65, one more to b (remainder .84)
    assert {p: c.tolist() for p, c in counts.items()} == {"a": [4], "b": [20], "c": [42]}
    assert sum(int(c.sum()) for c in counts.values()) == 66


def test_er_equals_erk_on_normalised_shapes_and_power_changes_it():
    infos = [i for i in infos_list(describe_params(toy())) if i.label == "matrix"]
    assert solve_densities(infos, 0.7, "er") == solve_densities(infos, 0.7, "erk")
    assert solve_densities(infos, 0.7, "erk", erk_power=0.5) != solve_densities(infos, 0.7, "erk")


def test_stacked_kernel_is_per_matrix_and_exact_global_count():
    # (L=3, D=8, H=2, Dh=4) attention-like kernel: 3 matrices of 8 x 8.
    params = {"blocks": {"q": jnp.zeros((3, 8, 8)), "w": jnp.zeros((3, 8, 24))}}
    infos = infos_list(describe_params(params))
    assert [i.num_matrices for i in infos] == [3, 3]
    counts = distribute(infos, 0.37, "uniform")
    total = 3 * 64 + 3 * 192
    assert sum(int(c.sum()) for c in counts.values()) == round(0.63 * total)
    for i in infos:
        assert np.all(np.abs(counts[i.path] - 0.63 * i.fan_in * i.fan_out) < 1)


def test_custom_and_fixed_per_path():
    infos = [i for i in infos_list(describe_params(toy())) if i.label == "matrix"]
    counts = distribute(infos, 0.5, "custom", per_path={"^b$": 0.75})
    assert counts["b"].tolist() == [16] and counts["c"].tolist() == [32] and counts["a"].tolist() == [2]
    # non-custom: b fixed at 75%, the rest share the pool budget exactly
    counts = distribute(infos, 0.5, "uniform", per_path={"^b$": 0.75})
    assert counts["b"].tolist() == [16]
    assert sum(int(c.sum()) for c in counts.values()) == 66


def test_plan_labels_embeddings_and_vectors():
    params = {"embed": {"embedding": jnp.zeros((64, 16))}, "w": jnp.zeros((16, 16)),
              "norm": jnp.zeros((16,))}
    infos = describe_params(params)
    plans = plan_leaves(infos, PruneSpec(sparsity=0.75))
    assert [p.info.path for p in plans] == ["w"]
    plans = plan_leaves(infos, PruneSpec(sparsity=0.75, embeddings=True))
    emb = [p for p in plans if p.info.label == "embedding"][0]
    assert emb.final_nonzeros == round(64 * 16 * (1 - embedding_sparsity(0.75)))
    assert embedding_sparsity(0.75) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="vector"):
        plan_leaves(infos, PruneSpec(sparsity=0.5, per_path={"norm": 0.5}))
    with pytest.raises(ValueError, match="valid"):
        PruneSpec(distribution="erk2")
