"""Bootstrap intervals for any fit on a runs table: resample runs, refit, take quantiles.

``bootstrap_fit(df, fit_fn, n_boot)`` calls ``fit_fn(resampled_df) -> {constant: value}``
on ``n_boot`` resamples of the rows (with replacement; within each group of ``group_col``
when given, so an isoFLOP budget or a (N, D) cell keeps its size) and reports percentile
intervals at 68% and 95%. With ``distinct=(column, k)`` a group's draw is repeated until
it holds at least ``k`` distinct values of ``column`` (a parabola through 5 model sizes
needs 3 of them; a plain draw of 5 has fewer 4 times in 10). A resample whose refit fails (too few distinct points, a
parabola opening downward) is counted and skipped, never silently replaced: the result
says how many refits succeeded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

LEVELS = (0.68, 0.95)


def bootstrap_fit(df: pd.DataFrame, fit_fn: Callable[[pd.DataFrame], Mapping[str, float]],
                  n_boot: int = 200, *, group_col: str | None = None, seed: int = 0,
                  levels: tuple[float, ...] = LEVELS,
                  distinct: tuple[str, int] | None = None) -> dict:
    """Percentile intervals of ``fit_fn``'s constants over run resamples.

    Args:
      df: the runs table (one row per run).
      fit_fn: refits a table; returns ``{name: value}`` (the same names every time).
      n_boot: resamples (>= 2).
      group_col: resample within each value of this column (None: all rows together).
      seed: of the resampling.
      levels: central interval levels in (0, 1).
      distinct: ``(column, k)``: redraw a group until it has ``k`` distinct values of
        ``column`` (or it has fewer than ``k`` itself).

    Returns:
      ``{"n_boot", "n_ok", "failures": {error text: count}, "point": fit_fn(df),
      "intervals": {name: {level: (lo, hi)}}, "samples": {name: [values]}}``.
    """
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot!r}")
    for lv in levels:
        if not 0 < lv < 1:
            raise ValueError(f"interval level must be in (0, 1), got {lv!r}")
    if group_col is not None and group_col not in df.columns:
        raise ValueError(f"group column {group_col!r} missing; available: {list(df.columns)}")
    point = dict(fit_fn(df))
    groups = ([np.flatnonzero((df[group_col] == g).to_numpy()) for g in df[group_col].unique()]
              if group_col else [np.arange(len(df))])
    rng = np.random.default_rng(seed)

    def draw(idx: np.ndarray) -> np.ndarray:
        rows = rng.choice(idx, size=len(idx), replace=True)
        if distinct is None:
            return rows
        col, k = distinct
        values = df[col].to_numpy()
        k = min(k, len(np.unique(values[idx])))
        for _ in range(1000):
            if len(np.unique(values[rows])) >= k:
                break
            rows = rng.choice(idx, size=len(idx), replace=True)
        return rows

    samples: dict[str, list[float]] = {k: [] for k in point}
    failures: dict[str, int] = {}
    for _ in range(n_boot):
        rows = np.concatenate([draw(idx) for idx in groups])
        try:
            got = fit_fn(df.iloc[rows].reset_index(drop=True))
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as e:
            key = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            failures[key] = failures.get(key, 0) + 1
            continue
        for k in point:
            samples[k].append(float(got[k]))
    n_ok = n_boot - sum(failures.values())
    intervals = {}
    for k, vals in samples.items():
        v = np.asarray([x for x in vals if math.isfinite(x)])
        intervals[k] = {lv: ((float(np.quantile(v, (1 - lv) / 2)),
                              float(np.quantile(v, 1 - (1 - lv) / 2))) if len(v) >= 2
                             else (math.nan, math.nan)) for lv in levels}
    return {"n_boot": n_boot, "n_ok": n_ok, "failures": failures, "point": point,
            "intervals": intervals, "samples": samples}


def intervals_table(boot: dict) -> list[dict]:
    """Rows ``{constant, fit, 68% lo, 68% hi, 95% lo, 95% hi}`` of :func:`bootstrap_fit`."""
    rows = []
    for k, by_level in boot["intervals"].items():
        row = {"constant": k, "fit": boot["point"][k]}
        for lv, (lo, hi) in by_level.items():
            row[f"{round(100 * lv)}% lo"] = lo
            row[f"{round(100 * lv)}% hi"] = hi
        rows.append(row)
    return rows
