"""Chinchilla Approach 1 (Hoffmann et al., arXiv 2203.15556, section 3.1): the envelope
of training curves.

Every run's training loss is a curve against its own compute C_t = flops_per_token x
tokens_t. At each compute C of a log grid, the lowest interpolated loss among the runs
whose curves reach C is the envelope; the model size of that run is N_opt(C). The power
laws N_opt = k C^a and D_opt = C / (6 N_opt) are fitted across the grid points where at
least two model sizes compete (below that the smallest model wins by default).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxlab.scaling.checks import require_points
from jaxlab.scaling.laws import PowerLaw
from jaxlab.scaling.power_law_fit import fit_pure_power_law

__all__ = ["EnvelopeFit", "fit_envelope", "smooth"]


def smooth(loss: np.ndarray, window: int) -> np.ndarray:
    """Centred running mean over ``window`` points (fewer at the ends): no lag on a
    falling curve, unlike a trailing mean."""
    loss = np.asarray(loss, float)
    c = np.cumsum(np.insert(loss, 0, 0.0))
    idx = np.arange(len(loss))
    lo = np.maximum(idx - window // 2, 0)
    hi = np.minimum(idx + window - window // 2, len(loss))
    return (c[hi] - c[lo]) / (hi - lo)


@dataclasses.dataclass(frozen=True)
class EnvelopeFit:
    """The envelope points and the power laws fitted through them."""

    C: np.ndarray          # (g,) grid compute where >= 2 sizes compete
    loss: np.ndarray       # (g,) envelope loss
    N_opt: np.ndarray      # (g,) model size on the envelope
    N_opt_law: PowerLaw
    D_opt_law: PowerLaw

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {"N_opt": {"k": self.N_opt_law.k, "a": self.N_opt_law.a},
                "D_opt": {"k": self.D_opt_law.k, "a": self.D_opt_law.a},
                "points": [{"C": float(c), "loss": float(v), "N_opt": float(n)}
                           for c, v, n in zip(self.C, self.loss, self.N_opt)]}


def fit_envelope(N, curves, *, n_grid: int = 40, window: int = 5,
                 flops_per_param_token: float = 6.0) -> EnvelopeFit:
    """Approach 1 on runs of several model sizes.

    Args:
      N: (r,) model size of each run.
      curves: r pairs ``(C_t, loss_t)`` of 1-D arrays, compute increasing (a run's train
        loss against its FLOPs so far); several runs may share a size.
      n_grid: log-spaced compute points between the smallest and largest compute reached.
      window: running-mean window of the loss before interpolation (noisy train loss).
      flops_per_param_token: D_opt = C / (k N_opt).

    Raises ValueError with fewer than 2 sizes or fewer than 2 competing grid points.
    """
    N = np.asarray(N, float).reshape(-1)
    if len(N) != len(curves):
        raise ValueError(f"{len(N)} sizes but {len(curves)} curves")
    require_points(len(np.unique(N)), 2, "the Approach 1 envelope (distinct model sizes)")
    logc, losses = [], []
    for n, (c, v) in zip(N, curves):
        c, v = np.asarray(c, float), np.asarray(v, float)
        ok = np.isfinite(c) & np.isfinite(v) & (c > 0)
        if ok.sum() < 2:
            raise ValueError(f"the curve of a run with N={n:.4g} has fewer than 2 finite points")
        logc.append(np.log(c[ok]))
        losses.append(smooth(v[ok], window))
    grid = np.linspace(min(x[0] for x in logc), max(x[-1] for x in logc), n_grid)
    Cs, Ls, Ns = [], [], []
    for g in grid:
        covering = [(float(np.interp(g, x, v)), n) for x, v, n in zip(logc, losses, N)
                    if x[0] <= g <= x[-1]]
        if len({n for _, n in covering}) < 2:
            continue
        loss, n = min(covering)
        Cs.append(np.exp(g))
        Ls.append(loss)
        Ns.append(n)
    require_points(len(Cs), 2, "the Approach 1 power law (grid points where 2 sizes compete)")
    Cs, Ls, Ns = np.array(Cs), np.array(Ls), np.array(Ns)
    return EnvelopeFit(
        C=Cs, loss=Ls, N_opt=Ns,
        N_opt_law=fit_pure_power_law(Cs, Ns, x_name="C", y_name="N_opt",
                                     name="envelope_N_opt"),
        D_opt_law=fit_pure_power_law(Cs, Cs / (flops_per_param_token * Ns), x_name="C",
                                     y_name="D_opt", name="envelope_D_opt"))
