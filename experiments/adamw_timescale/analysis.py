"""Report of the AdamW timescale study (Power Lines, arXiv 2505.13738; Wang & Aitchison,
arXiv 2405.13698).

Called by ``python -m jaxlab.launch report --sweep experiments/adamw_timescale/sweep.gin``
with the sweep's rows from its results store. Reads every finished run's ``summary.json``
and ``run.json`` (``jaxlab.scaling.results.load_runs``); ``tau = B / (lr wd D)`` and
``TPP = D / N`` (N: non-embedding parameters) come from what each run recorded.

* per cell (model size, TPP): tau_opt at the vertex of a parabola of final validation
  loss in log tau, fitted to the best run and its two neighbours on each side
  (``tau_opt_from_sweep(..., neighbours=2)``), with 68/95% bootstrap intervals
  (the cell's runs resampled, the vertex refitted);
* across cells: ``tau_opt = k TPP^a`` (cells with an interior vertex), with bootstrap
  intervals (runs resampled within cells, every vertex and the law refitted), beside
  Power Lines' ``1.084 TPP^-0.527``;
* the batch cells (one (N, D) at several batch sizes B): ``wd_opt = B / (lr D tau_opt)``
  against B, ``wd_opt = c B^e`` with intervals; Power Lines: tau_opt does not depend on
  B, so e = 1.

Figures: ``loss_vs_tau`` (one panel per model size), ``tau_opt_vs_tpp``, ``batch``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from jaxlab.scaling.bootstrap import bootstrap_fit, intervals_table
from jaxlab.scaling.laws import POWER_LINES_TAU
from jaxlab.scaling.plots import save_figure
from jaxlab.scaling.power_law_fit import fit_pure_power_law
from jaxlab.scaling.report import markdown_table, provenance, provenance_markdown, verdict
from jaxlab.scaling.results import load_runs
from jaxlab.scaling.weight_decay_fit import around_best, fit_tau_law, tau_opt_from_sweep

NEIGHBOURS = 2      # runs on each side of a cell's best run that its parabola sees
N_BOOT = 400
PAPER = {
    "falls": "tau_opt falls as tokens per parameter grow (Power Lines fig. 2)",
    "exponent": f"tau_opt = {POWER_LINES_TAU.k} TPP^{POWER_LINES_TAU.a} (the exponent)",
    "batch": "at fixed N and D the optimal timescale does not depend on the batch, so the "
             "optimal weight decay grows linearly with it (wd_opt ~ B^1)",
}


def frame(sweep_dir: Path, runs) -> tuple[pd.DataFrame, list[dict]]:
    """Finished runs as a scaling table with ``cell``, ``batch_cell`` and ``loss``
    columns, and the runs left out (``{run, status, why}``)."""
    left_out = []
    done = []
    for r in runs.to_dict("records"):
        s = r["summary"] if isinstance(r.get("summary"), dict) else {}
        loss = s.get("final_val_loss")
        if r["status"] in ("pending", "running"):
            continue  # not finished yet: counted in the report's header, not left out
        if r["status"] != "done":
            left_out.append({"run": r["name"], "status": r["status"],
                             "why": s.get("error") or r.get("error") or r["status"]})
        elif loss is None or not math.isfinite(float(loss)):
            left_out.append({"run": r["name"], "status": r["status"],
                             "why": f"final validation loss {loss}"})
        else:
            done.append(r["run_dir"])
    if not done:
        return pd.DataFrame(), left_out
    df = load_runs(done)
    df["cell"] = df["label.cell"]
    df["batch_cell"] = df["var.batch"].astype(int) == 1
    df["loss"] = df["final_val_loss"]
    df["size"] = df["cell"].str.split("_").str[0]
    return df, left_out


def _vertex(d: pd.DataFrame) -> dict[str, float]:
    o = tau_opt_from_sweep(d["N"], d["D"], d["tau"], d["loss"], neighbours=NEIGHBOURS)[0]
    if not o.inside:
        raise ValueError("vertex at the edge of the swept timescales")
    return {"tau_opt": o.tau_opt}


def cell_optima(df: pd.DataFrame, n_boot: int = N_BOOT) -> list[dict]:
    """One row per cell: N, D, TPP, B, tau_opt (vertex or best run), whether the vertex
    is interior, its 68/95% bootstrap interval and the best run's loss."""
    rows = []
    order = df.sort_values(["N", "batch_cell", "TPP", "B"])["cell"].drop_duplicates()
    for cell in order:
        d = df[df["cell"] == cell]
        d = d.reset_index(drop=True)
        row = {"cell": cell, "size": d["size"].iloc[0], "batch_cell": bool(d["batch_cell"].iloc[0]),
               "N": float(d["N"].iloc[0]), "D": float(d["D"].median()),
               "TPP": float(d["TPP"].median()), "B": float(d["B"].iloc[0]),
               "lr": float(d["lr"].iloc[0]), "runs": len(d), "best_loss": float(d["loss"].min())}
        if d["tau"].nunique() < 3:
            rows.append({**row, "tau_opt": math.nan, "inside": False,
                         "note": f"{d['tau'].nunique()} distinct tau (a vertex needs 3)"})
            continue
        # One (N, D) per cell: the batch cells' D differs from the main cell's by rounding.
        d = d.assign(D=row["D"])
        o = tau_opt_from_sweep(d["N"], d["D"], d["tau"], d["loss"], neighbours=NEIGHBOURS)[0]
        row.update(tau_opt=o.tau_opt, inside=o.inside, loss_opt=o.loss_opt,
                   tau_paper=float(POWER_LINES_TAU.predict(row["TPP"])))
        if o.inside:
            boot = bootstrap_fit(d, _vertex, n_boot, distinct=("tau", 3))
            for lv, (lo, hi) in boot["intervals"]["tau_opt"].items():
                row[f"{round(100 * lv)}%"] = (lo, hi)
            row["boot_ok"] = f"{boot['n_ok']}/{boot['n_boot']}"
        rows.append(row)
    return rows


def _with_vertex(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of cells with >= 3 distinct timescales (a cell still running, or with
    runs left out, may have fewer; :func:`cell_optima` lists it with a note)."""
    n = df.groupby("cell")["tau"].transform("nunique")
    return df[n >= 3].reset_index(drop=True)


MIN_TPP_SPAN = 2.0   # the law needs interior vertices at TPPs at least this far apart


def _tau_law_constants(d: pd.DataFrame) -> dict[str, float]:
    optima = tau_opt_from_sweep(d["N"], d["D"], d["tau"], d["loss"], neighbours=NEIGHBOURS)
    tpp = [o.tpp for o in optima if o.inside]
    if len(tpp) < 2 or max(tpp) / min(tpp) < MIN_TPP_SPAN:
        # e.g. a resample whose only interior vertices are TPP 5.01 and 5.04: a line
        # through them has any slope
        raise ValueError(f"interior vertices at TPP {sorted(round(t, 2) for t in tpp)} span "
                         f"less than {MIN_TPP_SPAN}x")
    law = fit_tau_law(optima)
    return {"k": law.k, "a": law.a}


def tau_law(df: pd.DataFrame, n_boot: int = N_BOOT) -> dict | None:
    """``tau_opt = k TPP^a`` over the main cells with bootstrap intervals (None when
    fewer than two cells have an interior vertex)."""
    main = _with_vertex(df[~df["batch_cell"]])
    try:
        point = _tau_law_constants(main)
    except ValueError as e:
        return {"error": str(e)}
    boot = bootstrap_fit(main, _tau_law_constants, n_boot, group_col="cell",
                         distinct=("tau", 3))
    return {"point": point, "boot": boot, "table": intervals_table(boot)}


def per_size_laws(df: pd.DataFrame) -> list[dict]:
    """``tau_opt = k TPP^a`` fitted per model size (does the optimum depend on N at
    fixed TPP, which the single law assumes it does not?)."""
    rows = []
    main = _with_vertex(df[~df["batch_cell"]])
    for size, d in main.groupby("size", sort=False):
        row = {"size": size, "N": float(d["N"].iloc[0]), "cells": d["cell"].nunique()}
        try:
            row.update(_tau_law_constants(d.reset_index(drop=True)))
        except ValueError as e:
            row["note"] = str(e)[:80]
        rows.append(row)
    return sorted(rows, key=lambda r: r["N"])


def _batch_cells(df: pd.DataFrame) -> pd.DataFrame:
    """The batch cells and the main cell of the same model and TPP (its batch size)."""
    b = df[df["batch_cell"]]
    if b.empty:
        return b
    key = b["cell"].iloc[0].rsplit("_b", 1)[0]
    return pd.concat([df[df["cell"] == key], b]).reset_index(drop=True)


def _wd_slope(d: pd.DataFrame) -> dict[str, float]:
    opt = []
    for _, g in d.groupby("cell"):
        g = g.assign(D=g["D"].median())
        o = tau_opt_from_sweep(g["N"], g["D"], g["tau"], g["loss"], neighbours=NEIGHBOURS)[0]
        if o.inside:
            B, lr = g["B"].iloc[0], g["lr"].iloc[0]
            opt.append((B, B / (lr * o.D * o.tau_opt)))
    if len({b for b, _ in opt}) < 2:
        raise ValueError(f"{len(opt)} batch sizes with an interior vertex (need 2)")
    law = fit_pure_power_law([b for b, _ in opt], [w for _, w in opt], x_name="B",
                             y_name="wd_opt")
    return {"e": law.a, "c": law.k}


def batch_law(df: pd.DataFrame, n_boot: int = N_BOOT) -> dict | None:
    """``wd_opt = c B^e`` across the batch cells, with bootstrap intervals."""
    d = _with_vertex(_batch_cells(df))
    if d.empty:
        return None
    try:
        point = _wd_slope(d)
    except ValueError as e:
        return {"error": str(e)}
    boot = bootstrap_fit(d, _wd_slope, n_boot, group_col="cell", distinct=("tau", 3))
    return {"point": point, "boot": boot, "table": intervals_table(boot)}


def _parabola(d: pd.DataFrame):
    """(tau grid, loss) of the parabola a cell's vertex comes from, or None."""
    x, y = np.log(d["tau"].to_numpy()), d["loss"].to_numpy()
    if len(np.unique(x)) < 3:
        return None
    x, y = around_best(x, y, NEIGHBOURS)
    grid = np.linspace(x.min(), x.max(), 50)
    return np.exp(grid), np.polyval(np.polyfit(x, y, 2), grid)


def _plot_loss_vs_tau(df: pd.DataFrame, optima: list[dict], stem: Path) -> list[str]:
    main = df[~df["batch_cell"]]
    sizes = list(dict.fromkeys(main["size"]))
    fig = Figure(figsize=(4.2 * len(sizes), 3.8))
    tpps = sorted({round(t) for t in main["TPP"]})
    colour = {t: f"C{i}" for i, t in enumerate(tpps)}
    by_cell = {o["cell"]: o for o in optima}
    for k, size in enumerate(sizes):
        ax = fig.add_subplot(1, len(sizes), k + 1)
        ax.set_xscale("log")
        mine = main[main["size"] == size]
        for cell in mine.sort_values("TPP")["cell"].drop_duplicates():  # legend by TPP
            d = mine[mine["cell"] == cell].sort_values("tau")
            t = round(d["TPP"].median())
            ax.plot(d["tau"], d["loss"], "o", ms=4, color=colour[t], label=f"TPP {t}")
            curve = _parabola(d)
            if curve is not None:
                ax.plot(*curve, "-", lw=1, color=colour[t])
            o = by_cell.get(cell, {})
            if o.get("inside"):
                ax.plot([o["tau_opt"]], [o["loss_opt"]], "*", ms=10, color=colour[t],
                        markeredgecolor="k", markeredgewidth=0.5)
            if "tau_paper" in o:
                ax.axvline(o["tau_paper"], color=colour[t], ls=":", lw=0.8)
        ax.set_title(f"{size} (N = {main[main['size'] == size]['N'].iloc[0]:,.0f})")
        ax.set_xlabel("timescale tau = B / (lr wd D)")
        if k == 0:
            ax.set_ylabel("final validation loss (nats/byte)")
        ax.legend(fontsize=7)
    fig.suptitle("Loss against the AdamW timescale (stars: vertices; dotted: Power Lines "
                 "tau_opt)", fontsize=9)
    return save_figure(fig, stem)


def _plot_tau_opt(optima: list[dict], law: dict | None, stem: Path) -> list[str]:
    fig = Figure(figsize=(6.0, 4.4))
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    main = [o for o in optima if not o["batch_cell"] and math.isfinite(o["tau_opt"])]
    for i, size in enumerate(dict.fromkeys(o["size"] for o in main)):
        mine = [o for o in main if o["size"] == size]
        for o in mine:
            x, y = o["TPP"], o["tau_opt"]
            if o["inside"] and "68%" in o:  # the interval need not contain the vertex
                ax.plot([x, x], o["68%"], "-", color=f"C{i}", lw=2, alpha=0.6)
                ax.plot([x], [y], "o", color=f"C{i}", ms=5)
            else:
                ax.plot([x], [y], "x", color=f"C{i}", ms=6)
        ax.plot([], [], "o", color=f"C{i}", label=size)
    tpp = np.array([o["TPP"] for o in main]) if main else np.array([5.0, 200.0])
    grid = np.geomspace(tpp.min() / 1.5, tpp.max() * 1.5, 100)
    if law and "point" in law:
        k, a = law["point"]["k"], law["point"]["a"]
        lo, hi = law["boot"]["intervals"]["a"][0.95]
        ax.plot(grid, k * grid ** a, "-", color="k", lw=1.2,
                label=f"ours: {k:.3g} TPP^{a:.3f} (a 95%: {lo:.2f}..{hi:.2f})")
    ax.plot(grid, POWER_LINES_TAU.predict(grid), "--", color="C3",
            label=f"Power Lines: {POWER_LINES_TAU.k} TPP^{POWER_LINES_TAU.a}")
    ax.set_xlabel("tokens per parameter D / N")
    ax.set_ylabel("optimal timescale tau_opt")
    ax.set_title("tau_opt per cell (bars: 68% bootstrap; x: at the edge of the sweep)",
                 fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, stem)


def _plot_batch(optima: list[dict], blaw: dict | None, stem: Path) -> list[str]:
    cells = [o for o in optima if o["batch_cell"] or any(
        b["batch_cell"] and b["cell"].rsplit("_b", 1)[0] == o["cell"] for b in optima)]
    cells = sorted((o for o in cells if o.get("inside")), key=lambda o: o["B"])
    fig = Figure(figsize=(9.0, 3.8))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    if cells:
        B = np.array([o["B"] for o in cells])
        wd = np.array([o["B"] / (o["lr"] * o["D"] * o["tau_opt"]) for o in cells])
        tau = np.array([o["tau_opt"] for o in cells])
        ax1.loglog(B, wd, "o", color="C0", label="wd_opt per batch size")
        ax1.loglog(B, wd[0] * B / B[0], ":", color="0.4", label="slope 1 (Power Lines)")
        if blaw and "point" in blaw:
            c, e = blaw["point"]["c"], blaw["point"]["e"]
            ax1.loglog(B, c * B ** e, "-", color="C0", lw=1, label=f"fit: slope {e:.2f}")
        ax2.semilogx(B, tau, "o-", color="C1", label="tau_opt")
        for o in cells:
            if "68%" in o:
                ax2.plot([o["B"]] * 2, o["68%"], "-", color="C1", lw=2, alpha=0.5)
        ax2.axhline(POWER_LINES_TAU.predict(cells[0]["TPP"]), ls="--", color="C3",
                    label="Power Lines tau_opt at this TPP")
    ax1.set_xlabel("batch (tokens)")
    ax1.set_ylabel("optimal weight decay")
    ax2.set_xlabel("batch (tokens)")
    ax2.set_ylabel("optimal timescale")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.suptitle("One (N, D) at several batch sizes", fontsize=9)
    return save_figure(fig, stem)


def _unresolved(boot: dict, name: str) -> bool:
    """True when the 95% interval of ``name`` has no width: every resample refitted the
    same points (cells with exactly 3 timescales, as in the ``tiny`` preset)."""
    lo, hi = boot["intervals"][name][0.95]
    return not hi - lo > 1e-9 * max(1.0, abs(lo))


def claims(law: dict | None, blaw: dict | None) -> dict[str, dict]:
    """Each claim of :data:`PAPER` with our figures and whether it held (None: not
    decidable, e.g. no interval)."""
    out = {}
    no_interval = " (no interval: every resample refits the same 3 points per cell)"
    if law and "point" in law:
        a = law["point"]["a"]
        lo, hi = law["boot"]["intervals"]["a"][0.95]
        lo68, hi68 = law["boot"]["intervals"]["a"][0.68]
        flat = _unresolved(law["boot"], "a")
        out["falls"] = {"held": None if flat else bool(hi < 0), "text": (
            f"a = {a:.3f}, 95% interval [{lo:.3f}, {hi:.3f}]" + (no_interval if flat else ""))}
        out["exponent"] = {"held": None if flat else bool(lo <= POWER_LINES_TAU.a <= hi),
                           "text": (
            f"a = {a:.3f} (68% [{lo68:.3f}, {hi68:.3f}], 95% [{lo:.3f}, {hi:.3f}]) vs "
            f"{POWER_LINES_TAU.a}; k = {law['point']['k']:.3g} vs {POWER_LINES_TAU.k}"
            + (no_interval if flat else ""))}
    if blaw and "point" in blaw:
        e = blaw["point"]["e"]
        lo, hi = blaw["boot"]["intervals"]["e"][0.95]
        flat = _unresolved(blaw["boot"], "e")
        out["batch"] = {"held": None if flat else bool(lo <= 1.0 <= hi), "text": (
            f"wd_opt ~ B^{e:.2f}, 95% interval [{lo:.2f}, {hi:.2f}]"
            + (no_interval if flat else ""))}
    for key in PAPER:
        out.setdefault(key, {"held": None, "text": (law or {}).get("error", "runs missing")
                             if key != "batch" else (blaw or {}).get("error", "runs missing")})
    return out


def _optima_table(optima: list[dict]) -> str:
    rows = []
    for o in optima:
        row = {"cell": o["cell"], "N": o["N"], "TPP": o["TPP"], "B": o["B"],
               "tau_opt": o["tau_opt"], "interior": o["inside"]}
        for lv in ("68%", "95%"):
            row[lv] = "[{:.3g}, {:.3g}]".format(*o[lv]) if lv in o else ""
        row["Power Lines"] = o.get("tau_paper", math.nan)
        row["best loss"] = o["best_loss"]
        rows.append(row)
    return markdown_table(rows)


def report(sweep_dir, runs, n_boot: int = N_BOOT) -> dict:
    """Writes the report into ``sweep_dir``; returns its paths and summary lines."""
    sweep_dir = Path(sweep_dir)
    df, left_out = frame(sweep_dir, runs)
    unfinished = int(runs["status"].isin(["pending", "running"]).sum())
    out: dict = {"report": sweep_dir / "report.md", "plots": [], "lines": []}
    optima = cell_optima(df, n_boot) if len(df) else []
    law = tau_law(df, n_boot) if len(df) else None
    blaw = batch_law(df, n_boot) if len(df) else None
    verdicts = claims(law, blaw)
    for key, v in verdicts.items():
        out["lines"].append(f"{PAPER[key]}: {verdict(v['held'], missing='undecided')} ({v['text']})")
    md = ["# AdamW timescale against tokens per parameter (arXiv 2505.13738)\n",
          f"Sweep `{sweep_dir.name}`, {len(runs)} runs ({len(df)} used"
          + (f", {unfinished} not finished yet" if unfinished else "") + "), written "
          f"{time.strftime('%Y-%m-%d %H:%M')}. Loss: final validation loss (nats per byte); "
          "tau = B / (lr wd D) with the peak lr; TPP = D / N with N the non-embedding "
          "parameters. Intervals: percentile bootstrap over runs "
          f"({n_boot} resamples; within a cell for its vertex, within cells for the laws).\n",
          "## Claims at this scale\n",
          *[f"- **{verdict(v['held'], missing='undecided')}**: {PAPER[k]}. Ours: {v['text']}."
            for k, v in verdicts.items()], ""]
    if len(df):
        paths = _plot_tau_opt(optima, law, sweep_dir / "tau_opt_vs_tpp")
        paths += _plot_loss_vs_tau(df, optima, sweep_dir / "loss_vs_tau")
        out["plots"] += paths
        md += ["![tau_opt vs TPP](tau_opt_vs_tpp.png)\n", "![loss vs tau](loss_vs_tau.png)\n"]
    if law and "table" in law:
        md += ["## tau_opt = k TPP^a (ours, with intervals; Power Lines: k = "
               f"{POWER_LINES_TAU.k}, a = {POWER_LINES_TAU.a})\n", markdown_table(law["table"]),
               f"{law['boot']['n_ok']} of {law['boot']['n_boot']} refits succeeded"
               + (f"; failures: {law['boot']['failures']}" if law["boot"]["failures"] else "")
               + ".\n"]
    if len(df):
        md += ["## tau_opt = k TPP^a per model size (points only)\n",
               markdown_table(per_size_laws(df))]
    if optima:
        md += ["## tau_opt per cell\n", _optima_table(optima)]
    if blaw is not None:
        if "point" in blaw:
            paths = _plot_batch(optima, blaw, sweep_dir / "batch")
            out["plots"] += paths
            md += ["## Batch size at one (N, D)\n", "![batch](batch.png)\n",
                   markdown_table(blaw["table"])]
        else:
            md += ["## Batch size at one (N, D)\n", f"No fit: {blaw['error']}.\n"]
    if left_out:
        md += ["## Runs left out of the fits\n", markdown_table(left_out)]
    prov = provenance(runs)
    md += ["## Machine\n", provenance_markdown(prov)]
    out["report"].write_text("\n".join(md))
    strip = lambda d: {k: v for k, v in (d or {}).items() if k != "boot"}  # noqa: E731
    (sweep_dir / "report.json").write_text(json.dumps(
        {"runs": len(runs), "used": len(df), "claims": verdicts, "tau_law": strip(law),
         "batch_law": strip(blaw), "cells": optima, "left_out": left_out,
         "published": {"k": POWER_LINES_TAU.k, "a": POWER_LINES_TAU.a}, "provenance": prov},
        indent=2, default=float))
    return out
