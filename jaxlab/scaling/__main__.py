"""Command line: fit a scaling law to finished runs and write a report.

    python -m jaxlab.scaling fit --runs runs/sweep1 runs/sweep2 --law chinchilla --out fits/
    python -m jaxlab.scaling fit --runs runs/ --law power-law --baseline adamw --out fits/
    python -m jaxlab.scaling fit --runs sweeps/iso --law isoflop --budget_key label.budget \
        --bootstrap 200 --out fits/
    python -m jaxlab.scaling fit --csv paper_table.csv --law chinchilla --out fits/

Writes report.json, report.md and PNG/SVG plots into --out; prints the Markdown.
"""
from __future__ import annotations

import argparse
import sys

from jaxlab.scaling.report import LAWS, write_fit_report
from jaxlab.scaling.results import STATUSES, load_csv, load_runs


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m jaxlab.scaling")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a law to run directories and write a report")
    source = fit.add_mutually_exclusive_group(required=True)
    source.add_argument("--runs", nargs="+", help="run directories or their parents")
    source.add_argument("--csv", help="a CSV of runs (columns N, D, C, final_val_loss, ...)")
    fit.add_argument("--law", choices=LAWS, default="chinchilla")
    fit.add_argument("--out", required=True, help="output folder")
    fit.add_argument("--loss-col", default="final_val_loss",
                     choices=["final_val_loss", "final_train_loss"])
    fit.add_argument("--baseline", default="adamw", help="baseline optimizer for power-law")
    fit.add_argument("--bootstrap", type=int, default=0,
                     help="bootstrap resamples: 68%% and 95%% intervals of every constant")
    fit.add_argument("--budget_key", "--budget-key", default=None,
                     help="isoflop: the column naming each run's budget (e.g. label.budget); "
                          "default: C rounded to 3 significant digits")
    fit.add_argument("--include-status", nargs="+", default=["done"], choices=STATUSES)
    args = parser.parse_args(argv)

    df = load_csv(args.csv) if args.csv else load_runs(args.runs,
                                                       include_status=args.include_status)
    for run, status in df.attrs.get("excluded", []):
        print(f"left out {run}: status {status}", file=sys.stderr)
    paths = write_fit_report(df, args.law, args.out, loss_col=args.loss_col,
                             baseline=args.baseline, n_boot=args.bootstrap,
                             budget_key=args.budget_key)
    with open(paths["markdown"]) as f:
        print(f.read())
    print(f"wrote {paths['json']}, {paths['markdown']} and {len(paths['plots'])} plots",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
