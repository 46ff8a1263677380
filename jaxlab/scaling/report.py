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
from jaxlab.scaling.bootstrap import bootstrap_fit, intervals_table
from jaxlab.scaling.chinchilla_fit import fit_chinchilla
from jaxlab.scaling.envelope import fit_envelope
from jaxlab.scaling.isoflop import fit_isoflop
from jaxlab.scaling.kaplan_fit import fit_kaplan
from jaxlab.scaling.power_law_fit import fit_power_law_in_compute
from jaxlab.scaling.results import load_metrics
from jaxlab.scaling.sparse_law import fit_frantar
from jaxlab.scaling.speedup import compute_ratio_at_equal_loss
from jaxlab.scaling.weight_decay_fit import fit_tau_law, tau_opt_from_sweep

__all__ = ["LAWS", "fit_constants", "laws_table", "markdown_table", "optimizer_comparison",
           "write_fit_report"]

LAWS = ("chinchilla", "avg-params", "kaplan", "sparse", "power-law", "isoflop", "envelope",
        "tau")


def _cell(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def verdict(held: bool | str | None, noise_nats: float | None = None,
            missing: str = "n/a (runs missing)") -> str:
    """A study's plain verdict on a claim: ``True`` held, ``False`` did not hold,
    ``"noise"`` inconclusive (a difference within ``noise_nats``, the seed noise), None
    ``missing`` (the runs, or an interval, to decide it are missing)."""
    if held is None:
        return missing
    if held == "noise":
        return f"inconclusive (within {noise_nats} nats, the seed noise)"
    return "held" if held else "did not hold"


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


def _nonzero_N(df):
    """Non-zero non-embedding parameters (the Frantar law's N), from the runs' saved
    parameters (``nonzero_N``); dense runs without the column count N."""
    if "nonzero_N" not in df.columns or df["nonzero_N"].isna().all():
        if (df["sparsity"].fillna(0.0) > 0).any():
            raise ValueError("the sparse law needs the non-zero non-embedding parameters of "
                             "each sparse run (summary.json `nonzero_non_embedding`, written "
                             "by the trainer, or a `nonzero_N` column of a CSV)")
        return df["N"]
    return df["nonzero_N"].fillna(df["N"])


def _budgets(df, budget_key: str | None):
    if budget_key is None:
        return None
    if budget_key not in df.columns:
        raise ValueError(f"budget key {budget_key!r} is not a column; available: "
                         f"{list(df.columns)} (sweep labels are `label.<axis>`, variables "
                         "`var.<name>`)")
    return df[budget_key].astype(str).to_numpy()


def run_curves(df) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each run's (compute so far, train loss) from its ``metrics.jsonl``; the run column
    must be its directory (tables from :func:`jaxlab.scaling.results.load_runs`)."""
    curves = []
    for run, C, D in zip(df["run"], df["C"], df["D"]):
        if not os.path.isfile(os.path.join(str(run), "metrics.jsonl")):
            raise ValueError(f"the envelope law needs training curves: run {run!r} has no "
                             "metrics.jsonl (pass run directories with --runs, not a CSV)")
        m = load_metrics(run)
        m = m[m["train_loss"].notna()]
        curves.append((m["tokens"].to_numpy(float) * (C / D), m["train_loss"].to_numpy(float)))
    return curves


def fit_constants(df, law: str, *, loss_col: str = "final_val_loss",
                  budget_key: str | None = None) -> dict[str, float]:
    """The fitted constants of ``law`` on a runs table, by name (what the bootstrap
    resamples; isoflop: the N_opt(C) and D_opt(C) power laws; tau: tau_opt(TPP))."""
    L = _loss(df, loss_col)
    if law in ("chinchilla", "avg-params"):
        fit = fit_chinchilla(df["N_bar" if law == "avg-params" else "N"], df["D"], L, name=law)
        return {k: float(getattr(fit, k)) for k in fit.law.param_names}
    if law == "kaplan":
        fit = fit_kaplan(df["N"], df["D"], L)
        return {k: float(getattr(fit, k)) for k in fit.law.param_names}
    if law == "sparse":
        fit = fit_frantar(df["sparsity"].fillna(0.0), _nonzero_N(df), df["D"], L)
        return {k: float(getattr(fit, k)) for k in fit.law.param_names}
    if law == "isoflop":
        iso = fit_isoflop(df["N"], df["C"], L, budget=_budgets(df, budget_key))
        return {"N_opt.k": iso.N_opt_law.k, "N_opt.a": iso.N_opt_law.a,
                "D_opt.k": iso.D_opt_law.k, "D_opt.a": iso.D_opt_law.a}
    if law == "envelope":
        env = fit_envelope(df["N"], run_curves(df))
        return {"N_opt.k": env.N_opt_law.k, "N_opt.a": env.N_opt_law.a,
                "D_opt.k": env.D_opt_law.k, "D_opt.a": env.D_opt_law.a}
    if law == "tau":
        tau_law = fit_tau_law(tau_opt_from_sweep(df["N"], df["D"], df["tau"], L))
        return {"k": tau_law.k, "a": tau_law.a}
    raise ValueError(f"no constants for law {law!r}; valid: {[x for x in LAWS if x != 'power-law']}")


def write_fit_report(df, law: str, out_dir, *, loss_col: str = "final_val_loss",
                     baseline: str = "adamw", n_boot: int = 0,
                     budget_key: str | None = None) -> dict[str, list[str] | str]:
    """Fit `law` (one of LAWS) to a runs table; write report.json, report.md and plots.

    ``n_boot`` > 0 adds bootstrap intervals (68% and 95%, runs resampled and refitted;
    within budgets for isoflop, within (N, D) cells for tau) of every fitted constant.
    ``budget_key``: the column naming each run's isoFLOP budget (e.g. a sweep label);
    None groups runs by C to 3 significant digits.

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
        plot_paths += plots.plot_chinchilla_fit(fit.law, df[n_col], df["D"], L, stem)
    elif law == "kaplan":
        fit = fit_kaplan(df["N"], df["D"], L)
        report["fit"] = fit.to_dict()
        md += ["## Fitted constants\n", laws_table([fit.law])]
        plot_paths += plots.plot_chinchilla_fit(fit.law, df["N"], df["D"], L, stem)
    elif law == "sparse":
        nonzero = _nonzero_N(df)
        fit = fit_frantar(df["sparsity"].fillna(0.0), nonzero, df["D"], L)
        report["fit"] = fit.to_dict()
        md += ["## Fitted constants\n", laws_table([fit.law]),
               "\nN: non-zero non-embedding parameters, counted in the saved parameters.\n"]
        C = df["C"].to_numpy(float)
        plot_paths += plots.plot_optimal_sparsity(
            fit.law, [float(np.median(df["N"]))],
            np.geomspace(np.nanmin(C), np.nanmax(C) * 100, 30), stem)
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
        labels = _budgets(df, budget_key)
        iso = fit_isoflop(df["N"], df["C"], L, budget=labels)
        report["fit"] = iso.to_dict()
        md += ["## Per-budget optima\n",
               markdown_table([{"budget": p.label, "C": p.budget, "N_opt": p.N_opt,
                                "loss_opt": p.loss_opt, "inside": p.inside}
                               for p in iso.parabolas]),
               "\n## Across budgets\n", laws_table([iso.N_opt_law, iso.D_opt_law])]
        plot_paths += plots.plot_isoflop(iso, df["N"], df["C"], L, stem, labels=labels)
    elif law == "envelope":
        curves = run_curves(df)
        env = fit_envelope(df["N"], curves)
        report["fit"] = env.to_dict()
        md += ["## Approach 1: the envelope of training curves\n",
               f"{len(env.C)} compute points where at least two model sizes compete.\n",
               laws_table([env.N_opt_law, env.D_opt_law])]
        plot_paths += plots.plot_envelope(env, df["N"], curves, stem)
    elif law == "tau":
        optima = tau_opt_from_sweep(df["N"], df["D"], df["tau"], L)
        tau_law = fit_tau_law(optima)
        report["fit"] = {"k": tau_law.k, "a": tau_law.a,
                         "optima": [o.__dict__ for o in optima]}
        md += ["## tau_opt = k TPP^a\n", laws_table([tau_law])]
        plot_paths += plots.plot_tau_vs_tpp(optima, tau_law, stem)

    if n_boot and law != "power-law":
        group_col, distinct = None, None
        if law == "isoflop":
            distinct = ("N", 3)
            group_col = budget_key or "_budget"
            df = df.assign(_budget=[f"{c:.3g}" for c in df["C"]]) if budget_key is None else df
        elif law == "envelope":
            distinct = ("N", 2)
        elif law == "tau":
            distinct = ("tau", 3)
            group_col, df = "_cell", df.assign(_cell=[f"{n:.6g}/{d:.6g}"
                                                      for n, d in zip(df["N"], df["D"])])
        boot = bootstrap_fit(df, lambda d: fit_constants(d, law, loss_col=loss_col,
                                                         budget_key=budget_key),
                             n_boot, group_col=group_col, distinct=distinct)
        report["bootstrap"] = {k: {str(lv): list(iv) for lv, iv in v.items()}
                               for k, v in boot["intervals"].items()}
        report["bootstrap_ok"] = boot["n_ok"]
        md += [f"\n## Bootstrap intervals ({boot['n_ok']} of {n_boot} resamples refitted"
               + (f"; within groups of `{group_col}`" if group_col else "") + ")\n",
               markdown_table(intervals_table(boot))]
        md += [f"- {n} resamples failed: {e}" for e, n in boot["failures"].items()]

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


def write_study_report(sweep_dir, md: list[str], result: dict, runs,
                       excluded: list[dict]) -> tuple[str, str]:
    """The end every study's report shares: appends "Runs left out" (``excluded``: rows
    with ``name`` and ``status``) and "Machine" (:func:`provenance` of ``runs``) to ``md``,
    writes ``report.md``, and ``report.json`` = ``result`` plus the excluded names and the
    provenance. Returns the two paths."""
    from pathlib import Path

    sweep_dir = Path(sweep_dir)
    if excluded:
        md = [*md, "## Runs left out\n", markdown_table(
            [{"run": r["name"], "status": r["status"]} for r in excluded])]
    prov = provenance(runs)
    md = [*md, "## Machine\n", provenance_markdown(prov)]
    (sweep_dir / "report.md").write_text("\n".join(md))
    payload = {**result, "excluded": [r["name"] for r in excluded], "provenance": prov}
    (sweep_dir / "report.json").write_text(json.dumps(payload, indent=2, default=float))
    return str(sweep_dir / "report.md"), str(sweep_dir / "report.json")
