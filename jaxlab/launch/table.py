"""Plain-text tables of a sweep: the planned runs (``--dry_run``) and the live status."""

from __future__ import annotations

import heapq
import json
from pathlib import Path

from jaxlab.launch.expand import Plan


def human(x: float, unit: str = "") -> str:
    """3 significant digits with a K/M/G/T/P/E suffix: ``human(2.5e12, 'FLOP')``."""
    for div, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"),
                        (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}{unit}"
    return f"{x:.3g}{unit}"


def duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def render(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells):
        out = []
        for c, w in zip(cells, widths):
            c = str(c)
            num = c[:1].isdigit() or c[:1] in "-." and c[1:2].isdigit()
            out.append(c.rjust(w) if num else c.ljust(w))
        return "  ".join(out).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def makespan(durations: list[float], workers: int) -> float:
    """Wall time of running ``durations`` in order on ``workers`` parallel workers."""
    loads = [0.0] * max(1, workers)
    for d in durations:
        heapq.heapreplace(loads, loads[0] + d)
    return max(loads)


def plan_table(plan: Plan, workers: int = 1) -> str:
    """The run table of ``plan`` with sizes, tokens, FLOPs and estimated time."""
    axes = [a for f in plan.spec.factors for a in f]
    header = ["#", "run", *axes, "N", "steps", "tokens", "FLOPs", "est"]
    rows = []
    for i, r in enumerate(plan.runs):
        labels = dict(r.labels)
        rows.append([str(i), r.name, *(labels[a] for a in axes),
                     human(r.figure("params_non_embedding")), str(int(r.figure("steps"))),
                     human(r.figure("tokens")), human(r.figure("train_flops")),
                     duration(r.figure("est_time_s"))])
    est = [r.figure("est_time_s") for r in plan.runs]
    total_flops = sum(r.figure("train_flops") for r in plan.runs)
    foot = (f"{len(plan.runs)} runs, {human(total_flops, 'FLOP')} in all; estimated "
            f"{duration(makespan(est, workers))} with {workers} worker(s) "
            f"({duration(sum(est))} serial). Directory: {plan.sweep_dir}")
    return render(header, rows) + "\n" + foot


def last_metrics(run_dir: str | Path) -> dict | None:
    """The last line of ``run_dir/metrics.jsonl`` (cheap: reads the file's tail)."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 8192))
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None
