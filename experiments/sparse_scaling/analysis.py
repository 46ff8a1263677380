"""Report of the sparse scaling study (Frantar et al., arXiv 2309.08520).

Called by ``python -m jaxlab.launch report --sweep experiments/sparse_scaling/sweep.gin``
with the sweep's rows from its results store. Writes ``report.md``, ``report.json`` and
three figures (PNG and SVG) into the sweep directory:

* ``loss_vs_nonzeros``: validation loss against non-zero non-embedding parameters, one
  panel per token budget, a colour per sparsity, with the fitted law's curves (figure 2);
* ``residuals``: each run's log-loss residual against the fit;
* ``optimal_sparsity``: the fitted law's loss-optimal sparsity over (non-zeros, training
  compute costed at the dense size), with this sweep's runs on it (figure 3).

The law ``L(S, N, D) = (a_S (1-S)^b_S + c_S) N^-b_N + (a_D / D)^b_D + c`` is fitted to
every finished run with N the non-zero non-embedding parameters counted in its saved
weights and D its training tokens (Huber on log loss, delta 1e-3, as the paper's T5 fit;
the Huber-on-loss variant of its ViT fit beside it). Intervals: bootstrap over runs.
The claims checked, each with a plain verdict: sparsity multiplies the effective capacity
of the non-zeros (about 1.6x at S = 0.5 and 2.2x at S = 0.75 for T5); the multipliers
read off the dense runs without the law agree; the loss-optimal sparsity rises with
training compute at fixed non-zeros.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from jaxlab.scaling.bootstrap import bootstrap_fit
from jaxlab.scaling.plots import save_figure
from jaxlab.scaling.report import markdown_table, verdict, write_study_report
from jaxlab.scaling.sparse_law import FRANTAR_T5, FrantarSparseLaw, fit_frantar, frantar_starts

SPARSITIES_CHECKED = (0.5, 0.75)
CONSTANTS = FrantarSparseLaw.param_names
PAPER = {
    "capacity": "at equal non-zeros a sparse model beats a dense one: sparsity multiplies "
                "the effective parameter count, about 1.6x at S = 0.5 and 2.2x at S = 0.75 "
                "(T5/C4 fit)",
    "direct": "read off the dense runs without the law (the dense size with a sparse "
              "run's loss at the same tokens, over its non-zeros), sparsity multiplies "
              "capacity at S = 0.5 and 0.75",
    "optimal_sparsity": "the loss-optimal sparsity at fixed non-zeros rises with training "
                        "compute (figure 3)",
}


def run_rows(runs) -> list[dict]:
    """One dict per run: size and budget labels, sparsity S, dense and non-zero
    non-embedding parameters (counted in the saved weights), tokens, loss, status."""
    out = []
    for r in runs.to_dict("records"):
        s = r["summary"] if isinstance(r.get("summary"), dict) else {}
        num = lambda k: float(s[k]) if s.get(k) is not None else math.nan  # noqa: E731
        n_dense = num("params_non_embedding")
        n_nz = num("nonzero_non_embedding")
        out.append({"name": r.get("name"), "model": r.get("axis.model"),
                    "tokens_label": r.get("axis.tokens"), "status": r["status"],
                    "S": num("sparsity") if s.get("sparsity") is not None else 0.0,
                    "N_dense": n_dense, "N": n_nz, "D": num("tokens_seen"),
                    "C": num("train_flops"), "loss": num("final_val_loss"),
                    "wall_s": num("wall_time_s"),
                    "measured_S": 1.0 - n_nz / n_dense if n_dense > 0 else math.nan})
    return out


def _ok(r: dict) -> bool:
    return r["status"] == "done" and all(math.isfinite(r[k]) for k in ("loss", "N", "D"))


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([r for r in rows if _ok(r)])


def fit(df: pd.DataFrame, n_starts: int = 2000, residuals: str = "log", seed: int = 0):
    """Frantar's law on a runs frame (columns S, N, D, loss)."""
    return fit_frantar(df["S"], df["N"], df["D"], df["loss"], residuals=residuals,
                       starts_SxP=frantar_starts(n_starts, seed), name=f"ours ({residuals})")


def law_figures(law: FrantarSparseLaw, N_mid: float, C_lo: float, C_hi: float) -> dict:
    """The figures each bootstrap refit reports: the capacity multipliers and how much the
    optimal sparsity at ``N_mid`` non-zeros rises from compute ``C_lo`` to ``C_hi``."""
    mult = law.capacity_multiplier(np.array(SPARSITIES_CHECKED))
    s_opt = law.optimal_sparsity_grid(np.array([N_mid, N_mid]), np.array([C_lo, C_hi]))
    return {**{f"mult@{s:g}": float(m) for s, m in zip(SPARSITIES_CHECKED, mult)},
            "S_opt(C_lo)": float(s_opt[0]), "S_opt(C_hi)": float(s_opt[1]),
            "S_opt rise": float(s_opt[1] - s_opt[0])}


def direct_multipliers(rows: list[dict]) -> list[dict]:
    """Per sparse run: the dense non-zero count with the same loss at the same tokens
    (log-linear interpolation between the dense runs of that budget), over its own
    non-zeros. Runs whose loss lies outside the dense runs' range get NaN."""
    out = []
    for r in rows:
        if not _ok(r) or r["S"] == 0.0:
            continue
        dense = sorted((d["N"], d["loss"]) for d in rows if _ok(d) and d["S"] == 0.0
                       and d["tokens_label"] == r["tokens_label"])
        n_eq = math.nan
        for (n0, l0), (n1, l1) in zip(dense, dense[1:]):
            if min(l0, l1) <= r["loss"] <= max(l0, l1) and l0 != l1:
                w = (r["loss"] - l0) / (l1 - l0)
                n_eq = math.exp(math.log(n0) + w * (math.log(n1) - math.log(n0)))
                break
        out.append({"run": r["name"], "S": r["S"], "tokens": r["tokens_label"], "N": r["N"],
                    "loss": r["loss"], "dense N at equal loss": n_eq,
                    "multiplier": n_eq / r["N"]})
    return out


def direct_by_budget(direct: list[dict], rows: list[dict]) -> list[dict]:
    """Median of the dense-read multipliers per token budget and sparsity (the runs whose
    loss fell inside the dense runs' range, out of all of that budget and sparsity)."""
    tokens = {r["tokens_label"]: r["D"] for r in rows if _ok(r)}
    out = []
    for lab in sorted(tokens, key=tokens.get):
        for S in sorted({d["S"] for d in direct}):
            mine = [d["multiplier"] for d in direct if d["tokens"] == lab and d["S"] == S]
            inside = [m for m in mine if math.isfinite(m)]
            out.append({"tokens": lab, "D": tokens[lab], "S": S,
                        "median multiplier": float(np.median(inside)) if inside else math.nan,
                        "runs in range": f"{len(inside)} of {len(mine)}"})
    return out


def _plot_loss_vs_nonzeros(df: pd.DataFrame, law: FrantarSparseLaw, stem: Path) -> list[str]:
    labels = sorted(df["tokens_label"].unique(), key=lambda t: df[df.tokens_label == t].D.mean())
    fig = Figure(figsize=(4.0 * len(labels), 3.8))
    sparsities = sorted(df["S"].unique())
    grid = np.geomspace(df["N"].min() / 1.5, df["N"].max() * 1.5, 100)
    for j, lab in enumerate(labels):
        ax = fig.add_subplot(1, len(labels), j + 1)
        part = df[df["tokens_label"] == lab]
        D = float(part["D"].mean())
        for i, S in enumerate(sparsities):
            pts = part[part["S"] == S].sort_values("N")
            ax.plot(pts["N"], pts["loss"], "o", color=f"C{i}", ms=5, label=f"S = {S:g}")
            ax.plot(grid, law.predict(S, grid, D), "-", color=f"C{i}", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("non-zero non-embedding parameters")
        if j == 0:
            ax.set_ylabel("validation loss (nats/byte)")
        ax.set_title(f"{lab}: {D / 1e6:.2g}M tokens", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("Loss against non-zeros; lines: the fitted L(S, N, D)", fontsize=10)
    return save_figure(fig, stem)


def _plot_residuals(df: pd.DataFrame, law: FrantarSparseLaw, stem: Path) -> list[str]:
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.add_subplot()
    res = np.log(df["loss"]) - np.log(law.predict(df["S"], df["N"], df["D"]))
    for i, S in enumerate(sorted(df["S"].unique())):
        m = (df["S"] == S).to_numpy()
        ax.plot(df["N"][m], res[m], "o", color=f"C{i}", ms=5, label=f"S = {S:g}")
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("non-zero non-embedding parameters")
    ax.set_ylabel("log loss - log fit")
    ax.set_title("Residuals of the sparse law")
    ax.legend(fontsize=7)
    return save_figure(fig, stem)


def optimal_sparsity_map(law: FrantarSparseLaw, df: pd.DataFrame, n: int = 60) -> dict:
    """S_opt of the law on a log grid over non-zeros and dense-costed compute spanning
    this sweep's runs (x 1/4 .. x 30 in compute)."""
    N = np.geomspace(df["N"].min() / 2, df["N"].max() * 2, n)
    C = np.geomspace(df["C"].min() / 4, df["C"].max() * 30, n)
    return {"N": N, "C": C, "S_opt": law.optimal_sparsity_grid(N[:, None], C[None, :])}


def _plot_optimal_sparsity(osm: dict, df: pd.DataFrame, stem: Path) -> list[str]:
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    levels = np.linspace(0.0, 1.0, 11)
    cs = ax.contourf(osm["C"], osm["N"], osm["S_opt"], levels=levels, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="loss-optimal sparsity")
    for i, S in enumerate(sorted(df["S"].unique())):
        pts = df[df["S"] == S]
        ax.plot(pts["C"], pts["N"], "o", mfc="none", color="w" if i == 0 else f"C{i + 1}",
                ms=5, label=f"runs, S = {S:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute at the dense size, 6 N/(1-S) D (FLOPs)")
    ax.set_ylabel("non-zero parameters N")
    ax.set_title("Optimal sparsity of the fitted law")
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, stem)


def claims(point: dict, boot: dict, by_budget: list[dict], osm: dict) -> dict[str, dict]:
    """Each claim of :data:`PAPER` with our figures and whether it held."""
    out = {}
    iv = boot["intervals"]
    texts, held = [], []
    for s in SPARSITIES_CHECKED:
        k = f"mult@{s:g}"
        lo, hi = iv[k][0.95]
        t5 = float(FRANTAR_T5.capacity_multiplier(s))
        texts.append(f"S = {s:g}: {point[k]:.2f}x (95% {lo:.2f}-{hi:.2f}; T5 {t5:.2f}x)")
        held.append(point[k] > 1.0 and lo > 1.0)
    if "rest mult@0.5" in point:
        texts.append("without the shortest budget: " + ", ".join(
            f"{point[f'rest mult@{s:g}']:.2f}x (95% {iv[f'rest mult@{s:g}'][0.95][0]:.2f}-"
            f"{iv[f'rest mult@{s:g}'][0.95][1]:.2f}) at S = {s:g}" for s in SPARSITIES_CHECKED))
    out["capacity"] = {"held": all(held), "text": "; ".join(texts)}
    largest = [b for b in by_budget if b["tokens"] == by_budget[-1]["tokens"]]
    mult = {b["S"]: b["median multiplier"] for b in largest}
    if all(math.isfinite(mult.get(s, math.nan)) for s in SPARSITIES_CHECKED):
        growth = "; ".join(f"S = {b['S']:g}, {b['tokens']}: {b['median multiplier']:.2f}x"
                           for b in by_budget if b["S"] in SPARSITIES_CHECKED
                           and math.isfinite(b["median multiplier"]))
        out["direct"] = {"held": all(mult[s] > 1.0 for s in SPARSITIES_CHECKED), "text": (
            f"at the largest budget ({largest[0]['tokens']}, {largest[0]['D']:.3g} tokens) "
            + ", ".join(f"{mult[s]:.2f}x at S = {s:g}" for s in SPARSITIES_CHECKED)
            + f" (median over sizes; T5 1.59x, 2.16x); by budget: {growth}")}
    else:
        out["direct"] = {"held": None, "text": "at the largest budget no sparse run's loss "
                         "lies within the dense runs' range"}
    rises = np.all(np.diff(osm["S_opt"], axis=1) >= -1e-9, axis=1)
    lo, hi = iv["S_opt rise"][0.95]
    grows = point["S_opt rise"] > 0 and lo > 0
    out["optimal_sparsity"] = {
        "held": bool(grows and rises.all()),
        "text": (f"at the median non-zeros, S_opt goes from {point['S_opt(C_lo)']:.2f} to "
                 f"{point['S_opt(C_hi)']:.2f} over the compute range (rise 95% {lo:+.2f} to "
                 f"{hi:+.2f}); non-decreasing in compute at {int(rises.sum())} of "
                 f"{len(rises)} non-zero counts of the map"
                 + (f"; without the shortest budget {point['rest S_opt(C_lo)']:.2f} to "
                    f"{point['rest S_opt(C_hi)']:.2f} (rise 95% "
                    + "{:+.2f} to {:+.2f})".format(*iv["rest S_opt rise"][0.95])
                    if "rest S_opt rise" in point else ""))}
    return out


def report(sweep_dir, runs, n_boot: int = 100, n_starts: int = 2000,
           boot_starts: int = 256) -> dict:
    """Writes the report into ``sweep_dir``; returns its paths and summary lines.

    ``n_starts`` random starts for the fits on all runs, ``boot_starts`` for each of the
    ``n_boot`` bootstrap refits."""
    sweep_dir = Path(sweep_dir)
    rows = run_rows(runs)
    df = _frame(rows)
    excluded = [r for r in rows if not _ok(r)]
    out: dict = {"report": sweep_dir / "report.md", "plots": [], "lines": []}
    main = fit(df, n_starts)
    linear = fit(df, n_starts, residuals="linear")
    N_mid = float(np.median(df["N"]))
    C_lo, C_hi = float(df["C"].min()), float(df["C"].max() * 30)
    figures = lambda law: law_figures(law, N_mid, C_lo, C_hi)  # noqa: E731

    shortest = df.groupby("tokens_label")["D"].mean().idxmin()
    rest = df[df["tokens_label"] != shortest]
    sensitivity = rest["tokens_label"].nunique() >= 2 and len(rest) >= 8
    without_shortest = fit(rest, n_starts).law if sensitivity else None

    def rest_figures(law) -> dict:
        return {f"rest {k}": v for k, v in figures(law).items()}

    def refit(sample: pd.DataFrame) -> dict:
        law = fit(sample, boot_starts, seed=1).law
        out = {**{k: getattr(law, k) for k in CONSTANTS}, **figures(law)}
        part = sample[sample["tokens_label"] != shortest]
        if sensitivity:  # the same resample without the shortest budget's runs
            out.update(rest_figures(fit(part, boot_starts, seed=1).law))
        return out

    boot = bootstrap_fit(df, refit, n_boot, seed=0)
    point = {**{k: getattr(main.law, k) for k in CONSTANTS}, **figures(main.law),
             **(rest_figures(without_shortest) if sensitivity else {})}
    direct = direct_multipliers(rows)
    by_budget = direct_by_budget(direct, rows)
    osm = optimal_sparsity_map(main.law, df)
    verdicts = claims(point, boot, by_budget, osm)

    for key, v in verdicts.items():
        out["lines"].append(f"{PAPER[key]}: {verdict(v['held'])} ({v['text']})")

    iv = boot["intervals"]
    t5 = FRANTAR_T5.table_row()
    const_rows = [{"constant": k, "ours": point[k],
                   "68%": f"{iv[k][0.68][0]:.4g} - {iv[k][0.68][1]:.4g}",
                   "95%": f"{iv[k][0.95][0]:.4g} - {iv[k][0.95][1]:.4g}",
                   "ours (Huber on loss)": getattr(linear.law, k), "T5/C4": t5[k]}
                  for k in CONSTANTS]
    res = np.log(df["loss"]) - np.log(main.law.predict(df["S"], df["N"], df["D"]))
    sparse_df = df[df["S"] > 0]
    md = ["# Sparse scaling law L(S, N, D) (arXiv 2309.08520)\n",
          f"Sweep `{sweep_dir.name}`, {len(rows)} runs ({len(df)} fitted), written "
          f"{time.strftime('%Y-%m-%d %H:%M')}. Loss: final validation loss (nats per byte). "
          "N: non-zero non-embedding parameters counted in each run's saved weights; D: "
          "training tokens. Intervals: bootstrap over runs "
          f"({boot['n_ok']} of {boot['n_boot']} refits succeeded).\n",
          "## Claims at this scale\n",
          *[f"- **{verdict(v['held'])}**: {PAPER[k]}. Ours: {v['text']}."
            for k, v in verdicts.items()], "",
          "## Fitted constants beside the paper's\n",
          "Huber (delta 1e-3) on log loss, as the T5/C4 fit. The T5 fit counts D in steps "
          "of 65K tokens, ours in tokens, so a_D is not comparable (b_D is); our N and "
          f"D span {df['N'].min():.3g}-{df['N'].max():.3g} and {df['D'].min():.3g}-"
          f"{df['D'].max():.3g}, the paper's 1.3M-85M non-zeros and up to ~1.3e11 tokens.\n",
          markdown_table(const_rows),
          f"Fit: {main.law!r}; RMS log residual {float(np.sqrt(np.mean(res ** 2))):.4f} over "
          f"{len(df)} runs.\n",
          "## Effective-capacity multipliers\n",
          markdown_table([{"S": s, "law (ours)": point[f"mult@{s:g}"],
                           "95%": "{:.3f} - {:.3f}".format(*iv[f"mult@{s:g}"][0.95]),
                           "T5/C4": float(FRANTAR_T5.capacity_multiplier(s))}
                          for s in SPARSITIES_CHECKED])]
    for name, plot in (("loss_vs_nonzeros", _plot_loss_vs_nonzeros),
                       ("residuals", _plot_residuals)):
        paths = plot(df, main.law, sweep_dir / name)
        out["plots"] += paths
        md.append(f"![{name}]({Path(paths[0]).name})\n")
    paths = _plot_optimal_sparsity(osm, df, sweep_dir / "optimal_sparsity")
    out["plots"] += paths
    md += [f"![optimal sparsity]({Path(paths[0]).name})\n",
           f"S_opt at the median non-zeros ({N_mid:.3g}): {point['S_opt(C_lo)']:.2f} at "
           f"{C_lo:.3g} FLOPs, {point['S_opt(C_hi)']:.2f} at {C_hi:.3g} FLOPs.\n",
           "## Multipliers read off the dense runs\n",
           "For each sparse run, the dense size that reaches its loss at the same tokens "
           "(log-linear between the two dense runs around it), over its non-zeros (nan "
           "where its loss is outside the dense runs' range). Median per budget:\n",
           markdown_table(by_budget), "Every sparse run:\n", markdown_table(direct)]
    if without_shortest is not None:
        md += [f"## The fit without the shortest budget ({shortest})\n",
               f"{without_shortest!r}. Multipliers: " + ", ".join(
                   f"{point[f'rest mult@{s:g}']:.3f}x at S = {s:g} (95% "
                   + "{:.3f} - {:.3f})".format(*iv[f"rest mult@{s:g}"][0.95])
                   for s in SPARSITIES_CHECKED) + ".\n"]
    md += ["## Every run\n",
           markdown_table([{"run": r["name"], "S": r["S"], "measured S (non-emb.)":
                            r["measured_S"], "N dense": r["N_dense"], "N non-zero": r["N"],
                            "tokens": r["D"], "loss": r["loss"], "status": r["status"]}
                           for r in rows])]
    if len(sparse_df):
        md.append(f"Measured sparsity of the non-embedding parameters (norms included, "
                  f"dense): {sparse_df['measured_S'].min():.4f}-"
                  f"{sparse_df['measured_S'].max():.4f} for targets "
                  f"{sorted(sparse_df['S'].unique())}.\n")
    result = {"runs": len(rows), "fitted": len(df), "claims": verdicts,
         "fit": main.to_dict(), "fit_linear": linear.to_dict(), "point": point,
         "intervals": {k: {str(lv): list(v) for lv, v in d.items()} for k, d in iv.items()},
         "bootstrap": {"n_boot": boot["n_boot"], "n_ok": boot["n_ok"]},
         "paper": {**FRANTAR_T5.table_row(), **{f"mult@{s:g}": float(
             FRANTAR_T5.capacity_multiplier(s)) for s in SPARSITIES_CHECKED}},
         "direct_multipliers": direct, "direct_by_budget": by_budget,
         "fit_without_shortest": (None if without_shortest is None else
                                  without_shortest.table_row()),
         "runs_table": rows}
    write_study_report(sweep_dir, md, result, runs, excluded)
    return out
