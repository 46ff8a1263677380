"""``python -m jaxlab.launch status``: the sweep's runs from its store, with live steps of
running runs (from their ``metrics.jsonl``) and a compute-weighted progress bar."""

from __future__ import annotations

import time

from jaxlab.launch.expand import Plan
from jaxlab.launch.runner import store_of
from jaxlab.launch.table import duration, human, last_metrics, render

ORDER = ("done", "running", "failed", "diverged", "interrupted", "pending")


def bar(fraction: float, width: int = 40) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    full = round(fraction * width)
    return "[" + "#" * full + "." * (width - full) + f"] {100 * fraction:5.1f}%"


def status_text(plan: Plan) -> tuple[str, bool]:
    """(the status table, True when every run is finished)."""
    rows = {r["run_id"]: r for r in store_of(plan).rows()}
    axes = [a for f in plan.spec.factors for a in f]
    header = ["run", *axes, "status", "step", "train", "val", "wall"]
    lines, counts = [], {s: 0 for s in ORDER}
    done_flops = total_flops = 0.0
    for run in plan.runs:
        r = rows.get(run.run_id) or {"status": "pending"}
        status = r["status"]
        counts[status] = counts.get(status, 0) + 1
        steps = int(run.figure("steps"))
        step = r.get("step") or 0
        train, val, wall = r.get("final_train_loss"), r.get("final_val_loss"), r.get("wall_time_s")
        if status == "running":
            m = last_metrics(plan.run_dir(run)) or {}
            step, train, val = m.get("step", 0), m.get("train_loss"), m.get("val_loss", val)
        flops_per_step = run.figure("train_flops") / max(steps, 1)
        total_flops += run.figure("train_flops")
        done_flops += flops_per_step * (steps if status in ("done", "diverged") else step)
        lines.append([run.name, *(dict(run.labels)[a] for a in axes), status,
                      f"{step}/{steps}",
                      f"{train:.4f}" if isinstance(train, float) else "-",
                      f"{val:.4f}" if isinstance(val, float) else "-",
                      duration(wall) if isinstance(wall, (int, float)) else "-"])
    summary = "  ".join(f"{s} {counts[s]}" for s in ORDER if counts.get(s))
    text = "\n".join([
        f"sweep {plan.sweep_dir} ({len(plan.runs)} runs)",
        render(header, lines),
        f"{summary}",
        (f"compute {bar(done_flops / total_flops if total_flops else 0.0)} of "
         f"{human(total_flops, 'FLOP')}"),
    ])
    finished = counts["done"] + counts["diverged"] == len(plan.runs)
    return text, finished


def watch(plan: Plan, every_s: float = 0.0, out=print) -> None:
    """Prints the status once, or every ``every_s`` seconds until all runs finished."""
    while True:
        text, finished = status_text(plan)
        if every_s:
            out("\033[2J\033[H" + text)  # clear the screen: a live table
        else:
            out(text)
        if not every_s or finished:
            return
        time.sleep(every_s)
