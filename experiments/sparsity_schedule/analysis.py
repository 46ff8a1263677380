"""Report of the pruning-schedule study (Jin et al., "The Journey Matters", arXiv 2501.12486).

Called by ``python -m jaxlab.launch report --sweep experiments/sparsity_schedule/sweep.gin``
with the sweep's rows from its results store. Writes ``report.md``, ``report.json`` and
three figures (PNG and SVG) into the sweep directory:

* ``loss_vs_compute``: validation loss against training compute, one panel per model
  size, dense runs joined by a line, every sparse arm a marker;
* ``residuals``: log-loss residuals of each run against one Chinchilla law fitted to all
  runs, in the average non-zero count N_bar (left) and in the final count (right);
* ``density_traces``: the non-zero fraction of the non-embedding parameters against the
  fraction of training compute spent, for every arm of one cell (from the runs' logs).

Compute of every run is ``6 N_bar D`` (the trainer's ``train_flops_sparse``; N_bar = N for
a dense run). The claims checked, each with a plain verdict: one law in N_bar fits sparse
and dense runs together, with smaller residuals in the sparse groups than the same law in
the final non-zero count; pruning over 25-75% of compute beats an earlier or a later
window at equal compute; and which schedule gives the lowest loss per compute.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from jaxlab.scaling.bootstrap import bootstrap_fit
from jaxlab.scaling.chinchilla_fit import besiroglu_grid, fit_chinchilla
from jaxlab.scaling.plots import save_figure
from jaxlab.scaling.report import markdown_table, verdict, write_study_report
from jaxlab.train.metrics import read_metrics

MATCH_NATS = 0.01   # differences below this are within the seed spread at d128
LAW_CONSTANTS = ("E", "A", "B", "alpha", "beta")
PAPER = {
    "n_bar_law": "one Chinchilla law in the average non-zero count N_bar fits sparse and "
                 "dense runs together: the sparse groups' residuals are smaller than with "
                 "the same law in the final non-zero count",
    "window": "pruning from 25% to 75% of training compute beats starting earlier or "
              "ending later, at equal compute",
    "best_schedule": "at equal compute, the paper's schedule (geometric, 25-75% of "
                     "compute) gives the lowest loss of the schedules",
}


def run_rows(runs) -> list[dict]:
    """One dict per run: arm, cell (size, budget), sparsity, parameter counts (initial,
    final non-zero from the saved weights, N_bar from the logged trace), tokens, compute,
    loss, status."""
    out = []
    for r in runs.to_dict("records"):
        s = r["summary"] if isinstance(r.get("summary"), dict) else {}
        num = lambda k: float(s[k]) if s.get(k) is not None else math.nan  # noqa: E731
        n0 = num("params_non_embedding")
        n_bar = num("n_bar") if s.get("n_bar") is not None else n0
        n_final = num("nonzero_non_embedding")
        D = num("tokens_seen")
        out.append({"name": r.get("name"), "arm": r.get("axis.arm"),
                    "model": r.get("axis.model"), "budget": r.get("axis.budget"),
                    "cell": f"{r.get('axis.model')}/{r.get('axis.budget')}",
                    "S": num("sparsity") if s.get("sparsity") is not None else 0.0,
                    "N0": n0, "N_bar": n_bar, "N_final": n_final, "D": D,
                    "steps": s.get("steps"), "C": 6.0 * n_bar * D,
                    "loss": num("final_val_loss"), "status": r["status"],
                    "run_dir": r.get("run_dir")})
    return out


def _ok(r: dict) -> bool:
    return r["status"] == "done" and all(math.isfinite(r[k])
                                         for k in ("loss", "N_bar", "N_final", "D"))


def group(r: dict) -> str:
    """Residual group: 'dense' or the schedule kind of a sparse arm."""
    return "dense" if r["S"] == 0.0 else r["arm"].rsplit("_", 1)[0]


def fit_law(df: pd.DataFrame, n_col: str, starts=None):
    """Chinchilla L = E + A / N^alpha + B / D^beta with N from column ``n_col``."""
    return fit_chinchilla(df[n_col], df["D"], df["loss"], starts_SxP=starts, name=n_col).law


def residuals(df: pd.DataFrame, law, n_col: str) -> np.ndarray:
    return np.log(df["loss"].to_numpy()) - np.log(law.predict(df[n_col], df["D"]))


def group_residuals(df: pd.DataFrame, res_bar: np.ndarray, res_final: np.ndarray) -> list[dict]:
    """Per group: mean and RMS of the residuals of both fits."""
    out = []
    for g in dict.fromkeys(df["group"]):
        m = (df["group"] == g).to_numpy()
        out.append({"group": g, "runs": int(m.sum()),
                    "mean (N_bar fit)": float(res_bar[m].mean()),
                    "RMS (N_bar fit)": float(np.sqrt(np.mean(res_bar[m] ** 2))),
                    "mean (final-N fit)": float(res_final[m].mean()),
                    "RMS (final-N fit)": float(np.sqrt(np.mean(res_final[m] ** 2)))})
    return out


def _sparse_rms(df: pd.DataFrame, res: np.ndarray) -> float:
    m = (df["S"] > 0).to_numpy()
    return float(np.sqrt(np.mean(res[m] ** 2)))


def equal_compute_table(rows: list[dict]) -> list[dict]:
    """Per cell and arm: loss, its gap to the cell's dense run, and compute / dense's."""
    out = []
    for cell in dict.fromkeys(r["cell"] for r in rows):
        mine = [r for r in rows if r["cell"] == cell and _ok(r)]
        dense = next((r for r in mine if r["S"] == 0.0), None)
        for r in mine:
            out.append({"cell": cell, "arm": r["arm"], "S": r["S"], "steps": r["steps"],
                        "loss": r["loss"],
                        "vs dense": r["loss"] - dense["loss"] if dense else math.nan,
                        "C / dense C": r["C"] / dense["C"] if dense else math.nan})
    return out


def arm_means(table: list[dict], arms=None) -> dict[str, dict]:
    """Per arm: mean gap to dense over the cells it ran in (with ``arms``: over the cells
    where every one of those arms ran, so they are compared on the same cells)."""
    arms = list(dict.fromkeys(t["arm"] for t in table)) if arms is None else list(arms)
    ok = [t for t in table if math.isfinite(t["vs dense"])]
    cells = set.intersection(*({t["cell"] for t in ok if t["arm"] == a} for a in arms)) \
        if arms else set()
    out = {}
    for arm in arms:
        gaps = [t["vs dense"] for t in ok if t["arm"] == arm and t["cell"] in cells]
        if gaps:
            out[arm] = {"mean gap": float(np.mean(gaps)), "cells": len(gaps),
                        "worst": float(max(gaps)), "best": float(min(gaps))}
    return out


def claims(df, res_bar, res_final, boot, table: list[dict]) -> dict[str, dict]:
    """Each claim of :data:`PAPER` with our figures and whether it held."""
    out = {}
    rb, rf = _sparse_rms(df, res_bar), _sparse_rms(df, res_final)
    lo, hi = boot["intervals"]["sparse RMS gain"][0.95]
    out["n_bar_law"] = {"held": bool(rb < rf and lo > 0), "text": (
        f"RMS log residual of the sparse runs {rb:.4f} in N_bar vs {rf:.4f} in final N "
        f"(gain 95% {lo:+.4f} to {hi:+.4f}); all runs {np.sqrt(np.mean(res_bar ** 2)):.4f} "
        f"vs {np.sqrt(np.mean(res_final ** 2)):.4f}"
        + ("; the gain's interval includes 0" if lo <= 0 < rf - rb else ""))}
    win = arm_means(table, ("geometric_s75", "early_s75", "late_s75"))
    if len(win) == 3:
        g = win["geometric_s75"]["mean gap"]
        others = {a: v["mean gap"] for a, v in win.items() if a != "geometric_s75"}
        margin = min(others.values()) - g
        held = "noise" if abs(margin) <= MATCH_NATS else bool(margin > 0)
        out["window"] = {"held": held, "text": "mean loss - dense at S = 0.75: " + ", ".join(
            f"{a} {v['mean gap']:+.4f}" for a, v in win.items())}
    else:
        out["window"] = {"held": None, "text": "runs missing"}
    ranks = []
    for s in ("s50", "s75"):
        kinds = [f"{k}_{s}" for k in ("oneshot", "cubic", "geometric")]
        arms = {a: v["mean gap"] for a, v in arm_means(table, kinds).items()}
        if len(arms) == 3:
            best = min(arms, key=arms.get)
            second = sorted(arms.values())[1]
            ranks.append((s, best, arms, second - arms[best]))
    if ranks:
        paper_best = all(best.startswith("geometric") for _, best, _, _ in ranks)
        close = all(margin <= MATCH_NATS for *_, margin in ranks)
        held = "noise" if close else paper_best
        out["best_schedule"] = {"held": held, "text": "; ".join(
            f"S = 0.{s[1:]}: best {best} (" + ", ".join(f"{a} {g:+.4f}" for a, g in arms.items())
            + ")" for s, best, arms, _ in ranks)}
    else:
        out["best_schedule"] = {"held": None, "text": "runs missing"}
    return out


def _plot_loss_vs_compute(df: pd.DataFrame, stem: Path) -> list[str]:
    models = list(dict.fromkeys(df["model"]))
    fig = Figure(figsize=(4.0 * len(models), 3.8))
    arms = list(dict.fromkeys(df["arm"]))
    for j, model in enumerate(models):
        ax = fig.add_subplot(1, len(models), j + 1)
        part = df[df["model"] == model]
        for i, arm in enumerate(arms):
            pts = part[part["arm"] == arm].sort_values("C")
            ax.plot(pts["C"], pts["loss"], marker="o", ls="-" if arm == "dense" else "none",
                    color="k" if arm == "dense" else f"C{i}", ms=5,
                    mfc="none" if arm.endswith("s50") else None, label=arm)
        ax.set_xscale("log")
        ax.set_xlabel("training compute 6 N_bar D (FLOPs)")
        if j == 0:
            ax.set_ylabel("validation loss (nats/byte)")
        ax.set_title(model, fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle("Schedules at equal compute (open markers: S = 0.5)", fontsize=10)
    return save_figure(fig, stem)


def _plot_residuals(df, res_bar, res_final, stem: Path) -> list[str]:
    fig = Figure(figsize=(9.0, 3.6))
    groups = list(dict.fromkeys(df["group"]))
    for j, (res, col, title) in enumerate(((res_bar, "N_bar", "law in N_bar"),
                                           (res_final, "N_final", "law in final non-zeros"))):
        ax = fig.add_subplot(1, 2, j + 1)
        for i, g in enumerate(groups):
            m = (df["group"] == g).to_numpy()
            ax.plot(df[col][m], res[m], "o", color="k" if g == "dense" else f"C{i}", ms=5,
                    label=g)
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(col)
        ax.set_ylabel("log loss - log fit")
        ax.set_title(f"Residuals, one {title}", fontsize=9)
        ax.legend(fontsize=7)
    return save_figure(fig, stem)


def _density_trace(run_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(fraction of the run's compute spent, non-zero fraction) from a run's metrics."""
    path = Path(run_dir or "") / "metrics.jsonl"
    pts = [(m["step"], m["sparse/nonzero_non_embedding"]) for m in read_metrics(path)
           if "sparse/nonzero_non_embedding" in m] if path.exists() else []
    if len(pts) < 2:
        return np.array([]), np.array([])
    step, nnz = (np.array(v, float) for v in zip(*pts))
    # between two logged steps the count is known only at the ends: trapezoids
    spent = np.concatenate([[0.0], np.cumsum(0.5 * (nnz[1:] + nnz[:-1]) * np.diff(step))])
    return spent / spent[-1], nnz / nnz[0]


def _plot_density_traces(rows: list[dict], stem: Path) -> list[str] | None:
    cells = [c for c in dict.fromkeys(r["cell"] for r in rows)
             if any(r["cell"] == c and r["S"] > 0 and _ok(r) for r in rows)]
    if not cells:
        return None
    cell = cells[len(cells) // 2]
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    for i, r in enumerate(r for r in rows if r["cell"] == cell and r["S"] > 0 and _ok(r)):
        x, y = _density_trace(r["run_dir"])
        if len(x):
            ax.plot(x, y, color=f"C{i}", lw=1.2, label=r["arm"])
    for f in (0.25, 0.75):
        ax.axvline(f, color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("fraction of the run's training compute spent")
    ax.set_ylabel("non-zero fraction (non-embedding)")
    ax.set_title(f"Pruning trajectories ({cell}, from the runs' logs)")
    ax.legend(fontsize=7)
    return save_figure(fig, stem)


def report(sweep_dir, runs, n_boot: int = 100, fit_stride: int = 1,
           boot_stride: int = 15) -> dict:
    """Writes the report into ``sweep_dir``; returns its paths and summary lines.

    The fits on all runs start from every ``fit_stride``-th point of the 4,500-point
    grid (all by default); each of the ``n_boot`` bootstrap refits from every
    ``boot_stride``-th point."""
    sweep_dir = Path(sweep_dir)
    rows = run_rows(runs)
    df = pd.DataFrame([r for r in rows if _ok(r)])
    df["group"] = [group(r) for r in df.to_dict("records")]
    excluded = [r for r in rows if not _ok(r)]
    out: dict = {"report": sweep_dir / "report.md", "plots": [], "lines": []}
    grid = besiroglu_grid()
    law_bar = fit_law(df, "N_bar", grid[::fit_stride])
    law_final = fit_law(df, "N_final", grid[::fit_stride])
    res_bar, res_final = residuals(df, law_bar, "N_bar"), residuals(df, law_final, "N_final")
    few = grid[::boot_stride]

    def refit(sample: pd.DataFrame) -> dict:
        lb, lf = fit_law(sample, "N_bar", few), fit_law(sample, "N_final", few)
        gain = (_sparse_rms(sample, residuals(sample, lf, "N_final"))
                - _sparse_rms(sample, residuals(sample, lb, "N_bar")))
        return {**{k: getattr(lb, k) for k in LAW_CONSTANTS}, "sparse RMS gain": gain}

    boot = bootstrap_fit(df, refit, n_boot, seed=0)
    table = equal_compute_table(rows)
    means = arm_means(table)
    verdicts = claims(df, res_bar, res_final, boot, table)
    for key, v in verdicts.items():
        out["lines"].append(f"{PAPER[key]}: {verdict(v['held'], MATCH_NATS)} ({v['text']})")
    iv = boot["intervals"]
    c_ratio = [t["C / dense C"] for t in table if math.isfinite(t["C / dense C"])]
    md = ["# Pruning schedules at equal compute and the N_bar law (arXiv 2501.12486)\n",
          f"Sweep `{sweep_dir.name}`, {len(rows)} runs ({len(df)} done), written "
          f"{time.strftime('%Y-%m-%d %H:%M')}. Loss: final validation loss (nats per byte); "
          f"one seed, so differences under ~{MATCH_NATS} nats are noise. Compute: 6 N_bar D "
          "with N_bar the mean logged non-zero non-embedding count; final N counted in the "
          "saved weights. Every arm of a cell spends its dense run's compute: "
          + (f"measured C / dense C = {min(c_ratio):.4f}-{max(c_ratio):.4f}.\n" if c_ratio
             else "(no cell has its dense run).\n"),
          "## Claims at this scale\n",
          *[f"- **{verdict(v['held'], MATCH_NATS)}**: {PAPER[k]}. Ours: {v['text']}."
            for k, v in verdicts.items()], "",
          "## One law for sparse and dense runs\n",
          f"L = E + A / N^alpha + B / D^beta (Huber on log loss, delta 1e-3, {len(grid[::fit_stride])} "
          "starts), "
          "fitted to every run with N = N_bar and, separately, with N = the final non-zero "
          f"count. Intervals: bootstrap over runs ({boot['n_ok']} of {boot['n_boot']} refits).\n",
          markdown_table([{"constant": k, "N_bar fit": getattr(law_bar, k),
                           "95%": "{:.4g} - {:.4g}".format(*iv[k][0.95]),
                           "final-N fit": getattr(law_final, k)} for k in LAW_CONSTANTS]),
          "Residuals by group (log loss - log fit):\n",
          markdown_table(group_residuals(df, res_bar, res_final))]
    for name, paths in (("loss_vs_compute", _plot_loss_vs_compute(df, sweep_dir / "loss_vs_compute")),
                        ("residuals", _plot_residuals(df, res_bar, res_final,
                                                      sweep_dir / "residuals")),
                        ("density_traces", _plot_density_traces(rows, sweep_dir / "density_traces"))):
        if paths:
            out["plots"] += paths
            md.append(f"![{name}]({Path(paths[0]).name})\n")
    md += ["## Schedules at equal compute\n",
           "Mean over cells of each arm's loss minus its cell's dense run:\n",
           markdown_table([{"arm": a, **v} for a, v in means.items()]),
           "Every cell:\n", markdown_table(table)]
    result = {"runs": len(rows), "done": len(df), "claims": verdicts,
         "law_n_bar": law_bar.table_row(), "law_final": law_final.table_row(),
         "intervals": {k: {str(lv): list(v) for lv, v in d.items()} for k, d in iv.items()},
         "groups": group_residuals(df, res_bar, res_final), "arms": means, "table": table}
    write_study_report(sweep_dir, md, result, runs, excluded)
    return out
