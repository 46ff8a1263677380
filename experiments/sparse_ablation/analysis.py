"""Report of the sparse-training ablation (one size, S = 0.5, three seeds).

Called by ``python -m jaxlab.launch report --sweep experiments/sparse_ablation/sweep.gin``
with the sweep's rows from its results store. Writes ``report.md``, ``report.json`` and
``ablation.png`` / ``.svg`` (each arm's loss, mean and seeds, against its dense reference)
into the sweep directory.

Each arm changes one thing against its reference (:data:`ARMS`): the schedule (one-shot
against cubic 25-75%), the pattern (2:4 along fan-in against one-shot unstructured, as
N:M masks are set once; 16 x 16 blocks), the layer-wise distribution (ERK, arXiv
1911.11134), the N:M method (SR-STE, arXiv 2102.04010; AdamS, arXiv 2509.25996, against
magnitude 2:4) or the inner optimizer (Muon, arXiv 2502.16982). The table gives the mean
validation loss over seeds with its standard deviation, the gap to the same optimizer's
dense run, the gap to the reference with two standard errors of the seed-paired
difference, and the measured sparsity of the non-embedding weights as saved.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from jaxlab.scaling.plots import save_figure
from jaxlab.scaling.report import markdown_table, write_study_report

# arm -> (what it changes, the arm it changes it against)
ARMS = {
    "dense_adamw": ("dense, AdamW", None),
    "dense_muon": ("dense, Muon", None),
    "unstructured": ("magnitude, uniform, cubic 25-75% of steps, AdamW", "dense_adamw"),
    "unstructured_oneshot": ("one-shot at 25% of steps", "unstructured"),
    "nm_2of4": ("2:4 along fan-in (one-shot at 25%)", "unstructured_oneshot"),
    "block16": ("16 x 16 blocks", "unstructured"),
    "erk": ("ERK layer densities", "unstructured"),
    "srste_2of4": ("SR-STE: 2:4 masks every step", "nm_2of4"),
    "adams_2of4": ("AdamS (CAST)", "nm_2of4"),
    "unstructured_muon": ("Muon as the inner optimizer", "unstructured"),
}


def run_rows(runs) -> list[dict]:
    """One dict per run: arm, seed, optimizer, loss, measured sparsity, status."""
    out = []
    for r in runs.to_dict("records"):
        s = r["summary"] if isinstance(r.get("summary"), dict) else {}
        num = lambda k: float(s[k]) if s.get(k) is not None else math.nan  # noqa: E731
        n0, nnz = num("params_non_embedding"), num("nonzero_non_embedding")
        out.append({"name": r.get("name"), "arm": r.get("axis.arm"), "seed": r.get("axis.seed"),
                    "optimizer": s.get("optimizer"), "loss": num("final_val_loss"),
                    "measured_S": 1.0 - nnz / n0 if n0 > 0 else math.nan,
                    "wall_s": num("wall_time_s"), "status": r["status"]})
    return out


def _ok(r: dict) -> bool:
    return r["status"] == "done" and math.isfinite(r["loss"])


def _dense_of(arm: str, optimizer: str | None) -> str:
    return "dense_muon" if optimizer == "muon" else "dense_adamw"


def paired_gap(rows: list[dict], arm: str, ref: str) -> dict:
    """Mean over seeds of loss(arm) - loss(ref) for the seeds both finished, with its
    standard error (NaN below two pairs)."""
    by = {(r["arm"], r["seed"]): r["loss"] for r in rows if _ok(r)}
    d = np.array([by[(arm, s)] - by[(ref, s)] for (a, s) in by if a == arm and (ref, s) in by])
    if not len(d):
        return {"mean": math.nan, "se": math.nan, "pairs": 0}
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else math.nan
    return {"mean": float(d.mean()), "se": se, "pairs": int(len(d))}


def ablation_table(rows: list[dict]) -> list[dict]:
    """One row per arm, in the sweep's order."""
    out = []
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm and _ok(r)]
        if not mine:
            continue
        losses = np.array([r["loss"] for r in mine])
        what, ref = ARMS.get(arm, ("", None))
        dense = _dense_of(arm, mine[0]["optimizer"])
        vs_dense, vs_ref = paired_gap(rows, arm, dense), paired_gap(rows, arm, ref or arm)
        out.append({"arm": arm, "what": what, "seeds": len(mine),
                    "loss": float(losses.mean()),
                    "sd": float(losses.std(ddof=1)) if len(losses) > 1 else math.nan,
                    "vs dense": vs_dense["mean"] if arm != dense else 0.0,
                    "reference": ref or "",
                    "vs reference": vs_ref["mean"] if ref else math.nan,
                    "+- (2 se)": 2 * vs_ref["se"] if ref else math.nan,
                    "measured S": float(np.mean([r["measured_S"] for r in mine]))})
    return out


def findings(table: list[dict]) -> list[str]:
    """Plain sentences: what each change does against its reference, beyond two standard
    errors of the seed-paired gap or within them."""
    out = []
    for t in table:
        gap, band, ref = t["vs reference"], t["+- (2 se)"], t["reference"]
        if not ref or not math.isfinite(gap):
            continue
        head = f"{t['arm']} ({t['what']}) vs {ref}: {gap:+.4f} nats"
        if not math.isfinite(band):
            out.append(head + " (one seed: no interval)")
        elif abs(gap) > band:
            out.append(head + f" +- {band:.4f}, " + ("worse" if gap > 0 else "better"))
        else:
            out.append(head + f" +- {band:.4f}, within noise")
    return out


def _plot(rows: list[dict], table: list[dict], stem: Path) -> list[str]:
    fig = Figure(figsize=(7.0, 3.8))
    ax = fig.add_subplot()
    arms = [t["arm"] for t in table]
    for i, arm in enumerate(arms):
        ys = [r["loss"] for r in rows if r["arm"] == arm and _ok(r)]
        color = "0.4" if arm.startswith("dense") else f"C{i}"
        ax.plot([i] * len(ys), ys, "o", color=color, mfc="none", ms=5)
        ax.plot([i - 0.3, i + 0.3], [np.mean(ys)] * 2, "-", color=color, lw=2)
    ax.set_xticks(range(len(arms)), arms, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("validation loss (nats/byte)")
    ax.set_title("Sparse-training ablation at S = 0.5 (bars: mean over seeds)")
    fig.subplots_adjust(bottom=0.3)
    return save_figure(fig, stem)


def report(sweep_dir, runs) -> dict:
    """Writes the report into ``sweep_dir``; returns its paths and summary lines."""
    sweep_dir = Path(sweep_dir)
    rows = run_rows(runs)
    done = [r for r in rows if _ok(r)]
    excluded = [r for r in rows if not _ok(r)]
    table = ablation_table(rows)
    lines = findings(table)
    out: dict = {"report": sweep_dir / "report.md", "plots": [], "lines": lines}
    md = ["# Sparse-training ablation at S = 0.5\n",
          f"Sweep `{sweep_dir.name}`, {len(rows)} runs ({len(done)} done), written "
          f"{time.strftime('%Y-%m-%d %H:%M')}. Loss: final validation loss (nats per byte), "
          "mean over seeds with its standard deviation; each arm changes one thing against "
          "its reference, and the gap is paired by seed (same data order and "
          "initialisation) with two standard errors. `measured "
          "S`: zeros among the non-embedding parameters of the saved weights (the norms are "
          "dense, so it sits just under 0.5).\n",
          "## Findings\n", *[f"- {line}." for line in lines], "",
          "## Table\n", markdown_table(table)]
    if table:
        paths = _plot(rows, table, sweep_dir / "ablation")
        out["plots"] += paths
        md.append(f"![ablation]({Path(paths[0]).name})\n")
    result = {"runs": len(rows), "done": len(done), "table": table, "findings": lines,
         "rows": rows}
    write_study_report(sweep_dir, md, result, runs, excluded)
    return out
