"""``python -m jaxlab.launch report``: runs the study's analysis on the sweep's results.

A study's analysis is a Python file (``sweep.analysis``, default ``analysis.py`` next to
the sweep file) defining ``report(sweep_dir, runs) -> dict``: ``runs`` is the store's
table of this sweep (one row per run: ``axis.<name>`` labels, status, summary figures,
``run_dir``); it writes ``report.md`` and plots into ``sweep_dir`` and returns
``{"report": path, "plots": [paths], "lines": [text to print]}``. Without an analysis
file, a table of the runs is written to ``report.md``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from jaxlab.launch.expand import Plan
from jaxlab.launch.runner import store_of
from jaxlab.launch.table import render


def runs_frame(plan: Plan):
    """This sweep's rows of the store (runs of other presets or old plans left out), with
    ``run_dir`` pointing into the sweep folder as found now (the store records the path
    as launched, which may be relative to another directory or another machine)."""
    df = store_of(plan).dataframe()
    if df.empty:
        return df
    df = df[df["run_id"].isin([r.run_id for r in plan.runs])].reset_index(drop=True)
    df["run_dir"] = [str(plan.sweep_dir / name) for name in df["name"]]
    return df


def analysis_path(plan: Plan) -> Path:
    name = plan.setting("analysis", "analysis.py")
    path = Path(name)
    return path if path.is_absolute() else plan.spec.path.parent / path


def load_analysis(path: Path):
    name = f"jaxlab_study_{path.parent.name}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses (and pickling) look their module up by name
    spec.loader.exec_module(module)
    if not callable(getattr(module, "report", None)):
        raise TypeError(f"{path} must define report(sweep_dir, runs) -> dict")
    return module


def _generic(plan: Plan, runs) -> dict:
    cols = [c for c in runs.columns if c.startswith("axis.")] + [
        "status", "params_non_embedding", "train_flops", "final_train_loss", "final_val_loss"]
    rows = [[str(v) for v in r] for r in runs[cols].itertuples(index=False)]
    path = plan.sweep_dir / "report.md"
    path.write_text(f"# Sweep {plan.spec.study}\n\n```\n{render(cols, rows)}\n```\n")
    return {"report": path, "plots": [], "lines": [f"{len(rows)} runs"]}


def make_report(plan: Plan) -> dict:
    """Writes the report of ``plan``'s sweep; returns the analysis's dict."""
    runs = runs_frame(plan)
    if runs.empty:
        raise RuntimeError(f"sweep {plan.sweep_dir} has no results yet; launch it first")
    path = analysis_path(plan)
    if not path.exists():
        if "analysis" in plan.spec.settings:
            raise FileNotFoundError(f"sweep.analysis = {str(path)!r} does not exist")
        return _generic(plan, runs)
    return load_analysis(path).report(plan.sweep_dir, runs)
