"""Analysis of the TrasMuon stability study (arXiv 2602.13498's claims: faster convergence
than Muon and AdamW, and stability without warmup).

Called by ``python -m jaxlab.launch report --sweep experiments/trasmuon_stability/
sweep_lm.gin --preset cpu`` (or ``sweep_vision.gin``) with the sweep's rows. Per warmup
(0 and 5%) and arm: the final validation metric against peak lr (mean over seeds: loss
for the LM, accuracy for the ViT), the stable basin (lr range within 0.05 nats, or 1
accuracy point, of the arm's best: :func:`jaxlab.scaling.lr_sensitivity.stable_basin`),
diverged runs, and steps to a target train loss at each arm's best lr; TrasMuon's
energy-ratio and
clip-factor histograms over training (its ``trasmuon/*_hist_*`` diagnostics) and how
often clipping fired during loss spikes. Writes ``report.md``, ``report.json`` and the
plots (PNG and SVG) into the sweep directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from jaxlab.scaling.critical_batch import steps_to_target
from jaxlab.scaling.lr_sensitivity import loss_spikes, stable_basin
from jaxlab.scaling.plots import save_figure
from jaxlab.scaling.report import markdown_table, provenance, provenance_markdown
from jaxlab.train.metrics import read_metrics

ARMS = ("adamw", "muon", "trasmuon", "trasmuon_noclip")
COLORS = {"adamw": "tab:blue", "muon": "tab:orange", "trasmuon": "tab:green",
          "trasmuon_noclip": "tab:olive"}
WARMUPS = {"w0": "no warmup", "w5": "5% warmup"}
SPIKE_JUMP = 0.05        # nats: a logged train loss this much above the previous one
BURST_RATIO = 2.0        # a feature "bursts" when its energy is >= 2x the reference
FIRED_FRACTION = 0.05    # clipping "fired" when >= 5% of all features burst


@dataclasses.dataclass(frozen=True)
class Metric:
    """The validation figure a task is judged by. ``score`` is lower-is-better (the loss,
    or minus the accuracy); ``show`` turns a score back into the figure."""

    key: str
    label: str
    tolerance: float
    higher_is_better: bool
    margin: str

    def score(self, row) -> float:
        x = row[self.key]
        return -x if self.higher_is_better else x

    def show(self, score: float) -> float:
        return -score if self.higher_is_better else score


LOSS = Metric("val", "final validation loss (nats)", 0.05, False, "0.05 nats")
ACCURACY = Metric("acc", "final validation accuracy", 0.01, True, "1 accuracy point")


def metric_of(rows) -> Metric:
    """Accuracy when the runs report one (classification), else the loss."""
    return ACCURACY if any(math.isfinite(r["acc"]) for r in rows) else LOSS


def run_rows(runs) -> list[dict]:
    """One dict per run: labels, status, final losses, chance loss and its run_dir."""
    out = []
    for r in runs.to_dict("records"):
        s = r["summary"] if isinstance(r.get("summary"), dict) else {}
        model = s.get("model") or {}
        classes = model.get("num_classes") or model.get("vocab_size") or 256
        val, acc = s.get("final_val_loss"), s.get("final_val_accuracy")
        finite = lambda x: x if x is not None and math.isfinite(x) else math.nan  # noqa: E731
        out.append({"arm": r.get("axis.arm"), "warmup": r.get("axis.warmup"),
                    "seed": r.get("axis.seed"), "lr": s.get("lr"), "status": r["status"],
                    "val": finite(val), "acc": finite(acc), "chance": math.log(classes),
                    "run_dir": r["run_dir"], "name": r["name"]})
    return out


def _is_bad(row) -> bool:
    """Diverged (non-finite loss stopped it) or never better than a uniform guess."""
    return row["status"] == "diverged" or not (row["val"] < row["chance"])


def lr_grid(rows, arm, warmup, metric: Metric = LOSS):
    """``lrs (K,)``, the seed-mean score ``(K,)`` (``metric.score``: lower is better; inf
    where any seed went bad) and the per-seed scores ``{lr: [score]}`` of one arm at one
    warmup."""
    per: dict[float, list[float]] = {}
    for r in rows:
        if r["arm"] == arm and r["warmup"] == warmup and r["status"] in ("done", "diverged"):
            per.setdefault(r["lr"], []).append(math.inf if _is_bad(r) else metric.score(r))
    lrs = np.array(sorted(per))
    mean = np.array([np.mean(per[lr]) for lr in lrs])
    return lrs, mean, per


def curve(run_dir, key="train_loss"):
    recs = [r for r in read_metrics(Path(run_dir) / "metrics.jsonl") if key in r]
    return (np.array([r["step"] for r in recs], float),
            np.array([float(r[key]) if isinstance(r[key], (int, float)) else math.nan
                      for r in recs]), recs)


def best_lr_runs(rows, basins):
    """``{(warmup, arm): [run rows at the arm's best lr]}`` (every seed)."""
    out = {}
    for (w, arm), b in basins.items():
        out[(w, arm)] = [r for r in rows if r["arm"] == arm and r["warmup"] == w
                         and r["lr"] == b.best_lr and not _is_bad(r)]
    return out


def convergence(best_runs, warmups, arms):
    """Target per warmup = the highest of the arms' best final train losses (every arm
    reaches it); steps to it at each arm's best lr, mean over seeds."""
    out = {}
    for w in warmups:
        finals = {}
        for arm in arms:
            ends = [curve(r["run_dir"])[1] for r in best_runs.get((w, arm), [])]
            ends = [e[-1] for e in ends if e.size]
            if ends:
                finals[arm] = float(np.mean(ends))
        if not finals:
            continue
        target = max(finals.values())
        steps = {}
        for arm in finals:
            hits = [steps_to_target(*curve(r["run_dir"])[:2], target)
                    for r in best_runs[(w, arm)]]
            steps[arm] = float(np.nanmean(hits)) if np.isfinite(hits).any() else math.nan
        out[w] = {"target": target, "steps": steps, "final_train": finals}
    return out


def spike_stats(rows):
    """Over every TrasMuon (clipping on) run: logged points where the train loss spiked,
    and whether the trust region fired there (>= 5% of features at r >= 2)."""
    from jaxlab.optim.trasmuon import RATIO_EDGES

    first_burst_bin = RATIO_EDGES.index(BURST_RATIO) + 1
    n_bins = len(RATIO_EDGES) + 1
    spikes = fired_at_spikes = points = fired_elsewhere = 0
    burst_spike, burst_other, clip_spike, clip_other = [], [], [], []
    for r in rows:
        if r["arm"] != "trasmuon" or r["status"] not in ("done", "diverged"):
            continue
        _, loss, recs = curve(r["run_dir"])
        if not recs or "trasmuon/ratio_hist_00" not in recs[0]:
            continue
        burst = np.array([sum(float(x.get(f"trasmuon/ratio_hist_{i:02d}", 0.0))
                              for i in range(first_burst_bin, n_bins)) for x in recs])
        clip = np.array([float(x.get("trasmuon/clip_mean", math.nan)) for x in recs])
        is_spike = loss_spikes(loss, SPIKE_JUMP)
        fired = burst >= FIRED_FRACTION
        spikes += int(is_spike.sum())
        fired_at_spikes += int((fired & is_spike).sum())
        points += int((~is_spike).sum())
        fired_elsewhere += int((fired & ~is_spike).sum())
        burst_spike += list(burst[is_spike])
        burst_other += list(burst[~is_spike])
        clip_spike += list(clip[is_spike])
        clip_other += list(clip[~is_spike])
    mean = lambda v: float(np.nanmean(v)) if len(v) else math.nan  # noqa: E731
    return {"spikes": spikes, "fired_at_spikes": fired_at_spikes, "other_points": points,
            "fired_elsewhere": fired_elsewhere, "burst_frac_at_spikes": mean(burst_spike),
            "burst_frac_elsewhere": mean(burst_other), "clip_mean_at_spikes": mean(clip_spike),
            "clip_mean_elsewhere": mean(clip_other)}


def _plot_loss_vs_lr(rows, basins, warmups, arms, stem, metric: Metric):
    """Seed-mean metric against peak lr per arm (seeds faint, diverged as x at the worst
    edge), one panel per warmup, with each arm's basin as a bar at its threshold."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(5.2 * len(warmups), 4.2), layout="constrained")
    axes = fig.subplots(1, len(warmups), sharey=True, squeeze=False)[0]
    scores = [metric.score(r) for r in rows if not _is_bad(r)]
    best = min(scores) if scores else 0.0
    worst = min(max(scores), best + 30 * metric.tolerance) if scores else 1.0
    lo, hi = sorted((metric.show(best - metric.tolerance), metric.show(worst)))
    edge = metric.show(worst)  # where diverged runs are drawn
    for ax, w in zip(axes, warmups):
        for arm in arms:
            lrs, mean, per = lr_grid(rows, arm, w, metric)
            if not lrs.size:
                continue
            c = COLORS.get(arm)
            ok = np.isfinite(mean)
            ax.plot(lrs[ok], [metric.show(m) for m in mean[ok]], "o-", color=c, label=arm)
            for lr, vals in per.items():
                v = [metric.show(x) for x in vals if math.isfinite(x)]
                ax.plot([lr] * len(v), v, ".", color=c, alpha=0.35)
                if len(v) < len(vals):
                    ax.plot([lr], [edge], "x", color=c, ms=9, mew=2)
            b = basins.get((w, arm))
            if b is not None:
                ax.plot([b.lo, b.hi], [metric.show(b.best_loss + b.tolerance)] * 2, "-",
                        color=c, lw=5, alpha=0.35, solid_capstyle="butt")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(lo - metric.tolerance, hi + metric.tolerance)
        ax.set_xlabel("peak learning rate")
        ax.set_title(f"{WARMUPS.get(w, w)}: {metric.label}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric.label)
    axes[0].legend(fontsize=8)
    fig.supxlabel(f"bars: basin within {metric.margin} of each arm's best; "
                  "x: a diverged (or never-learning) run", fontsize=8)
    return save_figure(fig, stem)


def _plot_curves(best_runs, conv, warmups, arms, stem):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(warmups), 4.2), layout="constrained")
    axes = fig.subplots(1, len(warmups), sharey=True, squeeze=False)[0]
    for ax, w in zip(axes, warmups):
        for arm in arms:
            for k, r in enumerate(best_runs.get((w, arm), [])):
                s, loss, _ = curve(r["run_dir"])
                ax.plot(s, loss, color=COLORS.get(arm), alpha=0.9 if k == 0 else 0.4,
                        label=f"{arm} (lr {r['lr']:.3g})" if k == 0 else None)
        if w in conv:
            ax.axhline(conv[w]["target"], ls="--", color="k", lw=0.8, label="target")
        ax.set_xlabel("step")
        ax.set_title(f"{WARMUPS.get(w, w)}: train loss at each arm's best lr")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    tail = [c["target"] for c in conv.values()]
    if tail:
        axes[0].set_ylim(min(tail) - 0.3, min(tail) + 2.0)
    axes[0].set_ylabel("train loss (nats)")
    return save_figure(fig, stem)


def _plot_histograms(best_runs, warmups, stem):
    """Heat maps (step x bin) of TrasMuon's r and c histograms at its best lr, seed 0."""
    from matplotlib.figure import Figure

    from jaxlab.optim.trasmuon import CLIP_EDGES, RATIO_EDGES

    fig = Figure(figsize=(5.6 * len(warmups), 7.0), layout="constrained")
    axes = fig.subplots(2, len(warmups), squeeze=False)
    drew = False
    for col, w in enumerate(warmups):
        runs = best_runs.get((w, "trasmuon"), [])
        if not runs:
            continue
        _, _, recs = curve(runs[0]["run_dir"])
        recs = [x for x in recs if "trasmuon/ratio_hist_00" in x]
        if not recs:
            continue
        steps = np.array([x["step"] for x in recs])
        for row, (name, edges) in enumerate((("ratio", RATIO_EDGES), ("clip", CLIP_EDGES))):
            h = np.array([[x[f"trasmuon/{name}_hist_{i:02d}"] for i in range(len(edges) + 1)]
                          for x in recs]).T
            ax = axes[row, col]
            im = ax.imshow(h, aspect="auto", origin="lower", cmap="viridis", vmin=0,
                           extent=(steps[0], steps[-1], -0.5, len(edges) + 0.5))
            labels = [f"<{edges[0]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:])]
            labels += [f">={edges[-1]:g}"]
            ax.set_yticks(range(len(labels)))
            ax.set_yticklabels(labels, fontsize=7)
            ax.set_xlabel("step")
            ax.set_ylabel("energy ratio r" if name == "ratio" else "clip factor c")
            ax.set_title(f"TrasMuon lr {runs[0]['lr']:.3g}, {WARMUPS.get(w, w)}", fontsize=9)
            fig.colorbar(im, ax=ax, label="fraction of features")
            drew = True
    return save_figure(fig, stem) if drew else []


def _fmt(x, spec=".4f"):
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _claims(basins, conv, warmups, metric: Metric = LOSS):
    """Plain sentences: did TrasMuon converge faster, and is its basin wider without warmup?"""
    lines = []
    for w in warmups:
        c = conv.get(w)
        if not c or "trasmuon" not in c["steps"]:
            continue
        t = c["steps"]["trasmuon"]
        rivals = {a: c["steps"][a] for a in ("muon", "adamw") if a in c["steps"]}
        faster = all(math.isfinite(t) and (not math.isfinite(s) or t < s) for s in rivals.values())
        lines.append(
            f"- **Faster convergence ({WARMUPS[w]}): {'held' if faster else 'did not hold'}.** "
            f"Steps to train loss {c['target']:.3f} at each arm's best lr: TrasMuon "
            f"{_fmt(t, '.0f')}, " + ", ".join(f"{a} {_fmt(s, '.0f')}" for a, s in rivals.items())
            + ".")
    if "w0" in warmups and ("w0", "trasmuon") in basins:
        b = basins[("w0", "trasmuon")]
        rivals = {a: basins[("w0", a)] for a in ("muon", "adamw") if ("w0", a) in basins}
        wider = all(b.width_decades > r.width_decades for r in rivals.values())
        bounded = not any(x.open_lo or x.open_hi for x in (b, *rivals.values()))
        lines.append(
            f"- **Wider stable basin without warmup: {'held' if wider else 'did not hold'}.** "
            f"Basin within {metric.margin} of the best, no warmup: TrasMuon {b.describe()}, "
            + ", ".join(f"{a} {r.describe()}" for a, r in rivals.items()) + "."
            + ("" if bounded else " (`>=`: the lr grid does not bracket that basin, so the "
               "comparison is between lower bounds.)"))
        if ("w5", "trasmuon") in basins:
            def cost(a):  # how much worse the best point is without warmup, in the metric
                d = basins[("w0", a)].best_loss - basins[("w5", a)].best_loss
                return f"{100 * d:+.1f} points" if metric.higher_is_better else f"{d:+.4f} nats"

            lines.append(f"- Removing the warmup cost TrasMuon {cost('trasmuon')} at its best "
                         "lr (+ is worse); " + ", ".join(
                             f"{a} {cost(a)}" for a in ("muon", "adamw")
                             if ("w0", a) in basins and ("w5", a) in basins) + ".")
    return lines


def report(sweep_dir, runs) -> dict:
    """Writes ``report.md``, ``report.json`` and plots into ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    rows = run_rows(runs)
    arms = [a for a in ARMS if any(r["arm"] == a for r in rows)]
    warmups = [w for w in WARMUPS if any(r["warmup"] == w for r in rows)]
    metric = metric_of(rows)
    basins, table = {}, []
    for w in warmups:
        for arm in arms:
            lrs, mean, per = lr_grid(rows, arm, w, metric)
            mine = [r for r in rows if r["arm"] == arm and r["warmup"] == w]
            finished = [r for r in mine if r["status"] in ("done", "diverged")]
            entry = {"warmup": WARMUPS[w], "arm": arm, "runs": len(finished),
                     "diverged (NaN)": sum(r["status"] == "diverged" for r in finished),
                     "bad (diverged or >= chance)": sum(_is_bad(r) for r in finished)}
            if len(finished) < len(mine):
                entry["unfinished"] = len(mine) - len(finished)
            if lrs.size and np.isfinite(mean).any():
                b = basins[(w, arm)] = stable_basin(lrs, mean, metric.tolerance)
                seeds = [x for x in per[b.best_lr] if math.isfinite(x)]
                spread = (max(seeds) - min(seeds)) / 2 if len(seeds) > 1 else None
                at_best = [r for r in rows if r["arm"] == arm and r["warmup"] == w
                           and r["lr"] == b.best_lr and not _is_bad(r)]
                entry.update({"best lr": f"{b.best_lr:.3g}",
                              f"best {metric.label.replace('final ', '')}":
                                  _fmt(metric.show(b.best_loss)),
                              "seed spread (+-)": _fmt(spread)})
                if metric is not LOSS:
                    entry["val loss there"] = _fmt(float(np.mean([r["val"] for r in at_best])))
                entry["basin"] = b.describe()
            table.append(entry)
    best_runs = best_lr_runs(rows, basins)
    conv = convergence(best_runs, warmups, arms)
    spikes = spike_stats(rows)
    prov = provenance(runs)
    plots = []
    plots += _plot_loss_vs_lr(rows, basins, warmups, arms, sweep_dir / "loss_vs_lr", metric)
    plots += _plot_curves(best_runs, conv, warmups, arms, sweep_dir / "loss_curves")
    plots += _plot_histograms(best_runs, warmups, sweep_dir / "trasmuon_histograms")

    md = ["# TrasMuon stability: lr sensitivity, warmup, convergence\n",
          f"Sweep `{sweep_dir.name}`: {len(rows)} runs "
          f"({sum(r['status'] == 'done' for r in rows)} done), written "
          f"{time.strftime('%Y-%m-%d %H:%M')}. Judged by the {metric.label} on the held-out "
          "split (mean over seeds). TrasMuon is jaxlab's reconstruction of arXiv 2602.13498 "
          "(only its abstract is public; `docs/methods.md`).\n",
          "## Claims at this scale\n", *_claims(basins, conv, warmups, metric), "",
          "## Per arm\n", markdown_table(table),
          f"Basin: the peak-lr range whose seed-mean {metric.label} is within "
          f"{metric.margin} of the arm's best on the grid, interpolated in log lr; `>=` "
          "where it reaches the grid's end. Bad: diverged, or a final validation loss no "
          "better than a uniform guess.\n",
          "## Steps to a target loss\n"]
    for w, c in conv.items():
        md.append(f"- {WARMUPS[w]}: target {c['target']:.4f} (the highest of the arms' best "
                  "final train losses); " + ", ".join(
                      f"{a} {_fmt(s, '.0f')}" for a, s in c["steps"].items()))
    md += ["", "## TrasMuon's trust region during loss spikes\n",
           f"Over every TrasMuon run (clipping on), a logged point is a spike when its train "
           f"loss rose more than {SPIKE_JUMP} nats over the previous point; clipping fired "
           f"when at least {FIRED_FRACTION:.0%} of all features had energy ratio r >= "
           f"{BURST_RATIO:g}.\n",
           markdown_table([
               {"points": "spikes", "count": spikes["spikes"], "fired": spikes["fired_at_spikes"],
                "mean frac r>=2": _fmt(spikes["burst_frac_at_spikes"]),
                "mean c": _fmt(spikes["clip_mean_at_spikes"])},
               {"points": "other", "count": spikes["other_points"],
                "fired": spikes["fired_elsewhere"],
                "mean frac r>=2": _fmt(spikes["burst_frac_elsewhere"]),
                "mean c": _fmt(spikes["clip_mean_elsewhere"])}])]
    md += ["## Plots\n"] + [f"![{Path(p).stem}]({Path(p).name})\n" for p in plots
                            if p.endswith(".png")]
    md += ["## Machine\n", provenance_markdown(prov)]
    (sweep_dir / "report.md").write_text("\n".join(md) + "\n")
    result = {"runs": len(rows), "metric": metric.label, "table": table,
              "basins": {f"{w}/{a}": {**b.__dict__, "width_decades": b.width_decades,
                                      "best_value": metric.show(b.best_loss)}
                         for (w, a), b in basins.items()},
              "convergence": conv, "spikes": spikes, "provenance": prov}
    (sweep_dir / "report.json").write_text(json.dumps(result, indent=2, default=str))
    lines = _claims(basins, conv, warmups, metric) or ["no claim could be checked (too few runs)"]
    return {"report": sweep_dir / "report.md", "plots": [p for p in plots if p.endswith(".png")],
            "lines": [line.replace("**", "") for line in lines]}
