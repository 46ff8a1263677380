"""Fit reports: run a law's fit on a runs table and write JSON + Markdown + plots.

`write_fit_report` is what `python -m jaxlab.scaling fit` and the sweep report call;
`optimizer_comparison` is the per-optimizer L(C) fit plus the compute ratio against a
baseline at equal loss, robust to 3-4 runs per optimizer (fewer free constants, noted).
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
from importlib import metadata

import numpy as np

from jaxlab.scaling import plots
from jaxlab.scaling.chinchilla_fit import bootstrap_chinchilla, fit_chinchilla
from jaxlab.scaling.isoflop import fit_isoflop
from jaxlab.scaling.kaplan_fit import fit_kaplan
from jaxlab.scaling.power_law_fit import fit_power_law_in_compute
from jaxlab.scaling.sparse_law import fit_frantar
from jaxlab.scaling.speedup import compute_ratio_at_equal_loss
from jaxlab.scaling.weight_decay_fit import fit_tau_law, tau_opt_from_sweep

__all__ = ["LAWS", "laws_table", "markdown_table", "optimizer_comparison", "write_fit_report"]

LAWS = ("chinchilla", "avg-params", "kaplan", "sparse", "power-law", "isoflop", "tau")


def _cell(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def markdown_table(rows: list[dict]) -> str:
    """Markdown table from dicts (columns: union of keys, first-seen order)."""
    if not rows:
        return "(no rows)\n"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def laws_table(laws) -> str:
    """Markdown table of fitted or published constants (objects with `table_row`)."""
    return markdown_table([law.table_row() for law in laws])


def optimizer_comparison(df, *, baseline: str = "adamw", group_col: str = "optimizer",
                         compute_col: str = "C", loss_col: str = "final_val_loss",
                         target_loss: float | None = None) -> dict:
    """Per group: L(C) = E + A C^-alpha (pure power law with 3-4 runs), and C_g / C_baseline
    at equal loss.

    The target loss defaults to the highest of the groups' best observed losses, so every
    group reached it (the ratio is an interpolation, not an extrapolation).

    Returns {"fits": {group: PowerLawFit}, "target_loss", "ratios": {group: float},
    "notes": [str]}.
    """
    if group_col not in df.columns:
        raise ValueError(f"column {group_col!r} missing; available: {list(df.columns)}")
    fits, notes = {}, []
    for g, sub in df.groupby(group_col, dropna=False):
        fits[g] = fit_power_law_in_compute(sub, compute_col=compute_col, loss_col=loss_col,
                                           name=f"L(C) {g}")
        if fits[g].note:
            notes.append(f"{g}: {fits[g].note}")
    if target_loss is None:
        target_loss = float(max(df.groupby(group_col)[loss_col].min()))
    ratios = {}
    if baseline in fits:
        for g, fit in fits.items():
            try:
                ratios[g] = float(compute_ratio_at_equal_loss(fit, fits[baseline], target_loss))
            except ValueError as e:
                notes.append(f"{g}: no compute ratio ({e})")
    else:
        notes.append(f"baseline {baseline!r} not among groups {sorted(map(str, fits))}: no ratios")
    return {"fits": fits, "target_loss": target_loss, "ratios": ratios, "notes": notes}


def _loss(df, loss_col):
    return df[loss_col].to_numpy(float)


def write_fit_report(df, law: str, out_dir, *, loss_col: str = "final_val_loss",
                     baseline: str = "adamw", n_boot: int = 0) -> dict[str, list[str] | str]:
    """Fit `law` (one of LAWS) to a runs table; write report.json, report.md and plots.

    Returns {"json": path, "markdown": path, "plots": [paths]}.
    """
    if law not in LAWS:
        raise ValueError(f"unknown law {law!r}; valid: {LAWS}")
    if loss_col not in df.columns:
        raise ValueError(f"loss column {loss_col!r} missing; available: {list(df.columns)}")
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, law.replace("-", "_"))
    report: dict = {"law": law, "n_runs": len(df), "loss_col": loss_col,
                    "excluded_runs": [list(x) for x in df.attrs.get("excluded", [])]}
    md = [f"# Fit report: {law}\n", f"{len(df)} runs, loss column `{loss_col}`.\n"]
    plot_paths: list[str] = []
    L = _loss(df, loss_col)

    if law in ("chinchilla", "avg-params"):
        n_col = "N_bar" if law == "avg-params" else "N"
        fit = fit_chinchilla(df[n_col], df["D"], L, name=law)
        report["fit"] = fit.to_dict()
        md += ["## Fitted constants\n", laws_table([fit.law]),
               f"\nHuber objective {fit.objective:.6g} over {fit.n_starts} starts.\n"]
        if n_boot:
            boot = bootstrap_chinchilla(df[n_col], df["D"], L, n_boot=n_boot, fit=fit)
            report["bootstrap"] = {k: list(v) for k, v in boot["intervals"].items()}
            md += [f"\n{int(boot['level'] * 100)}% bootstrap intervals ({n_boot} resamples):\n",
                   markdown_table([{"constant": k, "lo": v[0], "hi": v[1]}
                                   for k, v in boot["intervals"].items()])]
        plot_paths += plots.plot_chinchilla_fit(fit.law, df[n_col], df["D"], L, stem)
    elif law == "kaplan":
        fit = fit_kaplan(df["N"], df["D"], L)
        report["fit"] = fit.to_dict()
        md += ["## Fitted constants\n", laws_table([fit.law])]
        plot_paths += plots.plot_chinchilla_fit(fit.law, df["N"], df["D"], L, stem)
    elif law == "sparse":
        fit = fit_frantar(df["sparsity"].fillna(0.0), df["N"], df["D"], L)
        report["fit"] = fit.to_dict()
        md += ["## Fitted constants\n", laws_table([fit.law])]
        C = df["C"].to_numpy(float)
        plot_paths += plots.plot_optimal_sparsity(
            fit.law, [float(np.median(df["N"]))], np.geomspace(np.nanmin(C), np.nanmax(C) * 100, 30),
            stem)
    elif law == "power-law":
        group = df.fillna({"optimizer": "unknown"})
        cmp = optimizer_comparison(group, baseline=baseline, loss_col=loss_col)
        report["fits"] = {str(g): f.to_dict() for g, f in cmp["fits"].items()}
        report["target_loss"] = cmp["target_loss"]
        report["compute_ratio_vs_" + baseline] = cmp["ratios"]
        report["notes"] = cmp["notes"]
        md += ["## L(C) per optimizer\n",
               laws_table([f.law for f in cmp["fits"].values()]),
               f"\nCompute ratio C / C_{baseline} at loss {cmp['target_loss']:.4g}:\n",
               markdown_table([{"optimizer": g, "ratio": r} for g, r in cmp["ratios"].items()])]
        md += [f"\n- {n}" for n in cmp["notes"]]
        plot_paths += plots.plot_loss_vs_compute(group, cmp["fits"], stem, loss_col=loss_col)
    elif law == "isoflop":
        iso = fit_isoflop(df["N"], df["C"], L)
        report["fit"] = iso.to_dict()
        md += ["## Per-budget optima\n",
               markdown_table([{"C": p.budget, "N_opt": p.N_opt, "loss_opt": p.loss_opt,
                                "inside": p.inside} for p in iso.parabolas]),
               "\n## Across budgets\n", laws_table([iso.N_opt_law, iso.D_opt_law])]
        plot_paths += plots.plot_isoflop(iso, df["N"], df["C"], L, stem)
    elif law == "tau":
        optima = tau_opt_from_sweep(df["N"], df["D"], df["tau"], L)
        tau_law = fit_tau_law(optima)
        report["fit"] = {"k": tau_law.k, "a": tau_law.a,
                         "optima": [o.__dict__ for o in optima]}
        md += ["## tau_opt = k TPP^a\n", laws_table([tau_law])]
        plot_paths += plots.plot_tau_vs_tpp(optima, tau_law, stem)

    if report["excluded_runs"]:
        md += ["\n## Runs left out\n",
               markdown_table([{"run": r, "status": s} for r, s in report["excluded_runs"]])]
    report["plots"] = plot_paths
    json_path = os.path.join(out_dir, "report.json")
    md_path = os.path.join(out_dir, "report.md")
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2, default=float)
    with open(md_path, "w") as f:
        f.write("\n".join(md) + "\n")
    return {"json": json_path, "markdown": md_path, "plots": plot_paths}


def provenance(runs) -> dict:
    """Where and how long a sweep ran: machine, Python and package versions, the sweep's
    wall time (first start to last finish) and the runs' summed wall time; ``runs`` is
    the launcher's store frame (``started_at``, ``finished_at``, ``summary``)."""
    versions = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    started = runs["started_at"].dropna() if "started_at" in runs else []
    finished = runs["finished_at"].dropna() if "finished_at" in runs else []
    span = float(max(finished) - min(started)) if len(started) and len(finished) else None
    walls = [s.get("wall_time_s") or 0.0 for s in runs["summary"] if isinstance(s, dict)]
    return {"machine": f"{platform.platform()}, {platform.processor() or platform.machine()}, "
                       f"{os.cpu_count()} CPUs",
            "python": sys.version.split()[0], "versions": versions,
            "sweep_wall_s": span, "run_wall_sum_s": float(sum(walls))}


def provenance_markdown(prov: dict) -> str:
    """One paragraph from :func:`provenance`."""
    span = "n/a" if prov["sweep_wall_s"] is None else f"{prov['sweep_wall_s']:.0f}"
    return (f"{prov['machine']}; Python {prov['python']}; "
            + ", ".join(f"{k} {v}" for k, v in prov["versions"].items())
            + f". Sweep wall time {span} s (first start to last finish), "
            f"{prov['run_wall_sum_s']:.0f} s summed over runs.\n")
