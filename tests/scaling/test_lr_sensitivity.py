"""Stable basin on an lr grid and loss spikes, against hand-computed cases."""

import math

import numpy as np
import pytest

from jaxlab.scaling.lr_sensitivity import loss_spikes, stable_basin

LRS = [1e-3, 1e-2, 1e-1, 1.0]   # one decade apart: log10 = -3, -2, -1, 0


def test_basin_edges_are_interpolated_in_log_lr():
    # best 1.0 at 1e-2; threshold 1.05. Left: 1.05 lies 0.05/0.15 of the way from 1e-2
    # (1.0) to 1e-3 (1.15); right: 0.05/0.10 of the way from 1e-2 to 1e-1 (1.10).
    b = stable_basin(LRS, [1.15, 1.0, 1.10, 2.0], tolerance=0.05)
    assert b.best_lr == pytest.approx(1e-2) and b.best_loss == 1.0
    assert math.log10(b.lo) == pytest.approx(-2 - 1 / 3)
    assert math.log10(b.hi) == pytest.approx(-1.5)
    assert b.width_decades == pytest.approx(1 / 3 + 0.5)
    assert not (b.open_lo or b.open_hi)
    assert b.describe().startswith("0.83 decades")


def test_points_inside_the_tolerance_extend_the_basin_and_grid_ends_are_open():
    b = stable_basin(LRS, [1.02, 1.0, 1.04, 1.5], tolerance=0.05)
    assert b.lo == pytest.approx(1e-3) and b.open_lo and not b.open_hi
    # right edge between 1e-1 (1.04) and 1.0 (1.5): 0.01 / 0.46 of a decade past -1
    assert math.log10(b.hi) == pytest.approx(-1 + 0.01 / 0.46)
    assert b.describe().startswith(">= ")


def test_diverged_neighbours_cut_the_basin_at_the_last_finite_point():
    b = stable_basin(LRS, [np.nan, 1.0, 1.01, np.inf], tolerance=0.05)
    assert b.lo == pytest.approx(1e-2) and b.hi == pytest.approx(1e-1)
    assert b.width_decades == pytest.approx(1.0)


def test_only_the_stretch_around_the_best_point_counts_and_order_does_not_matter():
    # a second dip at 1.0 is separated from the best by a bad point
    b = stable_basin(LRS[::-1], [1.01, 2.0, 1.0, 1.3][::-1], tolerance=0.05)
    assert b.best_lr == pytest.approx(1e-1)
    assert b.hi < 1.0 and b.lo > 1e-2


def test_higher_is_better_metrics_pass_their_negative():
    acc = np.array([0.90, 0.97, 0.965, 0.80])
    b = stable_basin(LRS, -acc, tolerance=0.01)   # within 1 accuracy point of 97%
    assert b.best_lr == pytest.approx(1e-2)
    # 96.5% at 1e-1 is inside; right edge 0.005/0.165 of a decade past it, left edge
    # 0.01/0.07 of a decade below 1e-2
    assert math.log10(b.hi) == pytest.approx(-1 + 0.005 / 0.165)
    assert math.log10(b.lo) == pytest.approx(-2 - 0.01 / 0.07)


@pytest.mark.parametrize("lrs,losses,match", [
    ([1e-3, 1e-2], [1.0], "one equal, non-zero length"),
    ([0.0, 1e-2], [1.0, 1.0], "must be > 0"),
    ([1e-3, 1e-2], [np.nan, np.inf], "every run of this arm diverged"),
])
def test_bad_input_is_a_clear_error(lrs, losses, match):
    with pytest.raises(ValueError, match=match):
        stable_basin(lrs, losses)


def test_loss_spikes_flag_rises_above_the_jump():
    y = [5.0, 4.0, 3.0, 3.2, 3.1, 3.14, 2.0, np.nan]
    np.testing.assert_array_equal(loss_spikes(y, jump=0.05),
                                  [False, False, False, True, False, False, False, True])
