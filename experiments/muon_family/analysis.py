"""Analysis of the Muon-family study: every matrix optimizer against AdamW.

Called by ``python -m jaxlab.launch report --sweep experiments/muon_family/sweep.gin`` with
the sweep's rows from its results store. Per optimizer arm it reports

* the lr sweep on the ``lr_sweep`` rung (loss per lr multiplier, the best multiplier);
* loss against training compute through the dense ladder (best lr per rung), a power law
  ``L(C) = A C^-alpha`` per arm and ``C_arm / C_adamw`` at equal loss
  (:func:`jaxlab.scaling.report.optimizer_comparison`);
* the MoE rung (label ``moe<d>``) against its dense twin (label ``d<d>``, equal active
  parameters) at equal steps and equal lr;
* the cost of a training step relative to AdamW's on the same model (median logged
  tokens/s; the runs share a 2-core machine, so this is a rough ratio: the side-by-side
  figure is ``benchmarks/optimizer_step.py``);
* MuonClip's clipped-head fraction and max logit, the MoE's dropped-token fraction.

Writes ``report.md``, ``report.json``, ``loss_vs_compute.png``, ``lr_sweep.png`` and
``step_cost.png`` (each also ``.svg``) into the sweep directory.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from jaxlab.scaling import plots
from jaxlab.scaling.report import (
    laws_table,
    markdown_table,
    optimizer_comparison,
    provenance,
    provenance_markdown,
    verdict,
)
from jaxlab.scaling.results import load_metrics, summaries_to_frame

BASELINE = "adamw"
MOE_PREFIX = "moe"      # the MoE rung's label: 'moe128' is the MoE twin of dense 'd128'
MIN_RUNGS = 3           # dense rungs an arm needs for its L(C) fit (two constants + one)
NOISE_NATS = 0.01       # about the seed spread of a final loss here (as layerwise_wd, wsd_cooldown)


def frame(runs):
    """Finished runs as a scaling table plus arm, model, lr multiplier and run_dir."""
    have = runs[runs["summary"].notna()]
    have = have[have["summary"].map(lambda s: s.get("status") in ("done", "diverged", "failed"))]
    df = summaries_to_frame(list(have["summary"]), runs=list(have["name"]),
                            include_status=("done",),
                            extras=[{"N_stored": s.get("params_non_embedding_stored")}
                                    for s in have["summary"]])
    by_name = have.set_index("name")
    for col, key in (("arm", "axis.optimizer"), ("model", "axis.model")):
        df[col] = [by_name.loc[r, key] for r in df["run"]]
    df["run_dir"] = [by_name.loc[r, "run_dir"] for r in df["run"]]
    df["moe"] = df["model"].str.startswith(MOE_PREFIX)
    return df


def _metric(run_dir: str, name: str, how: str = "median") -> float | None:
    """A logged metric of one run (rows after the first, which include compilation)."""
    try:
        m = load_metrics(run_dir)
    except (FileNotFoundError, ValueError):
        return None
    if name not in m.columns:
        return None
    v = m[name].dropna().to_numpy(float)
    v = v[1:] if len(v) > 1 else v
    if not len(v):
        return None
    return float({"median": np.median, "mean": np.mean, "max": np.max}[how](v))


def _lr_table(df) -> tuple[list[dict], dict]:
    """Loss per arm and lr on the rung with most lr values; the best lr per arm there."""
    counts = df.groupby("model")["lr"].nunique()
    if counts.empty or counts.max() < 2:
        return [], {}
    rung = counts.idxmax()
    sub = df[df["model"] == rung]
    lrs = sorted(sub["lr"].unique())
    rows, best = [], {}
    for arm, g in sub.groupby("arm", sort=False):
        by_lr = dict(zip(g["lr"], g["final_val_loss"]))
        row = {"arm": arm, **{f"lr {lr:.3g}": by_lr.get(lr) for lr in lrs}}
        lr_best = min(by_lr, key=by_lr.get)
        edge = lr_best in (lrs[0], lrs[-1])
        row["best lr"] = f"{lr_best:.3g}" + (" (grid edge)" if edge else "")
        rows.append(row)
        best[arm] = {"lr": lr_best, "loss": by_lr[lr_best], "at_edge": edge}
    return rows, {"rung": rung, "best": best}


def best_per_rung(df):
    """Each (arm, model)'s run with the lowest loss over its lrs."""
    idx = df.groupby(["arm", "model"])["final_val_loss"].idxmin()
    return df.loc[idx].reset_index(drop=True)


def _ladder(best, md: list, result: dict, sweep_dir: Path, out: dict) -> None:
    dense = best[~best["moe"]]
    rungs = dense.groupby("arm")["model"].nunique()
    short = sorted(rungs[rungs < MIN_RUNGS].index)
    dense = dense[dense["arm"].isin(rungs[rungs >= MIN_RUNGS].index)]
    if BASELINE not in set(dense["arm"]):
        md.append(f"\n**No compute fit:** needs AdamW on at least {MIN_RUNGS} dense rungs.\n")
        return
    if short:
        md.append(f"\nLeft out of the fits (fewer than {MIN_RUNGS} dense rungs done): "
                  f"{', '.join(short)}.\n")
    cmp = optimizer_comparison(dense, baseline=BASELINE, group_col="arm")
    fits = cmp["fits"]
    out["plots"] += [p for p in plots.plot_loss_vs_compute(
        dense, fits, sweep_dir / "loss_vs_compute", group_col="arm") if p.endswith(".png")]
    md += ["## Loss against compute (dense ladder, best lr per rung)\n",
           laws_table([f.law for f in fits.values()])]
    md += [f"\n- {n}" for n in cmp["notes"]]
    rows = [{"arm": a, "alpha": fits[a].law.alpha,
             "C_arm / C_adamw": cmp["ratios"].get(a)} for a in fits]
    md += [(f"\n\nCompute each arm needs relative to AdamW to reach loss "
            f"{cmp['target_loss']:.4f} (the highest of the arms' best losses; < 1: less "
            "compute than AdamW):\n"), markdown_table(rows),
           "\n![loss vs compute](loss_vs_compute.png)\n"]
    result["fits"] = {a: f.law.table_row() for a, f in fits.items()}
    result["target_loss"] = cmp["target_loss"]
    result["compute_ratio_vs_adamw"] = cmp["ratios"]
    for a in fits:
        out["lines"].append(f"{a:>9}: C/C_adamw = {cmp['ratios'].get(a, float('nan')):.3f}")


def _size_table(best) -> list[dict]:
    """Best loss of every arm on every rung, and its gain over AdamW there."""
    rows = []
    models = best.sort_values("N").drop_duplicates("model")["model"]
    for model in models:
        sub = best[best["model"] == model].set_index("arm")
        base = sub["final_val_loss"].get(BASELINE)
        for arm, r in sub.iterrows():
            rows.append({"model": model, "arm": arm, "N active": int(r["N"]),
                         "lr": r["lr"], "val loss": r["final_val_loss"],
                         "gain vs adamw": None if base is None else base - r["final_val_loss"]})
    return rows


def _moe_vs_dense(df) -> list[dict]:
    """Every arm's MoE run against its dense twin at the same lr (equal steps)."""
    rows = []
    for _, moe in df[df["moe"]].iterrows():
        twin = df[(df["model"] == "d" + moe["model"][len(MOE_PREFIX):])
                  & (df["arm"] == moe["arm"]) & (df["lr"] == moe["lr"])]
        if twin.empty:
            continue
        t = twin.iloc[0]
        rows.append({"arm": moe["arm"], "model": moe["model"], "lr": moe["lr"],
                     "N active": int(moe["N"]), "N stored": int(moe["N_stored"]),
                     "steps": int(moe["steps"]), "twin steps": int(t["steps"]),
                     "moe loss": moe["final_val_loss"], "dense loss": t["final_val_loss"],
                     "moe gain": t["final_val_loss"] - moe["final_val_loss"],
                     "dropped tokens": _metric(moe["run_dir"], "moe/dropped_frac", "mean")})
    return rows


def _step_costs(df) -> list[dict]:
    """Median logged tokens/s of each arm on each model (over its lrs: the step's cost does
    not depend on the lr), as step time relative to AdamW's on the same model."""
    rows = []
    for model, sub in df.groupby("model", sort=False):
        tps: dict = {}
        for _, r in sub.iterrows():
            v = _metric(r["run_dir"], "tokens_per_sec")
            if v:
                tps.setdefault(r["arm"], []).append(v)
        base = tps.get(BASELINE)
        for arm, v in tps.items():
            if base:
                rows.append({"model": model, "arm": arm, "tokens/s": float(np.median(v)),
                             "step time / adamw's": float(np.median(base) / np.median(v))})
    return rows


def _plot_lr(df, lr_info, stem) -> list[str]:
    fig = Figure(figsize=(6, 4.2))
    ax = fig.add_subplot()
    sub = df[df["model"] == lr_info["rung"]]
    for i, (arm, g) in enumerate(sub.groupby("arm", sort=False)):
        g = g.sort_values("lr")
        ax.plot(g["lr"], g["final_val_loss"], "o-", color=f"C{i}", label=arm)
    ax.set(xscale="log", xlabel="peak lr", ylabel="final val loss (nats/byte)",
           title=f"lr sweep on {lr_info['rung']}")
    lrs = sorted(sub["lr"].unique())
    ax.set_xticks(lrs, [f"{x:g}" for x in lrs])   # the grid's values, no minor labels
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return plots.save_figure(fig, stem)


def _plot_costs(costs, stem) -> list[str]:
    fig = Figure(figsize=(6, 4.2))
    ax = fig.add_subplot()
    models = list(dict.fromkeys(r["model"] for r in costs))
    arms = list(dict.fromkeys(r["arm"] for r in costs))
    width = 0.8 / max(len(models), 1)
    for j, model in enumerate(models):
        v = {r["arm"]: r["step time / adamw's"] for r in costs if r["model"] == model}
        ax.bar(np.arange(len(arms)) + j * width, [v.get(a, np.nan) for a in arms], width,
               label=model)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(arms)) + 0.4 - width / 2, arms, rotation=30, fontsize=8)
    ax.set(ylabel="training step time / AdamW's", title="Step cost (runs on a shared machine)")
    ax.legend(fontsize=7)
    return plots.save_figure(fig, stem)


def _verdicts(size_rows, moe_rows, lr_info, fixed_lrs) -> list[str]:
    lines = ["\n## Verdict\n"]
    by_model: dict = {}
    for r in size_rows:
        by_model.setdefault(r["model"], {})[r["arm"]] = r["gain vs adamw"]
    dense = [m for m in by_model if not m.startswith(MOE_PREFIX)]
    if dense:
        top = dense[-1]
        ahead = {a: g for a, g in by_model[top].items() if a != BASELINE and g is not None}
        if ahead:
            beat = sorted(a for a, g in ahead.items() if g > NOISE_NATS)
            lines.append(f"- Orthogonalised updates beat AdamW on the largest dense rung "
                         f"({top}): **{verdict(bool(beat))}**; {len(beat)} of {len(ahead)} "
                         f"arms are ahead by more than {NOISE_NATS} nats "
                         f"({', '.join(beat) or 'none'}).")
            best_arm = max(ahead, key=ahead.get)
            lines.append(f"- Best arm on {top}: {best_arm} ({ahead[best_arm]:+.3f} nats vs "
                         "AdamW).")
    if moe_rows:
        wins = [r for r in moe_rows if r["moe gain"] > NOISE_NATS]
        lines.append(f"- The MoE beats its dense twin of equal active parameters at equal "
                     f"steps with every arm: **{verdict(len(wins) == len(moe_rows))}**; it "
                     f"wins by more than {NOISE_NATS} nats with {len(wins)} of "
                     f"{len(moe_rows)} arms (gains "
                     + ", ".join(f"{r['arm']} {r['moe gain']:+.3f}" for r in moe_rows) + ").")
    if lr_info:
        edge = sorted(a for a, b in lr_info["best"].items() if b["at_edge"])
        if edge:
            lines.append(f"- lr grid: the best lr of {', '.join(edge)} is at the grid's edge "
                         "on the swept rung, so their optimum may lie outside it.")
    shared = ", ".join(f"{x:g}" for x in fixed_lrs) or "none"
    lines.append(f"- Scale: one seed per cell; the rungs without an lr sweep use one lr for "
                 f"every arm ({shared}), which the sweep on the smallest rung may not endorse "
                 "for every arm, and the optimum lr may move with size.")
    return lines


def report(sweep_dir, runs) -> dict:
    """Writes the study's report into ``sweep_dir``; returns its paths and summary lines."""
    sweep_dir = Path(sweep_dir)
    if "run_dir" not in runs:  # a store read directly (the notebook): runs sit in sweep_dir
        runs = runs.assign(run_dir=[str(sweep_dir / n) for n in runs["name"]])
    df = frame(runs)
    out: dict = {"report": sweep_dir / "report.md", "plots": [], "lines": []}
    result: dict = {"runs": len(runs), "done": len(df)}
    md = ["# The Muon family against AdamW\n",
          (f"Sweep `{sweep_dir}`, {len(runs)} runs ({len(df)} done), written "
           f"{time.strftime('%Y-%m-%d %H:%M')}. Loss: final validation loss (nats/byte) on "
           "held-out pystdlib files; C: training FLOPs of the active parameters "
           "(`jaxlab.nn.flops_per_token`).\n"), provenance_markdown(provenance(runs))]
    if df.empty:
        md.append("\n**No finished runs.**\n")
    else:
        lr_rows, lr_info = _lr_table(df)
        if lr_rows:
            md += [f"\n## Learning-rate sweep on {lr_info['rung']}\n", markdown_table(lr_rows),
                   "\n![lr sweep](lr_sweep.png)\n"]
            out["plots"] += [p for p in _plot_lr(df, lr_info, sweep_dir / "lr_sweep")
                             if p.endswith(".png")]
            result["lr_sweep"] = lr_info
        best = best_per_rung(df)
        _ladder(best, md, result, sweep_dir, out)
        size_rows = _size_table(best)
        md += ["\n## Every rung, best lr\n", markdown_table(size_rows)]
        result["table"] = size_rows
        moe_rows = _moe_vs_dense(df)
        if moe_rows:
            md += ["\n## MoE against its dense twin (equal active parameters, equal steps, "
                   "equal lr)\n", markdown_table(moe_rows)]
            result["moe_vs_dense"] = moe_rows
        costs = _step_costs(df)
        if costs:
            md += ["\n## Step cost relative to AdamW\n",
                   ("Median logged tokens/s of each arm's runs (compilation left out). Two "
                    "runs share the 2 cores at a time, so these ratios carry the machine's "
                    "noise; `benchmarks/optimizer_step.py` times the optimizer updates side "
                    "by side in one process.\n"), markdown_table(costs),
                   "\n![step cost](step_cost.png)\n"]
            out["plots"] += [p for p in _plot_costs(costs, sweep_dir / "step_cost")
                             if p.endswith(".png")]
            result["step_costs"] = costs
        clip = [{"run": r["run"], "clipped heads (mean frac)":
                 _metric(r["run_dir"], "qk_clip/clipped_frac", "mean"),
                 "max logit (max)": _metric(r["run_dir"], "qk_clip/max_logit", "max")}
                for _, r in df[df["arm"] == "muonclip"].iterrows()]
        if clip:
            md += ["\n## MuonClip: how often the clip acted\n", markdown_table(clip)]
            result["qk_clip"] = clip
        swept = lr_info.get("rung") if lr_info else None
        fixed_lrs = sorted(set(df.loc[df["model"] != swept, "lr"].astype(float)))
        md += _verdicts(size_rows, moe_rows, lr_info, fixed_lrs)
    md += ["\n## Runs\n", markdown_table([
        {"run": r["name"], "status": r["status"],
         "val loss": (r["summary"] or {}).get("final_val_loss"),
         "wall (s)": (r["summary"] or {}).get("wall_time_s")}
        for r in runs.to_dict("records")])]
    out["report"].write_text("\n".join(md) + "\n")
    (sweep_dir / "report.json").write_text(json.dumps(result, indent=2, default=_json))
    return out


def _json(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item() if not (isinstance(v, np.floating) and math.isnan(v)) else None
    return str(v)
