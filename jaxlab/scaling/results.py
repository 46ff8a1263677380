"""Reading training results into one table: run directories now, the sweep store later.

Run-directory contract (written by the training entry point): `summary.json` with
`status` ("done" | "diverged" | "failed" | "running"), `final_train_loss`,
`final_val_loss`, `tokens_seen`, `params_total`, `params_non_embedding`, `train_flops`,
`batch_tokens`, `steps`, `wall_time_s`, `optimizer`, `lr`, `weight_decay`, `sparsity`,
`nonzero_params` and `nonzero_non_embedding` (counted in the final parameters), optional
`n_bar`; and `metrics.jsonl`, one JSON object per line with `step`, `tokens`,
`train_loss` and sometimes `val_loss`. A run launched by a sweep also has `run.json`:
its sweep labels and variables become columns `label.<axis>` and `var.<name>` (e.g. an
isoFLOP budget, ``--budget_key label.budget``).

Table columns (one row per run; missing optional values are NaN / None):
  run, status, optimizer, N, N_total, D, C, B, steps, lr, wd, sparsity, N_bar, nonzero,
  nonzero_N, final_train_loss, final_val_loss, wall_time_s, TPP (= D / N),
  tau (= B / (lr wd D)), then any label.* / var.* columns.

:func:`load_csv` reads the same table from a CSV of external runs (columns by these
names; at least the ones the law needs).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

__all__ = ["COLUMNS", "find_run_dirs", "load_csv", "load_metrics", "load_runs",
           "summaries_to_frame"]

# table column -> summary.json key
_FIELDS = {
    "N": "params_non_embedding", "N_total": "params_total", "D": "tokens_seen",
    "C": "train_flops", "B": "batch_tokens", "steps": "steps", "lr": "lr",
    "wd": "weight_decay", "sparsity": "sparsity", "N_bar": "n_bar", "nonzero": "nonzero_params",
    "nonzero_N": "nonzero_non_embedding",
    "final_train_loss": "final_train_loss", "final_val_loss": "final_val_loss",
    "wall_time_s": "wall_time_s",
}
COLUMNS = ["run", "status", "optimizer", *_FIELDS, "TPP", "tau"]
STATUSES = ("done", "diverged", "failed", "running")


def _num(v) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x


def summaries_to_frame(summaries: Iterable[Mapping], runs: Iterable[str] | None = None,
                       include_status: Iterable[str] = ("done",),
                       extras: Iterable[Mapping] | None = None) -> pd.DataFrame:
    """Table (see module docstring) from summary dicts, e.g. rows of the sweep store.

    ``extras``: per run, more columns (e.g. ``{"label.budget": "1e15"}``).

    Rows whose status is not in `include_status` are left out of the table but listed in
    `df.attrs["excluded"]` as (run, status) pairs, so reports can name diverged runs.
    """
    include = set(include_status)
    bad = include - set(STATUSES)
    if bad:
        raise ValueError(f"unknown status {sorted(bad)}; valid: {STATUSES}")
    rows, excluded = [], []
    summaries = list(summaries)
    runs = list(runs) if runs is not None else [str(i) for i in range(len(summaries))]
    extras = list(extras) if extras is not None else [{}] * len(summaries)
    for run, s, extra in zip(runs, summaries, extras):
        status = s.get("status")
        if status not in STATUSES:
            raise ValueError(f"run {run}: status {status!r} is not one of {STATUSES}")
        if status not in include:
            excluded.append((run, status))
            continue
        row = {"run": run, "status": status, "optimizer": s.get("optimizer")}
        row.update({col: _num(s.get(key)) for col, key in _FIELDS.items()})
        row.update(extra)
        rows.append(row)
    extra_cols = list(dict.fromkeys(k for r in rows for k in r if k not in COLUMNS))
    df = pd.DataFrame(rows, columns=COLUMNS[:-2] + extra_cols)
    df.insert(len(COLUMNS) - 2, "TPP", df["D"] / df["N"])
    df.insert(len(COLUMNS) - 1, "tau", df["B"] / (df["lr"] * df["wd"] * df["D"]))
    df.attrs["excluded"] = excluded
    return df


def find_run_dirs(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Run directories under `paths`: each path itself if it holds summary.json, else
    every directory below it that does (sorted)."""
    found = []
    for p in paths:
        p = os.fspath(p)
        if not os.path.isdir(p):
            raise FileNotFoundError(f"run path {p!r} is not a directory")
        if os.path.isfile(os.path.join(p, "summary.json")):
            found.append(p)
            continue
        for root, _, files in os.walk(p):
            if "summary.json" in files:
                found.append(root)
    return sorted(set(found))


def load_runs(paths: Iterable[str | os.PathLike], include_status: Iterable[str] = ("done",)
              ) -> pd.DataFrame:
    """Runs table from run directories (or folders containing them).

    Raises FileNotFoundError when no summary.json is found and ValueError on a malformed
    summary (names the file). Excluded runs (not in include_status) are in
    `df.attrs["excluded"]`.
    """
    dirs = find_run_dirs(paths)
    if not dirs:
        raise FileNotFoundError(f"no summary.json under {list(map(os.fspath, paths))}")
    summaries, extras = [], []
    for d in dirs:
        path = os.path.join(d, "summary.json")
        try:
            with open(path) as f:
                summaries.append(json.load(f))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        extras.append(_sweep_columns(d))
    return summaries_to_frame(summaries, runs=dirs, include_status=include_status,
                              extras=extras)


def _sweep_columns(run_dir: str) -> dict:
    """``label.<axis>`` and scalar ``var.<name>`` columns from a sweep run's run.json."""
    try:
        with open(os.path.join(run_dir, "run.json")) as f:
            run = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    out = {f"label.{k}": str(v) for k, v in (run.get("labels") or {}).items()}
    out.update({f"var.{k}": v for k, v in (run.get("variables") or {}).items()
                if isinstance(v, (int, float, str))})
    return out


def load_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Runs table from a CSV of external results (e.g. a paper's table): one row per
    run, columns named as in the table above (`N`, `D`, `C`, `final_val_loss`, ...).
    Missing `status` means done; `TPP` and `tau` are derived when absent."""
    df = pd.read_csv(path)
    if df.empty:
        raise ValueError(f"{path}: no rows")
    known = set(COLUMNS)
    if not known & set(df.columns) - {"run", "status"}:
        raise ValueError(f"{path}: no known columns; expected some of {COLUMNS}")
    if "run" not in df:
        df.insert(0, "run", [f"{os.path.basename(path)}:{i + 2}" for i in range(len(df))])
    if "status" not in df:
        df["status"] = "done"
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = np.nan if col not in ("run", "status", "optimizer") else None
    if df["TPP"].isna().all():
        df["TPP"] = df["D"] / df["N"]
    if df["tau"].isna().all():
        df["tau"] = df["B"] / (df["lr"] * df["wd"] * df["D"])
    excluded = [(r, s) for r, s in zip(df["run"], df["status"]) if s != "done"]
    df = df[df["status"] == "done"].reset_index(drop=True)
    df.attrs["excluded"] = excluded
    return df


def load_metrics(run_dir: str | os.PathLike) -> pd.DataFrame:
    """A run's metric curve from metrics.jsonl: columns step, tokens, train_loss, val_loss
    (NaN where absent), sorted by step. Blank and truncated last lines are skipped."""
    path = os.path.join(os.fspath(run_dir), "metrics.jsonl")
    rows = []
    with open(path) as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:  # a run killed mid-write
                break
            raise ValueError(f"{path} line {i + 1} is not valid JSON: {e}") from e
    df = pd.DataFrame(rows)
    for col in ("step", "tokens", "train_loss", "val_loss"):
        if col not in df.columns:
            df[col] = np.nan
    return df.sort_values("step", kind="stable").reset_index(drop=True)
