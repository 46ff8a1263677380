"""Optimizer speed-ups from fitted laws: compute ratio at equal loss, effective data.

* Compute ratio (Moonlight arXiv 2502.16982): with L_a(C) and L_b(C) fitted per
  optimizer, C_a(L) / C_b(L) at a loss both reach; < 1 means optimizer a needs less.
* Effective-data speed-up (Marin arXiv 2509.02046): fit the baseline's L(D) at one model
  size; an optimizer run reaching loss L with D tokens has D_eff = D_baseline(L), and
  speed-up D_eff / D (> 1 means faster than the baseline).
"""
from __future__ import annotations

import numpy as np

from jaxlab.scaling.checks import positive_array
from jaxlab.scaling.power_law_fit import PowerLawFit

__all__ = ["compute_ratio_at_equal_loss", "effective_data_speedup"]


def _law(fit):
    return fit.law if isinstance(fit, PowerLawFit) else fit


def compute_ratio_at_equal_loss(fit_a, fit_b, loss) -> np.ndarray:
    """C_a(loss) / C_b(loss) for two fitted L(C) laws (PowerLawFit or SaturatingPowerLaw).

    Raises ValueError if either law never reaches `loss` (loss <= its floor E).
    """
    loss = positive_array("loss", loss)
    return _law(fit_a).x_at(loss) / _law(fit_b).x_at(loss)


def effective_data_speedup(baseline_L_of_D, D, loss) -> np.ndarray:
    """D_eff / D: data the baseline needs for `loss`, over the data the run used.

    Args:
      baseline_L_of_D: the baseline optimizer's fitted L(D) at this model size.
      D, loss: (n,) tokens and final losses of the runs being compared.
    """
    D = positive_array("D", D)
    return _law(baseline_L_of_D).x_at(positive_array("loss", loss)) / D
