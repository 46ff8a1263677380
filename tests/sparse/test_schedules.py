"""Cubic and geometric schedules against their formulas; compute-fraction schedules."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab.partition import describe_params
from jaxlab.sparse import (
    PruneSpec,
    PruningSchedule,
    compute_fractions_to_steps,
    equal_compute_steps,
    plan_leaves,
    planned_nonzeros,
    prune,
    sparsity_diagnostics,
)


@pytest.mark.parametrize("xp", [np, jnp])
def test_cubic_matches_zhu_gupta(xp):
    s = PruningSchedule("cubic", start=10, end=50, frequency=10)
    d_f = 0.2  # final sparsity 0.8
    for t, last_event in [(0, None), (9, None), (10, 10), (19, 10), (30, 30), (45, 40), (50, 50), (99, 50)]:
        got = float(s.density(xp.asarray(t), d_f))
        want = 1.0 if last_event is None else 1 - 0.8 * (1 - (1 - (last_event - 10) / 40) ** 3)
        assert got == pytest.approx(want, rel=1e-6), t
    events = [t for t in range(100) if bool(s.is_event(t))]
    assert events == [10, 20, 30, 40, 50]


def test_cubic_end_off_grid_and_initial_sparsity():
    s = PruningSchedule("cubic", start=0, end=25, frequency=10, initial_sparsity=0.1)
    assert [t for t in range(40) if s.is_event(t)] == [0, 10, 20, 25]
    assert s.density(0, 0.5) == pytest.approx(0.9)   # s_i = 0.1
    assert s.density(25, 0.5) == pytest.approx(0.5)


@pytest.mark.parametrize("xp", [np, jnp])
def test_geometric_constant_fraction_of_remaining(xp):
    s = PruningSchedule("geometric", start=10, end=50, frequency=10)
    assert s.num_events == 5
    d_f = 0.1
    for t, k in [(10, 0), (19, 0), (20, 1), (40, 3), (50, 4), (80, 4)]:
        assert float(s.density(xp.asarray(t), d_f)) == pytest.approx(d_f ** ((k + 1) / 5), rel=1e-6)
    ratios = [s.density(10 * (k + 2), d_f) / s.density(10 * (k + 1), d_f) for k in range(4)]
    np.testing.assert_allclose(ratios, ratios[0])  # same fraction of the remaining each time
    assert float(s.density(xp.asarray(5), d_f)) == 1.0


def test_kept_counts_end_exact():
    s = PruningSchedule("geometric", start=0, end=30, frequency=10)
    kept = s.kept(np.arange(40)[:, None], 1000, np.array([[123]]))
    assert kept[0, 0] == round(1000 * 0.123 ** 0.25)
    assert np.all(kept[30:] == 123)


def _toy_infos():
    return describe_params({"w": jnp.zeros((8, 8))})


def test_compute_fraction_oneshot_hand_computed():
    # Dense 64 params, one-shot to 50% at compute fraction 0.5 of a 1200-step run:
    # t N0 = 0.5 (t N0 + (T - t) N0 / 2)  ->  t = c T / (2 - c) = 400.
    infos = _toy_infos()
    plans = plan_leaves(infos, PruneSpec(sparsity=0.5))
    sched = compute_fractions_to_steps(infos, plans, "oneshot", 0.5, 0.5, 1, 1200)
    assert sched.start == 400
    n = planned_nonzeros(infos, plans, sched, 1200)
    assert n[399] == 64 and n[400] == 32
    assert n[:400].sum() * 2 == n.sum()


@pytest.mark.parametrize("kind", ["cubic", "geometric"])
def test_compute_fractions_25_75(kind):
    params = {"w": jnp.zeros((16, 16)), "norm": jnp.zeros((16,))}
    infos = describe_params(params)
    plans = plan_leaves(infos, PruneSpec(sparsity=0.8))
    T = 400
    sched = compute_fractions_to_steps(infos, plans, kind, 0.25, 0.75, 10, T)
    n = planned_nonzeros(infos, plans, sched, T)
    c = np.concatenate([[0], np.cumsum(n)])
    step_share = n.max() / c[-1]  # one step's compute, as a fraction
    assert abs(c[sched.start] / c[-1] - 0.25) <= step_share
    assert abs(c[sched.end] / c[-1] - 0.75) <= step_share
    # a dense step costs more than a sparse one: 25% of compute comes before 25% of steps
    assert sched.start < 0.25 * T and sched.end < 0.75 * T
    assert n[sched.start - 1] == n[0] and n[sched.last_event] == n[-1] < n[0]


def test_equal_compute_steps_oneshot_hand_computed():
    # One-shot at 25% of compute: 0.25 C at density 1, then 0.75 C at density 1 - S, with
    # C = 300 dense steps: T = 75 + 225 / (1 - S).
    assert equal_compute_steps(300, 0.5, "oneshot") == 75 + 450
    assert equal_compute_steps(300, 0.75, "oneshot") == 75 + 900
    assert equal_compute_steps(300, 0.0, "geometric") == 300


@pytest.mark.parametrize("kind", ["oneshot", "cubic", "geometric"])
def test_equal_compute_steps_spend_the_dense_runs_compute(kind):
    """The schedule the trainer builds for the returned T (a model that is all pruned
    matrix) spends the dense run's compute to within one dense step; T - 1 steps spend
    less than it."""
    params = {"w": jnp.zeros((32, 32))}
    infos = describe_params(params)
    plans = plan_leaves(infos, PruneSpec(sparsity=0.75))
    dense_steps, freq = 400, 10
    T = equal_compute_steps(dense_steps, 0.75, kind, 0.25, 0.75, freq)
    assert dense_steps < T < dense_steps / 0.25

    def compute(steps):
        sched = compute_fractions_to_steps(infos, plans, kind, 0.25, 0.75, freq, steps)
        return planned_nonzeros(infos, plans, sched, steps).sum()

    assert 0 <= compute(T) - dense_steps * 32 * 32 <= 32 * 32
    assert compute(T - 1) < dense_steps * 32 * 32
    assert equal_compute_steps(dense_steps, 0.75, kind, 0.25, 0.75, freq) == T


def test_run_density_starts_and_ends_at_planned_steps():
    """The wrapper's logged non-zeros follow the planned trajectory step by step."""
    params = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(16, 16)), jnp.float32),
              "norm": jnp.ones((16,))}
    infos = describe_params(params)
    spec0 = PruneSpec(sparsity=0.8)
    plans = plan_leaves(infos, spec0)
    T = 120
    sched = compute_fractions_to_steps(infos, plans, "geometric", 0.25, 0.75, 10, T)
    tx = prune(optax.adam(1e-2), infos, PruneSpec(sparsity=0.8, schedule=sched), plans)
    diag = sparsity_diagnostics(infos, plans, 0.8)

    @jax.jit
    def step(p, s):
        g = jax.tree.map(jnp.ones_like, p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, diag(s)["sparse/nonzero_non_embedding"]

    state, p, logged = tx.init(params), params, []
    for _ in range(T):
        p, state, nnz = step(p, state)
        logged.append(int(nnz))
    np.testing.assert_array_equal(logged, planned_nonzeros(infos, plans, sched, T))
    first_change = int(np.argmax(np.asarray(logged) < 16 * 16 + 16))
    assert first_change == sched.start
    assert logged[sched.last_event] == round(0.2 * 256) + 16
