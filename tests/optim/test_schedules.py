"""Schedules match their formulas at warmup end, cooldown start, mid-cooldown and end."""

import math

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.optim import schedules
from jaxlab.optim.schedules import make_schedule
from jaxlab.train.gin_setup import optimizer_config

PEAK, TOTAL, WARM = 1e-2, 1000, 100


def lr(s, step):
    return float(s(step))


def test_warmup_is_linear_from_init_fraction():
    s = make_schedule(PEAK, TOTAL, name="constant", warmup_steps=WARM, warmup_init_fraction=0.01)
    assert lr(s, 0) == pytest.approx(PEAK / 100, rel=1e-6)
    assert lr(s, 50) == pytest.approx(PEAK / 100 + (PEAK - PEAK / 100) * 0.5, rel=1e-6)
    assert lr(s, WARM) == pytest.approx(PEAK, rel=1e-6)
    assert lr(s, 10 * TOTAL) == pytest.approx(PEAK, rel=1e-6)


@pytest.mark.parametrize("shape", ["linear", "1-sqrt", "cosine"])
def test_wsd_matches_formula(shape):
    s = make_schedule(PEAK, TOTAL, name="wsd", warmup_steps=WARM, cooldown_fraction=0.2,
                      cooldown_shape=shape)
    start = 800  # (1 - 0.2) * 1000
    formula = {"linear": lambda u: 1 - u, "1-sqrt": lambda u: 1 - math.sqrt(u),
               "cosine": lambda u: 0.5 * (1 + math.cos(math.pi * u))}[shape]
    assert lr(s, WARM) == pytest.approx(PEAK, rel=1e-6)          # warmup end
    assert lr(s, 500) == pytest.approx(PEAK, rel=1e-6)           # stable phase
    assert lr(s, start) == pytest.approx(PEAK, rel=1e-6)         # cooldown start
    for step in (850, 900, 950):
        u = (step - start) / 200
        assert lr(s, step) == pytest.approx(PEAK * formula(u), rel=1e-5), step
    assert lr(s, TOTAL) == pytest.approx(0.0, abs=1e-9)         # end
    assert lr(s, TOTAL + 50) == pytest.approx(0.0, abs=1e-9)


def test_one_minus_sqrt_vs_linear_mid_cooldown():
    """Mid-cooldown (u = 1/2): 1-sqrt gives 1 - 1/sqrt(2) = 0.293 peak, linear 0.5 peak;
    1-sqrt drops faster early and is below linear everywhere inside the cooldown."""
    kw = {"name": "wsd", "warmup_steps": WARM, "cooldown_steps": 200}
    lin = make_schedule(PEAK, TOTAL, cooldown_shape="linear", **kw)
    sq = make_schedule(PEAK, TOTAL, cooldown_shape="1-sqrt", **kw)
    assert lr(lin, 900) == pytest.approx(0.5 * PEAK, rel=1e-6)
    assert lr(sq, 900) == pytest.approx((1 - 1 / math.sqrt(2)) * PEAK, rel=1e-5)
    steps = jnp.arange(801, 1000)
    assert bool(jnp.all(jax.vmap(sq)(steps) < jax.vmap(lin)(steps)))
    assert lr(lin, 800) == lr(sq, 800) == pytest.approx(PEAK)
    assert lr(lin, 1000) == lr(sq, 1000) == 0.0


def test_cosine_and_linear_decay():
    cos = make_schedule(PEAK, TOTAL, name="cosine", warmup_steps=WARM)  # final 10%
    lin = make_schedule(PEAK, TOTAL, name="linear", warmup_steps=WARM)  # final 0
    assert lr(cos, WARM) == pytest.approx(PEAK, rel=1e-6)
    assert lr(cos, 550) == pytest.approx(0.1 * PEAK + 0.9 * PEAK * 0.5, rel=1e-5)
    assert lr(cos, TOTAL) == pytest.approx(0.1 * PEAK, rel=1e-5)
    assert lr(lin, WARM) == pytest.approx(PEAK, rel=1e-6)
    assert lr(lin, 325) == pytest.approx(0.75 * PEAK, rel=1e-5)
    assert lr(lin, TOTAL) == pytest.approx(0.0, abs=1e-9)


def test_warmup_fraction_default_and_jit():
    s = make_schedule(PEAK, TOTAL, name="cosine")  # warmup 5% = 50 steps
    assert lr(s, 50) == pytest.approx(PEAK, rel=1e-6)
    assert lr(s, 25) == pytest.approx(PEAK / 2, rel=1e-6)
    out = jax.jit(s)(jnp.asarray(50, jnp.int32))
    assert out.dtype == jnp.float32 and float(out) == pytest.approx(PEAK, rel=1e-6)


def test_branch_schedule_equals_constant_until_branch_then_cools():
    """A cooldown branched at k = 600 of a 2000-step constant run, trained to k + n = 800."""
    parent = make_schedule(PEAK, 2000, name="constant", warmup_steps=WARM)
    branch = make_schedule(PEAK, 800, name="wsd", warmup_steps=WARM, decay_start_step=600,
                           cooldown_shape="linear")
    steps = np.arange(0, 601)
    np.testing.assert_array_equal(jax.vmap(parent)(steps), jax.vmap(branch)(steps))
    assert lr(branch, 700) == pytest.approx(0.5 * PEAK, rel=1e-6)
    assert lr(branch, 800) == pytest.approx(0.0, abs=1e-9)
    # Equivalent spelling with an explicit cooldown length.
    same = make_schedule(PEAK, 800, name="wsd", warmup_steps=WARM, cooldown_steps=200,
                         cooldown_shape="linear")
    np.testing.assert_array_equal(jax.vmap(branch)(np.arange(900)), jax.vmap(same)(np.arange(900)))


def test_gin_configures_wsd():
    gin.parse_config("""
        make_schedule.name = 'wsd'
        make_schedule.warmup_steps = 10
        make_schedule.cooldown_fraction = 0.5
        make_schedule.cooldown_shape = 'cosine'
    """)
    s = make_schedule(1.0, 100, **optimizer_config().schedule)
    assert lr(s, 50) == pytest.approx(1.0)
    assert lr(s, 75) == pytest.approx(0.5, rel=1e-6)
    assert lr(s, 100) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "wsd", "cooldown_shape": "sqrt"}, "cooldown_shape 'sqrt'"),
    ({"name": "wsd", "cooldown_fraction": 1.5}, r"cooldown_fraction must be in \[0, 1\], got 1.5"),
    ({"name": "wsd", "decay_start_step": 5000}, "decay_start_step=5000"),
    ({"name": "wsd", "decay_start_step": 600, "cooldown_steps": 100}, "must equal total_steps=1000"),
    ({"name": "cosine", "decay_start_step": 600}, "apply to name='wsd' only"),
    ({"name": "step"}, "unknown schedule 'step'"),
    ({"name": "cosine", "warmup_steps": 1000}, "must exceed warmup_steps=1000"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_schedule(PEAK, TOTAL, **kwargs)


def test_cooldown_factor_rejects_unknown_shape():
    with pytest.raises(ValueError, match="valid"):
        schedules.cooldown_factor(0.5, "exp")
