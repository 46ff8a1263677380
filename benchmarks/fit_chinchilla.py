"""Benchmark: Besiroglu's 4,500-start Chinchilla fit, jaxlab (vectorised) vs a scipy loop.

    .venv/bin/python benchmarks/fit_chinchilla.py        # ~2 minutes on the 2-core CPU

Data: 240 synthetic points from the Besiroglu et al. (arXiv 2404.10102) constants with 1%
log-normal noise. Both sides minimise the same objective (SUM of Huber_1e-3 residuals of
log loss) from the same 4,500 grid starts with the same tolerances (gtol 1e-10,
ftol 1e-15, maxiter 1000) and keep the best objective:
  * jaxlab: `fit_chinchilla` - all starts as one batch, float64, analytic gradient in JAX.
  * scipy:  `scipy.optimize.minimize(method="L-BFGS-B", jac=True)` in a Python loop, with
    the analytic numpy gradient (no finite differences).
jaxlab is timed twice: the first call includes XLA compilation, the second reuses it.
Results are printed and written to benchmarks/results/fit_chinchilla_cpu.txt.
"""
import os
import platform
import sys
import time

import jax
import numpy as np

from jaxlab.scaling.chinchilla_fit import besiroglu_grid, fit_chinchilla, fit_chinchilla_scipy
from jaxlab.scaling.laws import BESIROGLU_2024

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "fit_chinchilla_cpu.txt")


def main() -> int:
    rng = np.random.default_rng(0)
    n = 240
    N = np.exp(rng.uniform(np.log(3e7), np.log(2e10), n))
    D = np.exp(rng.uniform(np.log(1e9), np.log(2e12), n))
    L = BESIROGLU_2024.predict(N, D) * np.exp(0.01 * rng.standard_normal(n))
    starts = besiroglu_grid()

    t0 = time.perf_counter()
    cold = fit_chinchilla(N, D, L, starts_SxP=starts)
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = fit_chinchilla(N, D, L, starts_SxP=starts)
    t_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = fit_chinchilla_scipy(N, D, L, starts_SxP=starts)
    t_scipy = time.perf_counter() - t0

    rel = abs(ours.objective - ref.objective) / abs(ref.objective)
    lines = [
        "Chinchilla fit, Besiroglu procedure: 4,500 starts, 240 points, Huber delta 1e-3 (sum)",
        (f"device: {jax.devices()[0].device_kind} ({platform.processor() or platform.machine()}, "
         f"{os.cpu_count()} cores); jax {jax.__version__}, numpy {np.__version__}"),
        f"jaxlab first call (incl. XLA compile): {t_cold:8.2f} s",
        f"jaxlab warm call:                      {t_warm:8.2f} s",
        f"scipy L-BFGS-B loop (analytic grad):   {t_scipy:8.2f} s",
        f"speed-up warm:  {t_scipy / t_warm:6.1f}x",
        f"speed-up first call: {t_scipy / t_cold:6.1f}x",
        f"best objective jaxlab: {ours.objective:.15e}",
        f"best objective scipy:  {ref.objective:.15e}",
        f"relative difference:   {rel:.2e}  (same optimum: {rel <= 1e-8})",
        f"jaxlab law: {ours.law!r}",
        f"scipy  law: {ref.law!r}",
        f"converged starts: jaxlab {ours.n_converged}/4500, scipy {ref.n_converged}/4500",
        f"cold-call objective equals warm: {cold.objective == ours.objective}",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write(text)
    return 0 if rel <= 1e-8 else 1


if __name__ == "__main__":
    sys.exit(main())
