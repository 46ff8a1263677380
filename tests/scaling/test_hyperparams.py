"""Hyperparameter laws: hand-computed values, range and unit errors, UNVERIFIED flags."""

import dataclasses
import math

import pytest

from jaxlab.scaling import hyperparams as hp
from jaxlab.scaling.hyperparams import Quantity


def test_timescale_hand_computed():
    # lr 1e-3, wd 0.1: tau_iter = 1e4 steps; B = 2^19 tokens, D = 1e10: S = 19073.49 steps.
    tau = hp.adamw_timescale(lr=1e-3, wd=0.1, batch_tokens=2**19, total_tokens=1e10)
    assert tau == pytest.approx(1e4 / (1e10 / 2**19), rel=1e-12)
    assert tau == pytest.approx(0.524288, rel=1e-12)
    # Same run with the batch given as 256 sequences of 2048 tokens.
    seqs = Quantity(256, "sequences", seq_len=2048)
    assert hp.adamw_timescale(1e-3, 0.1, seqs, 1e10) == pytest.approx(0.524288, rel=1e-12)
    assert hp.weight_decay_for_timescale(0.524288, 1e-3, 2**19, 1e10) == pytest.approx(0.1)


@pytest.mark.parametrize("tpp, quoted", [(20, 0.224), (100, 0.096)])
def test_tau_opt_matches_quoted_within_one_percent(tpp, quoted):
    assert hp.POWER_LINES_TAU_OPT(tpp) == pytest.approx(quoted, rel=0.01)
    assert hp.optimal_timescale(1e8, tpp * 1e8) == pytest.approx(1.084 * tpp ** -0.527, rel=1e-12)


def test_tau_opt_at_tpp_1000():
    """1.084 * 1000^-0.527 = 0.02845: equal to the quoted 0.028 at its two significant
    figures (the rounding alone is 1.6%, so a 1% band around 0.028 cannot hold)."""
    tau = hp.POWER_LINES_TAU_OPT(1000)
    assert tau == pytest.approx(0.0284465, rel=1e-5)
    assert round(tau, 3) == 0.028


def test_implied_weight_decay_for_a_concrete_run():
    # N = 1e8, D = 2e9 (TPP 20), B = 2^19 tokens, lr = 1e-3:
    # tau_opt = 1.084 * 20^-0.527 = 0.223556; wd = 524288 / (1e-3 * 2e9 * 0.223556) = 1.17261.
    wd = hp.optimal_weight_decay(n_params=1e8, total_tokens=2e9, batch_tokens=2**19, lr=1e-3)
    assert wd == pytest.approx(1.17261, rel=1e-5)
    # At fixed N, D, wd_opt is linear in B (constant tau).
    assert hp.optimal_weight_decay(1e8, 2e9, 2**20, 1e-3) == pytest.approx(2 * wd, rel=1e-12)
    # And the implied timescale is tau_opt.
    assert hp.adamw_timescale(1e-3, wd, 2**19, 2e9) == pytest.approx(0.223556, rel=1e-5)


def test_optimal_batch_size():
    # 0.0306 * (1e8)^0.383 = 35.46 sequences of 2048 tokens = 72.6K tokens.
    assert hp.optimal_batch_size(1e8) == pytest.approx(72619.2, rel=1e-5)
    assert hp.POWER_LINES_B_OPT.output_unit == "sequences"


def test_unit_mismatches_raise():
    with pytest.raises(ValueError, match="needs seq_len"):
        hp.adamw_timescale(1e-3, 0.1, Quantity(256, "sequences"), 1e10)
    with pytest.raises(ValueError, match="total_tokens is in 'params' but must be in 'tokens'"):
        hp.adamw_timescale(1e-3, 0.1, 2**19, Quantity(1e10, "params"))
    with pytest.raises(ValueError, match="n_params is in 'tokens' but must be in 'params'"):
        hp.optimal_weight_decay(Quantity(1e8, "tokens"), 2e9, 2**19, 1e-3)
    with pytest.raises(ValueError, match="are B and D in the same unit"):
        hp.adamw_timescale(1e-3, 0.1, batch_tokens=2e9, total_tokens=1e5)
    with pytest.raises(ValueError, match="loss is in 'tokens' but must be in 'nats'"):
        hp.KAPLAN_B_CRIT(Quantity(3.0, "tokens"))
    with pytest.raises(ValueError, match="unknown unit 'bits'"):
        Quantity(3.0, "bits")


def test_out_of_range_raises_and_extrapolation_is_explicit():
    with pytest.raises(ValueError, match=r"tpp=2e\+04 tokens/param is outside the fitted range"):
        hp.POWER_LINES_TAU_OPT(2e4)
    with pytest.raises(ValueError, match="outside the fitted range"):
        hp.optimal_batch_size(1e5)
    assert hp.POWER_LINES_TAU_OPT(2e4, allow_extrapolation=True) == pytest.approx(
        1.084 * 2e4 ** -0.527)
    with pytest.raises(ValueError, match="lr must be > 0, got -0.001"):
        hp.adamw_timescale(-1e-3, 0.1, 2**19, 1e10)
    with pytest.raises(ValueError, match="outside the fitted range"):
        hp.KAPLAN_LR(1e12)


def test_unverified_constants_are_flagged():
    for law in (hp.POWER_LINES_TAU_OPT, hp.POWER_LINES_B_OPT, hp.POWER_LINES_B_CRIT,
                hp.KAPLAN_B_CRIT, hp.KAPLAN_LR):
        assert law.verified is False and "UNVERIFIED" in law.note, law.name
        assert law.source.startswith("arXiv:")
    assert hp.ADAMW_TIMESCALE.verified is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        hp.POWER_LINES_TAU_OPT.coefficient = 2.0  # laws are frozen data


def test_critical_batch_laws():
    # B_crit has no coefficient: only ratios. Exponent 0.465: 10x data -> 10^0.465 = 2.917x.
    with pytest.raises(ValueError, match="no known coefficient"):
        hp.POWER_LINES_B_CRIT(1e9)
    assert hp.scale_critical_batch(2**18, 1e9, 1e10) == pytest.approx(2**18 * 10 ** 0.465)
    # Kaplan: B_crit(L) = 2e8 / L^(1/0.21); at L = 3 nats: 2e8 / 3^4.7619 = 1.069e6 tokens.
    assert hp.KAPLAN_B_CRIT(3.0) == pytest.approx(2e8 / 3.0 ** (1 / 0.21), rel=1e-12)
    assert hp.KAPLAN_B_CRIT(3.0) == pytest.approx(1.0691e6, rel=1e-4)
    # Kaplan lr: 0.003239 - 0.0001395 ln(1e8) = 6.693e-4.
    assert hp.KAPLAN_LR(1e8) == pytest.approx(0.003239 - 0.0001395 * math.log(1e8))
    # McCandlish: S = S_min (1 + B_crit / B).
    assert hp.steps_for_batch(2**18, min_steps=1000, b_crit=2**20) == pytest.approx(5000)


def test_law_call_checks_argument_names():
    with pytest.raises(TypeError, match="missing"):
        hp.ADAMW_TIMESCALE(2**19, 1e-3)
    assert set(hp.LAWS) >= {"power_lines_tau_opt", "kaplan_lr", "adamw_timescale"}
