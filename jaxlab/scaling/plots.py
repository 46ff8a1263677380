"""Scaling-law plots, each written as PNG and SVG; every function returns the paths.

Uses matplotlib's object API (`Figure` + Agg canvas), never pyplot, so it touches no
global backend state and works headless in tests and on clusters.
"""
from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxlab.scaling.laws import POWER_LINES_TAU, PowerLaw

__all__ = [
    "plot_chinchilla_fit",
    "plot_envelope",
    "plot_isoflop",
    "plot_loss_vs_compute",
    "plot_optimal_sparsity",
    "plot_tau_vs_tpp",
    "save_figure",
]


def save_figure(fig: Figure, out_stem: str | os.PathLike) -> list[str]:
    """Writes `out_stem`.png and .svg (creating folders); returns both paths."""
    out_stem = os.fspath(out_stem)
    os.makedirs(os.path.dirname(out_stem) or ".", exist_ok=True)
    FigureCanvasAgg(fig)
    paths = []
    for ext in ("png", "svg"):
        path = f"{out_stem}.{ext}"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    return paths


def _axes(title, xlabel, ylabel):
    fig = Figure(figsize=(6, 4.2))
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def plot_loss_vs_compute(df, fits: dict, out_stem, *, group_col: str = "optimizer",
                         compute_col: str = "C", loss_col: str = "final_val_loss") -> list[str]:
    """Runs (points) and fitted L(C) frontiers (lines), one colour per group.

    fits: {group: PowerLawFit}; df: runs table with group_col, compute_col, loss_col.
    """
    fig, ax = _axes("Loss vs compute", f"{compute_col} (FLOPs)", loss_col)
    ax.set_xscale("log")
    ax.set_yscale("log")
    c_all = df[compute_col].to_numpy(float)
    grid = np.geomspace(np.nanmin(c_all) / 1.5, np.nanmax(c_all) * 1.5, 200)
    for i, (g, sub) in enumerate(df.groupby(group_col, dropna=False)):
        color = f"C{i}"
        ax.scatter(sub[compute_col], sub[loss_col], color=color, s=18, label=f"{g} runs")
        if g in fits:
            law = fits[g].law
            ax.plot(grid, law.predict(grid), color=color,
                    label=f"{g}: {law.E:.3g} + {law.A:.3g} C^-{law.alpha:.3g}")
    ax.legend(fontsize=7)
    return save_figure(fig, out_stem)


def plot_isoflop(iso, N, C, loss, out_stem, labels=None) -> list[str]:
    """Two panels: loss vs N per budget with the fitted parabolas and their minima, and
    N_opt against C with the fitted power law (an IsoflopFit). ``labels`` (n,): each
    run's budget name, as passed to the fit (None: runs matched to budgets by C)."""
    fig = Figure(figsize=(11, 4.2))
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax.set(title="IsoFLOP curves", xlabel="N (non-embedding params)", ylabel="loss",
           xscale="log")
    N, C, loss = (np.asarray(a, float) for a in (N, C, loss))
    for i, p in enumerate(iso.parabolas):
        m = (np.asarray(labels).astype(str) == p.label) if labels is not None \
            else np.isclose(C, p.budget, rtol=5e-3)
        ax.scatter(N[m], loss[m], color=f"C{i}", s=16)
        lo, hi = (N[m].min(), N[m].max()) if m.any() else (p.N_opt / 4, p.N_opt * 4)
        grid = np.geomspace(lo / 1.3, hi * 1.3, 100)
        ax.plot(grid, p.predict(grid), color=f"C{i}", label=f"C={p.budget:.2g}")
        ax.plot([p.N_opt], [p.loss_opt], marker="*", color=f"C{i}", ms=10)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    Cs = np.array([p.budget for p in iso.parabolas])
    Ns = np.array([p.N_opt for p in iso.parabolas])
    ax2.set(title="Compute-optimal model size", xlabel="C (FLOPs)", ylabel="N_opt",
            xscale="log", yscale="log")
    for i, (c, n) in enumerate(zip(Cs, Ns)):
        ax2.plot([c], [n], marker="*", color=f"C{i}", ms=10)
    grid = np.geomspace(Cs.min() / 2, Cs.max() * 2, 50)
    ax2.plot(grid, iso.N_opt_law.predict(grid), "k--", lw=1,
             label=f"N_opt = {iso.N_opt_law.k:.3g} C^{iso.N_opt_law.a:.3f}")
    ax2.legend(fontsize=8)
    ax2.grid(True, which="both", alpha=0.3)
    return save_figure(fig, out_stem)


def plot_envelope(env, N, curves, out_stem) -> list[str]:
    """Approach 1: every run's loss against compute coloured by model size (colour bar),
    the envelope in black, and N_opt(C) with its fitted power law beside it."""
    from matplotlib import cm, colors

    fig = Figure(figsize=(11, 4.2))
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    N = np.asarray(N, float)
    norm = colors.LogNorm(vmin=N.min(), vmax=max(N.max(), N.min() * 1.01))
    cmap = cm.viridis
    for n, (c, v) in zip(N, curves):
        ax.plot(c, v, color=cmap(norm(n)), lw=0.8, alpha=0.8)
    ax.plot(env.C, env.loss, "k-", lw=2, label="envelope")
    ax.set(title="Training curves and their envelope", xlabel="C (FLOPs)", ylabel="train loss",
           xscale="log")
    ax.legend(fontsize=8)
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="N (non-embedding)")
    ax2.scatter(env.C, env.N_opt, s=12, color="k")
    grid = np.geomspace(env.C.min(), env.C.max(), 50)
    ax2.plot(grid, env.N_opt_law.predict(grid), "r--",
             label=f"N_opt = {env.N_opt_law.k:.3g} C^{env.N_opt_law.a:.3f}")
    ax2.set(title="N_opt on the envelope", xlabel="C (FLOPs)", ylabel="N_opt", xscale="log",
            yscale="log")
    ax2.legend(fontsize=8)
    for a in (ax, ax2):
        a.grid(True, which="both", alpha=0.3)
    return save_figure(fig, out_stem)


def plot_tau_vs_tpp(optima, fitted: PowerLaw | None, out_stem,
                    published: PowerLaw = POWER_LINES_TAU) -> list[str]:
    """tau_opt per (N, D) against TPP, with the fitted and the published law."""
    fig, ax = _axes("Optimal AdamW timescale", "tokens per parameter", "tau_opt")
    ax.set_xscale("log")
    ax.set_yscale("log")
    tpp = np.array([o.tpp for o in optima])
    tau = np.array([o.tau_opt for o in optima])
    inside = np.array([o.inside for o in optima], bool)
    ax.scatter(tpp[inside], tau[inside], color="C0", label="sweep optima")
    if (~inside).any():
        ax.scatter(tpp[~inside], tau[~inside], color="C0", marker="x", label="edge of sweep")
    grid = np.geomspace(tpp.min() / 2, tpp.max() * 2, 100)
    if fitted is not None:
        ax.plot(grid, fitted.predict(grid), color="C0", label=f"fit: {fitted.k:.3g} TPP^{fitted.a:.3f}")
    ax.plot(grid, published.predict(grid), "--", color="C3",
            label=f"{published.name}: {published.k:.3g} TPP^{published.a:.3f}")
    ax.legend(fontsize=7)
    return save_figure(fig, out_stem)


def plot_optimal_sparsity(law, N, compute, out_stem, flops_per_unit: float = 6.0) -> list[str]:
    """Optimal sparsity against compute for fixed non-zeros N (a FrantarSparseLaw)."""
    fig, ax = _axes(f"Optimal sparsity ({law.name})", "compute", "S_opt")
    ax.set_xscale("log")
    C = np.asarray(compute, float)
    for i, n in enumerate(np.atleast_1d(N)):
        s = [law.optimal_sparsity(n, c, flops_per_unit) for c in C]
        ax.plot(C, s, color=f"C{i}", label=f"N={n:.2g} non-zeros")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    return save_figure(fig, out_stem)


def plot_chinchilla_fit(law, N, D, loss, out_stem, max_curves: int = 12) -> list[str]:
    """Three panels for a fitted L(N, D) law (Chinchilla or Kaplan form): loss against D
    per model size with the fitted curve of each size, residuals against D, and the
    runs against compute C = 6ND beside the law's compute-optimal frontier; colour is
    model size (colour bar). Curves are drawn for at most ``max_curves`` sizes."""
    from matplotlib import cm, colors

    N, D, obs = (np.asarray(a, float).reshape(-1) for a in (N, D, loss))
    pred = law.predict(N, D)
    norm = colors.LogNorm(vmin=N.min(), vmax=max(N.max(), N.min() * 1.01))
    cmap = cm.viridis
    fig = Figure(figsize=(15, 4.2))
    ax1, ax2, ax3 = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
    ax1.scatter(D, obs, s=14, c=N, cmap=cmap, norm=norm)
    sizes = np.unique(N)
    if len(sizes) <= max_curves:
        grid = np.geomspace(D.min() / 1.5, D.max() * 1.5, 80)
        for n in sizes:
            ax1.plot(grid, law.predict(n, grid), color=cmap(norm(n)), lw=1)
    ax1.set(title=repr(law).split(": ", 1)[-1][:60], xlabel="D (tokens)", ylabel="loss",
            xscale="log")
    ax2.scatter(D, obs - pred, s=14, c=N, cmap=cmap, norm=norm)
    ax2.axhline(0.0, color="k", lw=0.8)
    ax2.set(title="residuals (observed - fitted)", xlabel="D (tokens)", ylabel="loss residual",
            xscale="log")
    C = 6.0 * N * D
    ax3.scatter(C, obs, s=14, c=N, cmap=cmap, norm=norm)
    grid_c = np.geomspace(C.min() / 2, C.max() * 4, 80)
    n_opt, d_opt = law.compute_optimal(grid_c)
    ax3.plot(grid_c, law.predict(n_opt, d_opt), "k--", lw=1.2, label="compute-optimal frontier")
    ax3.set(title="runs and the frontier", xlabel="C = 6ND (FLOPs)", ylabel="loss", xscale="log")
    ax3.legend(fontsize=8)
    for ax in (ax1, ax2, ax3):
        ax.grid(True, which="both", alpha=0.3)
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax3, label="N (non-embedding)")
    return save_figure(fig, out_stem)
