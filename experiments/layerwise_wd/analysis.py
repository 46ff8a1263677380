"""Report of the layerwise weight-decay study (arXiv 2510.15262, after muP arXiv 2203.03466).

Called by ``python -m jaxlab.launch report --sweep experiments/layerwise_wd/sweep.gin``
with the sweep's rows from its results store. Writes ``report.md``, ``report.json`` and
three figures (PNG and SVG) into the sweep directory:

* ``transfer``: per width and arm (``plain``: the base lr and weight decay everywhere;
  ``layerwise``: hidden-matrix lr x base/d, decay x sqrt(d/base)), the validation loss at
  the setting transferred from the base width (its best grid point) against the best of
  the local grid at that width;
* ``sigma_max``: the top singular value of the hidden matrices at the end of the
  transferred runs against width, beside the prediction sqrt(eta / lambda) d^0.75 with
  each arm's effective eta and lambda (scaled to the base width); slopes in log-log with
  bootstrap intervals (the matrices resampled);
* ``grid``: the loss over (lr, wd) at every width and arm.

The claims checked, each with a plain verdict: the rule's transferred setting is within
seed noise of the local optimum at every width; layerwise transfer beats plain transfer at
the widest width; under the rule sigma_max does not grow with width, and without it it
grows about as d^0.75.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from jaxlab.scaling.plots import save_figure
from jaxlab.scaling.report import markdown_table, provenance, provenance_markdown, verdict
from jaxlab.train.metrics import read_metrics

ARMS = ("plain", "layerwise")
MATCH_NATS = 0.01   # about the seed spread of the final loss at this scale
N_BOOT = 1000
FLAT_SLOPE = 0.25   # a log-log slope of sigma_max below this (a third of 0.75) is "flat"
PAPER = {
    "transfer": "with the layerwise rule, the lr and weight decay tuned at the base width "
                "stay near-optimal at every width (fig. 1)",
    "beats_plain": "layerwise transfer beats plain transfer at the widest width",
    "sigma_max": "sigma_max of the hidden matrices is width-invariant under the rule "
                 "(sqrt(eta / lambda) d^0.75 with eta ~ 1/d, lambda ~ sqrt(d)); with "
                 f"plain AdamW it grows as d^0.75 (fig. 4; here: a slope under {FLAT_SLOPE} "
                 f"with the rule, a 95% interval above {FLAT_SLOPE} without)",
}


def final_sigma_max(run_dir: str | None) -> dict[str, float]:
    """``{matrix path: sigma_max}`` from the last metrics line that logged them."""
    path = Path(run_dir or "") / "metrics.jsonl"
    if not path.exists():
        return {}
    last = {}
    for m in read_metrics(path):
        got = {k.split("/", 1)[1]: float(v) for k, v in m.items() if k.startswith("sigma_max/")}
        if got:
            last = got
    return last


def run_rows(runs) -> list[dict]:
    """One dict per run: width, arm, lr, wd, status, loss, final sigma_max, run dir."""
    out = []
    for r in runs.to_dict("records"):
        s = r["summary"] if isinstance(r.get("summary"), dict) else {}
        model = s.get("model") or {}
        loss = s.get("final_val_loss")
        out.append({"name": r.get("name"), "width": model.get("d_model"),
                    "width_label": r.get("axis.width"), "arm": r.get("axis.rule"),
                    "lr": s.get("lr"), "wd": s.get("weight_decay"), "status": r["status"],
                    "loss": float(loss) if loss is not None else math.nan,
                    "run_dir": r.get("run_dir"), "sigma": final_sigma_max(r.get("run_dir"))})
    return out


def _ok(r: dict) -> bool:
    return r["status"] == "done" and math.isfinite(r["loss"])


def transfer_table(rows: list[dict]) -> dict:
    """The transferred setting (best grid point at the base width) and, per width and arm,
    the loss there against the local grid's best. At the base width both arms are the
    base grid (the rule's multipliers are 1)."""
    done = [r for r in rows if _ok(r)]
    if not done:
        return {}
    base = min(r["width"] for r in done)
    base_runs = [r for r in done if r["width"] == base]
    best = min(base_runs, key=lambda r: r["loss"])
    setting = {"lr": best["lr"], "wd": best["wd"], "base_width": base, "loss": best["loss"]}
    table = []
    for width in sorted({r["width"] for r in done}):
        for arm in ARMS:
            mine = base_runs if width == base else [
                r for r in done if r["width"] == width and r["arm"] == arm]
            if not mine:
                continue
            local = min(mine, key=lambda r: r["loss"])
            there = next((r for r in mine if r["lr"] == setting["lr"]
                          and r["wd"] == setting["wd"]), None)
            table.append({
                "width": width, "arm": arm, "runs": len(mine),
                "transferred loss": there["loss"] if there else math.nan,
                "local best loss": local["loss"], "local best lr": local["lr"],
                "local best wd": local["wd"],
                "gap": there["loss"] - local["loss"] if there else math.nan,
                "run": there["name"] if there else None})
    return {"setting": setting, "table": table}


def _effective(width: int, base: int, arm: str, lr: float, wd: float) -> tuple[float, float]:
    """(eta, lambda) of a hidden matrix: the base values, times the rule's multipliers."""
    if arm == "layerwise":
        return lr * base / width, wd * math.sqrt(width / base)
    return lr, wd


def sigma_table(rows: list[dict], transfer: dict, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Per arm: sigma_max (mean over hidden matrices) of the transferred runs against
    width, the predicted sqrt(eta / lambda) d^0.75 scaled to the base width, and the
    log-log slope with 68/95% bootstrap intervals (matrices resampled)."""
    if not transfer:
        return {}
    by_name = {r["name"]: r for r in rows}
    base = transfer["setting"]["base_width"]
    lr, wd = transfer["setting"]["lr"], transfer["setting"]["wd"]
    out = {}
    rng = np.random.default_rng(seed)
    for arm in ARMS:
        pts = [(t["width"], by_name[t["run"]]["sigma"]) for t in transfer["table"]
               if t["arm"] == arm and t["run"] and by_name[t["run"]]["sigma"]]
        if len(pts) < 2:
            continue
        keys = sorted(set.intersection(*(set(s) for _, s in pts)))
        widths = np.array([w for w, _ in pts], float)
        S = np.array([[s[k] for k in keys] for _, s in pts])    # (widths, matrices)
        mean = S.mean(axis=1)
        pred = np.array([math.sqrt(e / lam) * w ** 0.75
                         for w in widths for e, lam in [_effective(int(w), base, arm, lr, wd)]])
        pred *= mean[0] / pred[0]

        def slope(cols):
            return float(np.polyfit(np.log(widths), np.log(S[:, cols].mean(axis=1)), 1)[0])

        point = slope(np.arange(len(keys)))
        boots = np.array([slope(rng.integers(0, len(keys), len(keys))) for _ in range(n_boot)])
        predicted = float(np.polyfit(np.log(widths), np.log(pred), 1)[0])
        out[arm] = {"widths": widths.tolist(), "sigma_max": mean.tolist(),
                    "per_matrix": {k: S[:, i].tolist() for i, k in enumerate(keys)},
                    "predicted": pred.tolist(), "slope": point, "predicted_slope": predicted,
                    "68%": tuple(np.quantile(boots, [0.16, 0.84]).tolist()),
                    "95%": tuple(np.quantile(boots, [0.025, 0.975]).tolist())}
    return out


def claims(transfer: dict, sigma: dict) -> dict[str, dict]:
    """Each claim of :data:`PAPER` with our figures and whether it held (True / False,
    ``"noise"`` where a difference is within :data:`MATCH_NATS`, None: runs missing)."""
    out = {}
    table = transfer.get("table", [])
    base = transfer.get("setting", {}).get("base_width")
    wide = [t for t in table if t["width"] != base]
    lw = [t for t in wide if t["arm"] == "layerwise" and math.isfinite(t["gap"])]
    pl = {t["width"]: t for t in wide if t["arm"] == "plain"}
    if lw:
        worst = max(t["gap"] for t in lw)
        plain_gaps = ", ".join(f"d{t['width']} {pl[t['width']]['gap']:+.4f}" for t in lw
                               if t["width"] in pl)
        out["transfer"] = {"held": bool(worst <= MATCH_NATS), "text": (
            "transferred - local best, layerwise: " + ", ".join(
                f"d{t['width']} {t['gap']:+.4f}" for t in lw) + f"; plain: {plain_gaps}")}
        widest = max(t["width"] for t in lw)
        a = next(t for t in lw if t["width"] == widest)
        b = pl.get(widest)
        if b and math.isfinite(b["transferred loss"]):
            d = a["transferred loss"] - b["transferred loss"]
            held = "noise" if abs(d) <= MATCH_NATS else bool(d < 0)
            out["beats_plain"] = {"held": held, "text": (
                f"at d{widest}: layerwise {a['transferred loss']:.4f} vs plain "
                f"{b['transferred loss']:.4f} ({d:+.4f} nats)")}
    if set(sigma) == set(ARMS):
        a, b = sigma["layerwise"], sigma["plain"]
        flat = abs(a["slope"]) < FLAT_SLOPE
        grows = b["95%"][0] > FLAT_SLOPE
        out["sigma_max"] = {"held": bool(flat and grows), "text": (
            f"log-log slope of sigma_max against width: layerwise {a['slope']:+.2f} "
            f"(95% [{a['95%'][0]:+.2f}, {a['95%'][1]:+.2f}], predicted "
            f"{a['predicted_slope']:+.2f}), plain {b['slope']:+.2f} (95% [{b['95%'][0]:+.2f}, "
            f"{b['95%'][1]:+.2f}], predicted {b['predicted_slope']:+.2f})")}
    for key in PAPER:
        out.setdefault(key, {"held": None, "text": "runs missing"})
    return out


def _plot_transfer(transfer: dict, stem: Path) -> list[str]:
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    ax.set_xscale("log", base=2)
    for i, arm in enumerate(ARMS):
        t = sorted((x for x in transfer["table"] if x["arm"] == arm), key=lambda x: x["width"])
        w = [x["width"] for x in t]
        ax.plot(w, [x["transferred loss"] for x in t], "o-", color=f"C{i}",
                label=f"{arm}: at the transferred setting")
        ax.plot(w, [x["local best loss"] for x in t], "s--", color=f"C{i}", alpha=0.6,
                label=f"{arm}: best of the local grid")
    s = transfer["setting"]
    ax.set_xlabel("width d_model")
    ax.set_ylabel("final validation loss (nats/byte)")
    ax.set_title(f"Transfer from d{s['base_width']} (lr {s['lr']:g}, wd {s['wd']:g})")
    ax.legend(fontsize=8)
    return save_figure(fig, stem)


def _plot_sigma(sigma: dict, stem: Path) -> list[str]:
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    for i, arm in enumerate(ARMS):
        if arm not in sigma:
            continue
        s = sigma[arm]
        for vals in s["per_matrix"].values():
            ax.plot(s["widths"], vals, "-", color=f"C{i}", alpha=0.15, lw=0.8)
        ax.plot(s["widths"], s["sigma_max"], "o-", color=f"C{i}",
                label=f"{arm}: mean over matrices (slope {s['slope']:+.2f})")
        ax.plot(s["widths"], s["predicted"], ":", color=f"C{i}",
                label=f"{arm}: sqrt(eta/lambda) d^0.75 (slope {s['predicted_slope']:+.2f})")
    ax.set_xlabel("width d_model")
    ax.set_ylabel("top singular value at the end of training")
    ax.set_title("sigma_max of the hidden matrices (faint: each matrix)")
    ax.legend(fontsize=7)
    return save_figure(fig, stem)


def _plot_grid(rows: list[dict], stem: Path) -> list[str]:
    done = [r for r in rows if _ok(r)]
    base = min(r["width"] for r in done)
    panels = [(w, a) for w in sorted({r["width"] for r in done}) for a in ARMS
              if w != base or a == "plain"]
    lrs = sorted({r["lr"] for r in done})
    wds = sorted({r["wd"] for r in done})
    lo = min(r["loss"] for r in done)
    hi = min(max(r["loss"] for r in done), lo + 0.5)  # a diverged corner does not wash it out
    fig = Figure(figsize=(3.0 * len(panels), 3.2))
    for k, (w, arm) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        grid = np.full((len(wds), len(lrs)), np.nan)
        for r in done:
            if r["width"] == w and (w == base or r["arm"] == arm):
                grid[wds.index(r["wd"]), lrs.index(r["lr"])] = r["loss"]
        im = ax.imshow(grid, origin="lower", cmap="viridis_r", vmin=lo, vmax=hi)
        for (y, x), v in np.ndenumerate(grid):
            if math.isfinite(v):  # dark text on the light (low-loss) cells
                ax.text(x, y, f"{v:.3f}", ha="center", va="center", fontsize=6,
                        color="k" if v < (lo + hi) / 2 else "w")
        ax.set_xticks(range(len(lrs)), [f"{v:g}" for v in lrs], fontsize=6, rotation=45)
        ax.set_yticks(range(len(wds)), [f"{v:g}" for v in wds], fontsize=6)
        ax.set_title(f"d{w} {'(base)' if w == base else arm}", fontsize=8)
        ax.set_xlabel("base lr", fontsize=7)
        if k == 0:
            ax.set_ylabel("base weight decay", fontsize=7)
    fig.colorbar(im, ax=fig.axes, shrink=0.8, label="val loss")
    return save_figure(fig, stem)


def report(sweep_dir, runs, n_boot: int = N_BOOT) -> dict:
    """Writes the report into ``sweep_dir``; returns its paths and summary lines."""
    sweep_dir = Path(sweep_dir)
    rows = run_rows(runs)
    done = [r for r in rows if _ok(r)]
    excluded = [r for r in rows if not _ok(r)]
    transfer = transfer_table(rows)
    sigma = sigma_table(rows, transfer, n_boot)
    verdicts = claims(transfer, sigma)
    out: dict = {"report": sweep_dir / "report.md", "plots": [], "lines": []}
    for key, v in verdicts.items():
        out["lines"].append(f"{PAPER[key]}: {verdict(v['held'], MATCH_NATS)} ({v['text']})")
    md = ["# Layerwise weight decay across widths (arXiv 2510.15262)\n",
          f"Sweep `{sweep_dir.name}`, {len(rows)} runs ({len(done)} done), written "
          f"{time.strftime('%Y-%m-%d %H:%M')}. Loss: validation loss at the end of each run "
          f"(nats per byte); one seed, so differences under ~{MATCH_NATS} nats are noise. "
          "lr and wd are the base values; the layerwise arm multiplies a hidden matrix's "
          "lr by base/d and its decay by sqrt(d/base).\n",
          "## Claims at this scale\n",
          *[f"- **{verdict(v['held'], MATCH_NATS)}**: {PAPER[k]}. Ours: {v['text']}."
            for k, v in verdicts.items()], ""]
    if transfer:
        s = transfer["setting"]
        paths = _plot_transfer(transfer, sweep_dir / "transfer")
        paths += _plot_grid(rows, sweep_dir / "grid")
        out["plots"] += paths
        md += [f"## Transfer from d{s['base_width']}: lr {s['lr']:g}, wd {s['wd']:g} "
               f"(loss {s['loss']:.4f} there)\n", "![transfer](transfer.png)\n",
               markdown_table(transfer["table"]), "![grid](grid.png)\n"]
    if sigma:
        paths = _plot_sigma(sigma, sweep_dir / "sigma_max")
        out["plots"] += paths
        md += ["## sigma_max against width (transferred runs)\n", "![sigma_max](sigma_max.png)\n",
               markdown_table([{"arm": arm, "slope": s["slope"], "68% lo": s["68%"][0],
                                "68% hi": s["68%"][1], "95% lo": s["95%"][0],
                                "95% hi": s["95%"][1], "predicted": s["predicted_slope"]}
                               for arm, s in sigma.items()]),
               f"Intervals: {n_boot} bootstrap resamples of the hidden matrices.\n"]
    if excluded:
        md += ["## Runs left out\n", markdown_table(
            [{"run": r["name"], "status": r["status"], "loss": r["loss"]} for r in excluded])]
    prov = provenance(runs)
    md += ["## Machine\n", provenance_markdown(prov)]
    out["report"].write_text("\n".join(md))
    (sweep_dir / "report.json").write_text(json.dumps(
        {"runs": len(rows), "done": len(done), "claims": verdicts, "transfer": transfer,
         "sigma_max": sigma, "excluded": [r["name"] for r in excluded], "provenance": prov},
        indent=2, default=float))
    return out
