"""Reading training results into one table: run directories now, the sweep store later.

Run-directory contract (written by the training entry point): `summary.json` with
`status` ("done" | "diverged" | "failed" | "running"), `final_train_loss`,
`final_val_loss`, `tokens_seen`, `params_total`, `params_non_embedding`, `train_flops`,
`batch_tokens`, `steps`, `wall_time_s` and optional `optimizer`, `lr`, `weight_decay`,
`sparsity`, `n_bar`, `nonzero_params`; and `metrics.jsonl`, one JSON object per line
with `step`, `tokens`, `train_loss` and sometimes `val_loss`.

Table columns (one row per run; missing optional values are NaN / None):
  run, status, optimizer, N, N_total, D, C, B, steps, lr, wd, sparsity, N_bar, nonzero,
  final_train_loss, final_val_loss, wall_time_s, TPP (= D / N), tau (= B / (lr wd D)).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

__all__ = ["COLUMNS", "find_run_dirs", "load_metrics", "load_runs", "summaries_to_frame"]

# table column -> summary.json key
_FIELDS = {
    "N": "params_non_embedding", "N_total": "params_total", "D": "tokens_seen",
    "C": "train_flops", "B": "batch_tokens", "steps": "steps", "lr": "lr",
    "wd": "weight_decay", "sparsity": "sparsity", "N_bar": "n_bar", "nonzero": "nonzero_params",
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
                       include_status: Iterable[str] = ("done",)) -> pd.DataFrame:
    """Table (see module docstring) from summary dicts, e.g. rows of the sweep store.

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
    for run, s in zip(runs, summaries):
        status = s.get("status")
        if status not in STATUSES:
            raise ValueError(f"run {run}: status {status!r} is not one of {STATUSES}")
        if status not in include:
            excluded.append((run, status))
            continue
        row = {"run": run, "status": status, "optimizer": s.get("optimizer")}
        row.update({col: _num(s.get(key)) for col, key in _FIELDS.items()})
        rows.append(row)
    df = pd.DataFrame(rows, columns=COLUMNS[:-2])
    df["TPP"] = df["D"] / df["N"]
    df["tau"] = df["B"] / (df["lr"] * df["wd"] * df["D"])
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
    summaries = []
    for d in dirs:
        path = os.path.join(d, "summary.json")
        try:
            with open(path) as f:
                summaries.append(json.load(f))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
    return summaries_to_frame(summaries, runs=dirs, include_status=include_status)


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
