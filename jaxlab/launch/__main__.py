"""The sweep launcher.

    python -m jaxlab.launch --sweep experiments/muon_vs_adamw/sweep.gin --preset smoke \\
        [--backend local|ray] [--workers N] [--dry_run] [--check] [--report]
    python -m jaxlab.launch status --sweep ... --preset smoke [--watch SECONDS]
    python -m jaxlab.launch report --sweep ... --preset smoke

Runs go to ``<root>/<study>[-<preset>]/<labels>-<hash>/`` (root ``sweeps/`` by default).
Relaunching skips finished runs and resumes the others. The sweep file dialect is
described in :mod:`jaxlab.launch.spec`. Exit status: 0 when every run finished (done or
diverged), 1 when some failed, 2 for a bad sweep file or command line.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

COMMANDS = ("launch", "status", "report")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jaxlab.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", default="launch", choices=COMMANDS)
    p.add_argument("--sweep", required=True, help="the sweep .gin file")
    p.add_argument("--preset", default=None, help="preset of the sweep file, e.g. smoke, full")
    p.add_argument("--root", default="sweeps", help="folder of sweep directories")
    p.add_argument("--backend", default="local", choices=("local", "ray"))
    p.add_argument("--workers", type=int, default=None,
                   help="parallel runs (default: sweep.workers, else 1)")
    p.add_argument("--threads_per_run", type=int, default=None,
                   help="CPU threads per run (default: cores / workers)")
    p.add_argument("--pin", action="store_true",
                   help="local: pin each worker to its own cores (for a machine of your own)")
    p.add_argument("--no_compile_cache", action="store_true",
                   help="do not share a JAX compilation cache between the sweep's runs")
    p.add_argument("--ray_address", default=None, help="Ray cluster (default: $RAY_ADDRESS or "
                   "a new local instance)")
    p.add_argument("--dry_run", action="store_true", help="print the run table and exit")
    p.add_argument("--check", action="store_true",
                   help="compile the largest runs' train step first (python -m jaxlab.train "
                   "--compile_only) and launch only if each fits its device's memory")
    p.add_argument("--memory_limit", default=None,
                   help="with --check: the device memory to check against, e.g. '1GiB'")
    p.add_argument("--topology", default=None,
                   help="with --check: compile for this TPU slice described without its "
                   "hardware, e.g. 'v5e:4x4' (needs jax[tpu])")
    p.add_argument("--report", action="store_true", help="write the report after the sweep")
    p.add_argument("--watch", type=float, default=0.0,
                   help="status: refresh every SECONDS until the sweep is finished")
    p.add_argument("--verbose", action="store_true",
                   help="show the traceback of a bad-input error")
    return p


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _print_report(out: dict) -> None:
    for line in out.get("lines", []):
        print(line)
    print(f"report: {Path(out['report']).resolve()}")
    for plot in out.get("plots", []):
        print(f"plot:   {Path(plot).resolve()}")


def main(argv: list[str] | None = None) -> int:
    """The launcher; bad input (sweep file, preset, a missing sweep result) is one
    ``error:`` line and exit 2 (``--verbose``: the traceback)."""
    args = _parser().parse_args(argv)
    from jaxlab import cli_errors
    from jaxlab.launch.spec import SweepError

    try:
        return _main(args)
    except (SweepError, RuntimeError, *cli_errors.BAD_INPUT) as e:
        if args.verbose:
            raise
        return cli_errors.report(e)


def _main(args) -> int:
    from jaxlab.launch.expand import load_plan

    plan = load_plan(args.sweep, args.preset, args.root)
    workers = args.workers or plan.setting("workers", 1)
    threads = args.threads_per_run or plan.setting("threads_per_run")
    if args.command == "status":
        from jaxlab.launch.status import watch

        watch(plan, args.watch)
        return 0
    if args.command == "report":
        from jaxlab.launch.report import make_report

        _print_report(make_report(plan))
        return 0
    from jaxlab.launch.table import plan_table

    print(plan_table(plan, workers if args.backend == "local" else len(plan.runs)))
    if args.check:
        from jaxlab.launch.check import check_plan

        check_plan(plan, memory_limit=args.memory_limit,  # SweepError (exit 2): no fit
                   topology=args.topology)
    if args.dry_run:
        return 0
    from jaxlab.launch.runner import launch

    if args.backend == "local":
        options = {"workers": workers, "threads_per_run": threads, "pin": args.pin,
                   "processes_per_run": plan.setting("processes_per_run", 1),
                   "cpu_devices_per_process": plan.setting("cpu_devices_per_process")}
    else:
        options = {"address": args.ray_address, "resources": plan.setting("ray_resources"),
                   "threads_per_run": threads, "workers": args.workers}
    signal.signal(signal.SIGTERM, _terminate)  # like Ctrl-C: runs stop with a summary
    t0 = time.perf_counter()
    counts = launch(plan, args.backend, compile_cache=not args.no_compile_cache, **options)
    print(f"launcher wall time {time.perf_counter() - t0:.0f}s")
    if args.report:
        from jaxlab.launch.report import make_report

        _print_report(make_report(plan))
    return 1 if counts.get("failed") or counts.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
