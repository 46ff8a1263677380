"""Report of the WSD cooldown study (Hagele et al., arXiv 2405.18392).

Called by ``python -m jaxlab.launch report --sweep experiments/wsd_cooldown/sweep.gin``
with the sweep's rows from its results store. Writes ``report.md``, ``report.json`` and
three figures (PNG and SVG) into the sweep directory:

* ``loss_vs_lr``: final validation loss against peak lr for cosine, the three WSD
  cooldown shapes and the constant lr (figure 3 of the paper);
* ``branches``: validation loss against tokens of the constant-lr run (raw, EMA, SWA) at
  the branches' best lr, the cooldowns branched from it and separate cosine runs of the
  same lengths, each at its own best lr (figures 4 and 7);
* ``lr_schedules``: the learning rate of every arm at one lr, from the runs' metrics.

The claims checked, each with a plain verdict: WSD with a 20% 1-sqrt cooldown matches
cosine at equal tokens; 1-sqrt is at least as good as linear; cooldowns branched from one
constant-lr run give every length's loss for less compute than separate cosine runs, and
match them; EMA or SWA of the constant run improve on it but do not replace a cooldown.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from jaxlab.scaling.plots import save_figure
from jaxlab.scaling.report import markdown_table, verdict, write_study_report
from jaxlab.train.metrics import read_metrics

SCHEDULES = ("cosine", "wsd_linear", "wsd_1sqrt", "wsd_cosine", "constant")
MATCH_NATS = 0.01   # "matches": within this of each other (about the seed spread at d128)
PAPER = {
    "wsd_vs_cosine": "WSD with a 20% cooldown matches cosine at equal tokens (fig. 3-4)",
    "shape": "a 1-sqrt cooldown beats a linear one (fig. 5)",
    "branches": "cooldowns branched from one constant-lr run match separate cosine runs "
                "of each length, for the compute of one run plus the cooldowns (fig. 7)",
    "averaging": "EMA / SWA of a constant-lr run improve on it but do not match a "
                 "cooldown (fig. 8)",
}


def run_rows(runs) -> list[dict]:
    """One dict per run: arm, lr, status, steps, loss, averaged loss, cost, run dir."""
    out = []
    for r in runs.to_dict("records"):
        s = r["summary"] if isinstance(r.get("summary"), dict) else {}
        num = lambda k: float(s[k]) if s.get(k) is not None else math.nan  # noqa: E731
        out.append({"arm": r.get("axis.arm"), "lr": num("lr"), "lr_label": r.get("axis.lr"),
                    "status": r["status"], "steps": s.get("steps"),
                    "tokens": num("tokens_seen"), "flops_per_token": num("flops_per_token"),
                    "batch_tokens": num("batch_tokens"), "loss": num("final_val_loss"),
                    "loss_avg": num("final_val_loss_avg"), "run_dir": r.get("run_dir"),
                    "name": r.get("name"), "wall_s": num("wall_time_s")})
    return out


def _ok(r: dict) -> bool:
    return r["status"] == "done" and math.isfinite(r["loss"])


def best_of(rows: list[dict], arm: str) -> dict | None:
    """The finished run of ``arm`` with the lowest validation loss (None if none)."""
    mine = [r for r in rows if r["arm"] == arm and _ok(r)]
    return min(mine, key=lambda r: r["loss"]) if mine else None


def branch_family(rows: list[dict]) -> dict:
    """The branched runs against separate cosine runs of the same lengths.

    Each length's cosine run and the branch family (constant run + its branches) are
    taken at their own best lr (the family's lr: lowest mean loss over its branches).
    Compute in FLOPs: a cosine run costs its tokens; the family costs the constant run
    up to its last branch point plus every cooldown (the paper's accounting, fig. 7).
    """
    branches = sorted({r["arm"] for r in rows if r["arm"].startswith("branch_")},
                      key=lambda a: int(a.split("_")[1]))
    lrs = sorted({r["lr"] for r in rows if r["arm"] in branches and _ok(r)})
    if not branches or not lrs:
        return {}

    def branch(arm, lr):
        return next((r for r in rows if r["arm"] == arm and r["lr"] == lr and _ok(r)), None)

    complete = [lr for lr in lrs if all(branch(a, lr) for a in branches)]
    if not complete:
        return {}
    lr = min(complete, key=lambda x: np.mean([branch(a, x)["loss"] for a in branches]))
    points, family_flops, cosine_flops = [], 0.0, 0.0
    last_branch_point = 0.0
    for arm in branches:
        b = branch(arm, lr)
        cos_arm = "cosine" if arm == "branch_100" else arm.replace("branch", "cosine")
        c = best_of(rows, cos_arm)
        tokens = b["tokens"]
        cooldown = 0.2 * tokens
        last_branch_point = max(last_branch_point, tokens - cooldown)
        family_flops += b["flops_per_token"] * cooldown
        if c is not None:
            cosine_flops += c["flops_per_token"] * c["tokens"]
        points.append({"length": arm.split("_")[1] + "%", "tokens": tokens,
                       "branch_loss": b["loss"], "branch_ema_loss": b["loss_avg"],
                       "cosine_loss": c["loss"] if c else math.nan,
                       "cosine_lr": c["lr"] if c else math.nan,
                       "gap": b["loss"] - c["loss"] if c else math.nan})
    family_flops += branch(branches[-1], lr)["flops_per_token"] * last_branch_point
    return {"lr": lr, "points": points, "family_flops": family_flops,
            "cosine_flops": cosine_flops,
            "saved_fraction": 1.0 - family_flops / cosine_flops if cosine_flops else math.nan}


def _curve(run_dir: str | None, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, ``key``) of the metric lines of a run that have ``key``."""
    path = Path(run_dir or "") / "metrics.jsonl"
    if not path.exists():
        return np.array([]), np.array([])
    pts = [(m["tokens"], m[key]) for m in read_metrics(path) if key in m and "tokens" in m]
    return (np.array([p[0] for p in pts]), np.array([p[1] for p in pts])) if pts else \
        (np.array([]), np.array([]))


def _plot_loss_vs_lr(rows: list[dict], stem: Path) -> list[str]:
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    ax.set_xscale("log")
    for i, arm in enumerate(SCHEDULES):
        pts = sorted((r["lr"], r["loss"]) for r in rows if r["arm"] == arm and _ok(r))
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, marker="o", ms=4, lw=1.2, color=f"C{i}", label=arm,
                    ls="--" if arm == "constant" else "-")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final validation loss (nats/byte)")
    ax.set_title("Schedules at equal tokens")
    ax.legend(fontsize=8)
    return save_figure(fig, stem)


def _plot_branches(rows: list[dict], fam: dict, stem: Path) -> list[str]:
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    lr = fam["lr"]
    for arm, key, label, style in (("constant", "val_loss", "constant lr", "-"),
                                   ("constant", "val_loss_avg", "constant, EMA", ":"),
                                   ("constant_swa", "val_loss_avg", "constant, SWA", "-.")):
        run = next((r for r in rows if r["arm"] == arm and r["lr"] == lr), None)
        x, y = _curve(run and run["run_dir"], key)
        if len(x):
            ax.plot(x, y, style, color="0.35", lw=1.2, label=f"{label} (lr {lr:g})")
    p = fam["points"]
    ax.plot([q["tokens"] for q in p], [q["branch_loss"] for q in p], "o-", color="C2",
            label=f"1-sqrt cooldowns branched (lr {lr:g})")
    ax.plot([q["tokens"] for q in p], [q["cosine_loss"] for q in p], "s--", color="C0",
            label="separate cosine runs (best lr each)")
    ax.set_xlabel("tokens")
    ax.set_ylabel("validation loss (nats/byte)")
    ax.set_title("One constant run + cooldowns vs separate cosine runs")
    ax.legend(fontsize=8)
    return save_figure(fig, stem)


def _plot_schedules(rows: list[dict], stem: Path) -> list[str]:
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    lr = sorted({r["lr"] for r in rows if _ok(r)})[len({r["lr"] for r in rows if _ok(r)}) // 2]
    for i, arm in enumerate(("cosine", "wsd_linear", "wsd_1sqrt", "wsd_cosine", "constant",
                             "branch_50")):
        run = next((r for r in rows if r["arm"] == arm and r["lr"] == lr and _ok(r)), None)
        x, y = _curve(run and run["run_dir"], "lr")
        if len(x):
            ax.plot(x, y, color=f"C{i}", lw=1.2, label=arm)
    ax.set_xlabel("tokens")
    ax.set_ylabel("learning rate")
    ax.set_title(f"The schedules at peak lr {lr:g} (from the runs' metrics)")
    ax.legend(fontsize=8)
    return save_figure(fig, stem)


def claims(rows: list[dict], fam: dict) -> dict[str, dict]:
    """Each claim of :data:`PAPER` with our figures and whether it held (True / False,
    or ``"noise"`` where a difference of one sign or the other is within the seed
    noise :data:`MATCH_NATS`)."""
    best = {a: best_of(rows, a) for a in (*SCHEDULES, "constant_swa")}
    out = {}
    cos, w1, wl = best["cosine"], best["wsd_1sqrt"], best["wsd_linear"]
    if cos and w1:
        d = w1["loss"] - cos["loss"]
        out["wsd_vs_cosine"] = {"held": bool(d <= MATCH_NATS), "text": (
            f"WSD 1-sqrt {w1['loss']:.4f} (lr {w1['lr']:g}) vs cosine {cos['loss']:.4f} "
            f"(lr {cos['lr']:g}): {d:+.4f} nats")}
    if w1 and wl:
        d = w1["loss"] - wl["loss"]
        held = "noise" if abs(d) <= MATCH_NATS else bool(d < 0)
        out["shape"] = {"held": held, "text": (
            f"1-sqrt {w1['loss']:.4f} vs linear {wl['loss']:.4f} ({d:+.4f} nats); cosine-"
            f"shaped cooldown {best['wsd_cosine']['loss']:.4f}" if best["wsd_cosine"]
            else f"1-sqrt {w1['loss']:.4f} vs linear {wl['loss']:.4f} ({d:+.4f} nats)")}
    if fam:
        worst = max(q["gap"] for q in fam["points"])
        out["branches"] = {"held": bool(worst <= MATCH_NATS and fam["saved_fraction"] > 0),
                           "text": (f"largest gap branch - cosine {worst:+.4f} nats over "
                                    f"{len(fam['points'])} lengths; the family costs "
                                    f"{fam['family_flops']:.3g} FLOPs vs "
                                    f"{fam['cosine_flops']:.3g} for the cosine runs "
                                    f"({100 * fam['saved_fraction']:.0f}% saved)")}
        lr = fam["lr"]
        const = next((r for r in rows if r["arm"] == "constant" and r["lr"] == lr and _ok(r)),
                     None)
        swa = next((r for r in rows if r["arm"] == "constant_swa" and r["lr"] == lr
                    and _ok(r)), None)
        cooled = next((q for q in fam["points"] if q["length"] == "100%"), None)
        if const and swa and cooled:
            ema_l, swa_l, raw = const["loss_avg"], swa["loss_avg"], const["loss"]
            avg = min(ema_l, swa_l)
            gap = avg - cooled["branch_loss"]
            held = (False if avg >= raw - MATCH_NATS else "noise" if abs(gap) <= MATCH_NATS
                    else bool(gap > 0))
            out["averaging"] = {"held": held, "text": (
                f"at lr {lr:g}: constant {raw:.4f}, EMA {ema_l:.4f}, SWA {swa_l:.4f}, "
                f"cooled down {cooled['branch_loss']:.4f}")}
    for key in PAPER:
        out.setdefault(key, {"held": None, "text": "runs missing"})
    return out


def report(sweep_dir, runs) -> dict:
    """Writes the report into ``sweep_dir``; returns its paths and summary lines."""
    sweep_dir = Path(sweep_dir)
    rows = run_rows(runs)
    done = [r for r in rows if _ok(r)]
    excluded = [r for r in rows if not _ok(r)]
    fam = branch_family(rows)
    verdicts = claims(rows, fam)
    out: dict = {"report": sweep_dir / "report.md", "plots": [], "lines": []}
    for key, v in verdicts.items():
        out["lines"].append(f"{PAPER[key]}: {verdict(v['held'], MATCH_NATS)} ({v['text']})")
    md = ["# WSD cooldowns and branched cooldowns (arXiv 2405.18392)\n",
          f"Sweep `{sweep_dir.name}`, {len(rows)} runs ({len(done)} done), written "
          f"{time.strftime('%Y-%m-%d %H:%M')}. Loss: validation loss at the end of each run "
          f"(nats per byte); one seed, so differences under ~{MATCH_NATS} nats are noise.\n",
          "## Claims at this scale\n",
          *[f"- **{verdict(v['held'], MATCH_NATS)}**: {PAPER[k]}. Ours: {v['text']}."
            for k, v in verdicts.items()], ""]
    if done:
        paths = _plot_loss_vs_lr(done, sweep_dir / "loss_vs_lr")
        out["plots"] += paths
        md.append(f"![loss vs lr]({Path(paths[0]).name})\n")
    if fam:
        paths = _plot_branches(rows, fam, sweep_dir / "branches")
        out["plots"] += paths
        md += [f"![branches]({Path(paths[0]).name})\n",
               f"## Branched cooldowns (lr {fam['lr']:g}) vs cosine runs (best lr each)\n",
               markdown_table(fam["points"])]
    if done:
        paths = _plot_schedules(done, sweep_dir / "lr_schedules")
        out["plots"] += paths
        md.append(f"![schedules]({Path(paths[0]).name})\n")
    best = [{"arm": a, "best lr": b["lr"], "val loss": b["loss"], "val loss (avg)": b["loss_avg"]}
            for a in (*SCHEDULES, "constant_swa") if (b := best_of(rows, a))]
    md += ["## Best lr per arm\n", markdown_table(best)]
    grid = sorted({r["lr"] for r in rows})
    table = []
    for arm in dict.fromkeys(r["arm"] for r in rows):
        row = {"arm": arm}
        for lr in grid:
            r = next((x for x in rows if x["arm"] == arm and x["lr"] == lr), None)
            row[f"{lr:g}"] = (r["loss"] if _ok(r) else r["status"]) if r else ""
        table.append(row)
    md += ["## Validation loss, every run (columns: peak lr)\n", markdown_table(table)]
    result = {"runs": len(rows), "done": len(done), "claims": verdicts, "branches": fam,
         "best": best}
    write_study_report(sweep_dir, md, result, runs, excluded)
    return out
