"""Report of the ViT-on-digits compute ladder: final validation accuracy and loss against
training FLOPs, per optimizer.

Called by ``python -m jaxlab.launch report --sweep experiments/vit_digits/sweep.gin`` with
the sweep's rows from its results store. Writes ``report.md``, ``report.json``,
``accuracy_vs_compute.png`` and ``loss_vs_compute.png`` (and ``.svg``) into the sweep
directory. Compute is ``train_flops`` of each run's summary (the ViT's FLOPs per patch
token, :func:`jaxlab.nn.vit.vit_flops_per_token`, times the patch tokens seen).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from jaxlab.scaling.plots import save_figure
from jaxlab.scaling.report import markdown_table, provenance, provenance_markdown

TARGET_ACCURACY = 0.97   # the bar the vit_digits config is meant to clear


def run_rows(runs) -> list[dict]:
    """One dict per run: model, optimizer, steps, seed, status, C, loss, accuracy."""
    out = []
    for r in runs.to_dict("records"):
        s = r["summary"] if isinstance(r.get("summary"), dict) else {}
        num = lambda k: float(s[k]) if s.get(k) is not None else math.nan  # noqa: E731
        out.append({"model": r.get("axis.model"), "optimizer": r.get("axis.optimizer"),
                    "steps": s.get("steps"), "seed": r.get("axis.seed"), "status": r["status"],
                    "N": s.get("params_non_embedding"), "C": num("train_flops"),
                    "loss": num("final_val_loss"), "accuracy": num("final_val_accuracy"),
                    "wall_s": num("wall_time_s")})
    return out


def _plot(rows: list[dict], key: str, label: str, out_stem: Path) -> list[str]:
    """``key`` against C: one colour per optimizer, one line per model (its lengths)."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    ax.set_xscale("log")
    optimizers = sorted({r["optimizer"] for r in rows})
    models = sorted({r["model"] for r in rows}, key=lambda m: int(m.lstrip("d")))
    markers = "osD^v<>"
    for i, opt in enumerate(optimizers):
        for j, model in enumerate(models):
            pts = sorted((r["C"], r[key]) for r in rows if r["optimizer"] == opt
                         and r["model"] == model and math.isfinite(r[key]))
            if pts:
                c, v = zip(*pts)
                ax.plot(c, v, color=f"C{i}", marker=markers[j % len(markers)], ms=4, lw=1,
                        label=f"{opt} {model}")
    if key == "accuracy":
        ax.axhline(TARGET_ACCURACY, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel(label)
    ax.set_title(f"ViT on digits: {label} vs compute")
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, out_stem)


def report(sweep_dir, runs) -> dict:
    """Writes the report into ``sweep_dir``; returns its paths and summary lines."""
    sweep_dir = Path(sweep_dir)
    rows = run_rows(runs)
    done = [r for r in rows if r["status"] == "done" and math.isfinite(r["accuracy"])]
    out: dict = {"report": sweep_dir / "report.md", "plots": [], "lines": []}
    md = ["# ViT on digits: accuracy and loss against compute\n",
          f"Sweep `{sweep_dir}`, {len(rows)} runs ({len(done)} done), written "
          f"{time.strftime('%Y-%m-%d %H:%M')}. Accuracy and loss: on the validation split at "
          "the end of each run (all 384 images in smoke, cpu and full; 64 in tiny); C: "
          "training FLOPs.\n"]
    best = {}
    for opt in sorted({r["optimizer"] for r in done}):
        mine = [r for r in done if r["optimizer"] == opt]
        top = max(mine, key=lambda r: r["accuracy"])
        first = min((r for r in mine if r["accuracy"] >= TARGET_ACCURACY),
                    key=lambda r: r["C"], default=None)
        best[opt] = {"accuracy": top["accuracy"], "model": top["model"], "steps": top["steps"],
                     "C": top["C"], "wall_s": top["wall_s"],
                     "C_to_target": first["C"] if first else None}
        line = (f"{opt}: best accuracy {100 * top['accuracy']:.1f}% ({top['model']}, "
                f"{top['steps']} steps, {top['wall_s']:.0f} s); ")
        line += (f"first >= {100 * TARGET_ACCURACY:.0f}% at C = {first['C']:.3g} FLOPs "
                 f"({first['model']}, {first['steps']} steps)" if first
                 else f"never >= {100 * TARGET_ACCURACY:.0f}%")
        out["lines"].append(line)
    md += ["## Result\n", *[f"- {x}" for x in out["lines"]], ""]
    if done:
        for key, label in (("accuracy", "validation accuracy"), ("loss", "validation loss")):
            paths = _plot(done, key, label, sweep_dir / f"{key}_vs_compute")
            out["plots"] += paths
            md.append(f"![{label} vs compute]({Path(paths[0]).name})\n")
    table = [{**{k: r[k] for k in ("model", "optimizer", "steps", "seed", "status", "N")},
              "C (FLOPs)": r["C"], "val loss": r["loss"],
              "val acc (%)": 100 * r["accuracy"] if np.isfinite(r["accuracy"]) else math.nan,
              "wall (s)": r["wall_s"]} for r in rows]
    prov = provenance(runs)
    md += ["## Runs\n", markdown_table(table), "## Machine\n", provenance_markdown(prov)]
    out["report"].write_text("\n".join(md))
    (sweep_dir / "report.json").write_text(json.dumps(
        {"runs": len(rows), "done": len(done), "best": best, "table": table,
         "provenance": prov}, indent=2, default=float))
    return out
