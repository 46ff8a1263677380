"""Scaling laws as data: dense-model laws with `predict`, compute-optimal allocation and
a readable table row.

Laws here (the sparse law of Frantar et al. lives in `sparse_law.py`):
  * `ChinchillaLaw`   L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. arXiv
    2203.15556; refit by Besiroglu et al. arXiv 2404.10102).
  * `KaplanLaw`       L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D (Kaplan
    et al. arXiv 2001.08361, eq. 1.5).
  * `SaturatingPowerLaw`  y = E + A x^-alpha in one variable (compute, data, ...); E = 0 is
    the pure power law (e.g. Moonlight arXiv 2502.16982 fits L = A C^-alpha).
  * `PowerLaw`        y = k x^a, for fitted relations between hyper-parameters (N*(C),
    tau_opt(TPP) of Power Lines arXiv 2505.13738, B_opt(D)).
  * `AverageParamLaw` the Chinchilla law with N replaced by the average non-zero parameter
    count over training, N_bar (Jin et al. arXiv 2501.12486).

Conventions: N is non-embedding parameters, D training tokens, C training FLOPs with
C = 6 N D unless a law says otherwise. All `predict` methods broadcast over numpy arrays.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import optimize

from jaxlab.scaling.checks import positive_array

__all__ = [
    "BESIROGLU_2024",
    "HOFFMANN_2022",
    "KAPLAN_2020",
    "MOONLIGHT_ADAMW",
    "MOONLIGHT_MUON",
    "POWER_LINES_BATCH",
    "POWER_LINES_TAU",
    "AverageParamLaw",
    "ChinchillaLaw",
    "KaplanLaw",
    "PowerLaw",
    "SaturatingPowerLaw",
    "numeric_compute_optimal",
]

FLOPS_PER_PARAM_TOKEN = 6.0


class FittedLaw:
    """Mixin of fit results holding a ``law``: ``fit.E`` reads ``fit.law.E`` (any
    constant or method of the fitted law)."""

    def __getattr__(self, name: str):
        if name == "law" or name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(self.law, name)
        except AttributeError:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}, nor has "
                                 f"its law {type(self.law).__name__}") from None


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def numeric_compute_optimal(
    loss_fn, compute: float, flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN
) -> tuple[float, float]:
    """Minimise `loss_fn(N, D)` along the isoFLOP D = C / (k N) over log N; returns (N*, D*).

    A check on the closed forms and the allocation for laws without one. Searches
    N in [1, C / k] (at least one token, at least one parameter).
    """
    c = float(compute) / flops_per_param_token
    if not c > 1:
        raise ValueError(f"compute must exceed {flops_per_param_token} FLOPs, got {compute!r}")
    f = lambda ln: float(loss_fn(math.exp(ln), c / math.exp(ln)))
    grid = np.linspace(0.0, math.log(c), 401)
    vals = np.array([f(g) for g in grid])
    i = int(np.argmin(vals))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = optimize.minimize_scalar(f, bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-12})
    n = math.exp(res.x)
    return n, c / n


@dataclasses.dataclass(frozen=True)
class ChinchillaLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta (arXiv 2203.15556 eq. 2; 2404.10102).

    N: non-embedding parameters, D: training tokens, both > 0.
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    name: str = "chinchilla"

    param_names = ("E", "A", "B", "alpha", "beta")

    def predict(self, N, D) -> np.ndarray:
        """Loss for parameters N and tokens D (broadcasting arrays)."""
        N = positive_array("N", N)
        D = positive_array("D", D)
        return self.E + self.A * N ** (-self.alpha) + self.B * D ** (-self.beta)

    @property
    def G(self) -> float:
        """G = (alpha A / (beta B))^(1 / (alpha + beta)), the allocation constant."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def compute_optimal(self, C, flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN):
        """Closed-form (N*, D*) minimising L under k N D = C (Hoffmann eq. 4, k = 6).

        N* = G (C / k)^(beta / (alpha + beta)), D* = (C / k) / N*. Broadcasts over C.
        """
        c = positive_array("C", C) / flops_per_param_token
        n_opt = self.G * c ** (self.beta / (self.alpha + self.beta))
        return n_opt, c / n_opt

    def frontier(self, C, flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN) -> np.ndarray:
        """Loss at the compute-optimal allocation for budget(s) C."""
        n, d = self.compute_optimal(C, flops_per_param_token)
        return self.predict(n, d)

    def tokens_per_param_optimal(self, C) -> np.ndarray:
        """D*/N* at budget C (about 20 for Hoffmann's constants near 1e23 FLOPs)."""
        n, d = self.compute_optimal(C)
        return d / n

    def table_row(self) -> dict[str, float | str]:
        """One row of a constants table."""
        return {"law": self.name, **{k: getattr(self, k) for k in self.param_names}}

    def __repr__(self) -> str:
        return (
            f"ChinchillaLaw[{self.name}]: L = {_fmt(self.E)} + {_fmt(self.A)} / N^{_fmt(self.alpha)}"
            f" + {_fmt(self.B)} / D^{_fmt(self.beta)}"
        )


HOFFMANN_2022 = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28,
                              name="hoffmann2022")
BESIROGLU_2024 = ChinchillaLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658,
                               name="besiroglu2024")


@dataclasses.dataclass(frozen=True)
class KaplanLaw:
    """L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D (arXiv 2001.08361 eq. 1.5).

    N: non-embedding parameters, D: tokens. Kaplan's constants: alpha_N 0.076, alpha_D
    0.095, N_c 8.8e13, D_c 5.4e13 (loss in nats, WebText2 tokenizer).
    """

    N_c: float
    D_c: float
    alpha_N: float
    alpha_D: float
    name: str = "kaplan"

    param_names = ("N_c", "D_c", "alpha_N", "alpha_D")

    def predict(self, N, D) -> np.ndarray:
        """Loss for parameters N and tokens D (broadcasting arrays)."""
        N = positive_array("N", N)
        D = positive_array("D", D)
        return ((self.N_c / N) ** (self.alpha_N / self.alpha_D) + self.D_c / D) ** self.alpha_D

    def compute_optimal(self, C, flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN):
        """Closed-form (N*, D*) under k N D = C.

        With r = alpha_N / alpha_D, minimising (N_c/N)^r + k D_c N / C over N gives
        N*^(1 + r) = r N_c^r C / (k D_c).
        """
        C = positive_array("C", C)
        r = self.alpha_N / self.alpha_D
        n_opt = (r * self.N_c**r * C / (flops_per_param_token * self.D_c)) ** (1.0 / (1.0 + r))
        return n_opt, C / (flops_per_param_token * n_opt)

    def table_row(self) -> dict[str, float | str]:
        """One row of a constants table."""
        return {"law": self.name, **{k: getattr(self, k) for k in self.param_names}}

    def __repr__(self) -> str:
        return (
            f"KaplanLaw[{self.name}]: L = [({_fmt(self.N_c)}/N)^({_fmt(self.alpha_N)}/"
            f"{_fmt(self.alpha_D)}) + {_fmt(self.D_c)}/D]^{_fmt(self.alpha_D)}"
        )


KAPLAN_2020 = KaplanLaw(N_c=8.8e13, D_c=5.4e13, alpha_N=0.076, alpha_D=0.095, name="kaplan2020")


@dataclasses.dataclass(frozen=True)
class SaturatingPowerLaw:
    """y = E + A x^-alpha in one variable x > 0 (E = 0: pure power law A x^-alpha).

    Used for loss against compute or data (Moonlight arXiv 2502.16982; Marin arXiv
    2509.02046). `n_free` records how many constants were fitted (3, or 2 when E was
    fixed or dropped).
    """

    E: float
    A: float
    alpha: float
    x_name: str = "C"
    name: str = "power_law"
    n_free: int = 3

    param_names = ("E", "A", "alpha")

    def predict(self, x) -> np.ndarray:
        """y at x (array)."""
        x = positive_array(self.x_name, x)
        return self.E + self.A * x ** (-self.alpha)

    def x_at(self, y) -> np.ndarray:
        """Inverse: the x at which the law reaches y; raises if y <= E (never reached)."""
        y = np.asarray(y, dtype=np.float64)
        if np.any(~np.isfinite(y)) or np.any(y <= self.E):
            raise ValueError(
                f"{self.name} never reaches y={y!r}: values must be finite and above its "
                f"floor E={self.E:.6g}"
            )
        return ((y - self.E) / self.A) ** (-1.0 / self.alpha)

    def table_row(self) -> dict[str, float | str]:
        """One row of a constants table."""
        return {"law": self.name, "E": self.E, "A": self.A, "alpha": self.alpha,
                "x": self.x_name, "free": self.n_free}

    def __repr__(self) -> str:
        head = f"{_fmt(self.E)} + " if self.E else ""
        return (f"SaturatingPowerLaw[{self.name}]: y = {head}{_fmt(self.A)} "
                f"{self.x_name}^-{_fmt(self.alpha)} ({self.n_free} free)")


# Moonlight fig. 3: C in PFLOP/s-days (8.64e19 FLOPs); published as pure power laws.
MOONLIGHT_MUON = SaturatingPowerLaw(E=0.0, A=2.506, alpha=0.052, x_name="C_pfs_days",
                                    name="moonlight_muon", n_free=2)
MOONLIGHT_ADAMW = SaturatingPowerLaw(E=0.0, A=2.608, alpha=0.054, x_name="C_pfs_days",
                                     name="moonlight_adamw", n_free=2)


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    """y = k x^a (no floor), e.g. N*(C), tau_opt(TPP), B_opt(D). x > 0."""

    k: float
    a: float
    x_name: str = "x"
    y_name: str = "y"
    name: str = "power_law"

    def predict(self, x) -> np.ndarray:
        """y at x (array)."""
        return self.k * positive_array(self.x_name, x) ** self.a

    def table_row(self) -> dict[str, float | str]:
        """One row of a constants table."""
        return {"law": self.name, "k": self.k, "a": self.a, "x": self.x_name, "y": self.y_name}

    def __repr__(self) -> str:
        return f"PowerLaw[{self.name}]: {self.y_name} = {_fmt(self.k)} {self.x_name}^{_fmt(self.a)}"


# Power Lines (arXiv 2505.13738), quoted second-hand: UNVERIFIED, kept as data.
POWER_LINES_TAU = PowerLaw(k=1.084, a=-0.527, x_name="TPP", y_name="tau_opt",
                           name="power_lines_tau")
# B_opt in 2048-token sequences against D in tokens.
POWER_LINES_BATCH = PowerLaw(k=0.0306, a=0.383, x_name="D", y_name="B_opt_seqs",
                             name="power_lines_batch")


@dataclasses.dataclass(frozen=True)
class AverageParamLaw:
    """Chinchilla law in the average non-zero parameter count N_bar (arXiv 2501.12486).

    L(N_bar, D) = E + A / N_bar^alpha + B / D^beta, with N_bar the mean over training steps
    of the non-zero prunable parameters (plus the dense non-prunable ones). One law then
    covers dense runs (N_bar = N) and runs pruned during training.
    """

    law: ChinchillaLaw

    def predict(self, N_bar, D) -> np.ndarray:
        """Loss for average non-zero parameters N_bar and tokens D."""
        return self.law.predict(N_bar, D)

    def compute_optimal(self, C, flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN):
        """(N_bar*, D*) for budget C, costing each token at k N_bar FLOPs."""
        return self.law.compute_optimal(C, flops_per_param_token)

    @staticmethod
    def n_bar(nonzero_per_step) -> float:
        """N_bar from a (steps,) trace of non-zero parameter counts: its mean."""
        trace = positive_array("nonzero_per_step", nonzero_per_step).reshape(-1)
        return float(trace.mean())

    def table_row(self) -> dict[str, float | str]:
        """One row of a constants table."""
        return {**self.law.table_row(), "law": f"avg_params:{self.law.name}"}

    def __repr__(self) -> str:
        return repr(self.law).replace("ChinchillaLaw", "AverageParamLaw").replace("/ N^", "/ N_bar^")
