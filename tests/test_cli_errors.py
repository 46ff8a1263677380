"""Bad input at the command line is one ``error:`` line naming the bad value, exit 2.

Through the real entry points (``python -m jaxlab.train`` in a subprocess, the launcher's
``main`` in process): a missing workdir, an unknown flag, a misspelt gin parameter, a mesh
that does not fit the devices, a missing gin file, an unknown preset, a missing sweep file.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from jaxlab import cli_errors
from jaxlab.launch.__main__ import main as launch_main

SWEEP = "experiments/trasmuon_stability/sweep_lm.gin"


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxlab.train", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, names", [
    ([], ["--workdir"]),
    (["--workdir", "W", "--bogus"], ["bogus"]),
    (["--workdir", "W", "--gin_bindings", "TrainConfig.stepz = 3"], ["stepz", "TrainConfig"]),
    (["--workdir", "W", "--gin_bindings", "TrainConfig.mesh = 'data=3'"], ["data=3", "divide"]),
    (["--workdir", "W", "--gin_file", "no_such.gin"], ["no_such.gin"]),
])
def test_train_cli_bad_input_is_one_line(tmp_path, args, names):
    args = [str(tmp_path / "run") if a == "W" else a for a in args]
    proc = _train(*args)
    assert proc.returncode == cli_errors.EXIT_BAD_INPUT, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for name in names:
        assert name in lines[0]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_train_cli_verbose_shows_the_traceback(tmp_path):
    proc = _train("--workdir", str(tmp_path / "run"), "--verbose",
                  "--gin_bindings", "TrainConfig.stepz = 3")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "stepz" in proc.stderr


@pytest.mark.parametrize("args, names", [
    (["--sweep", SWEEP, "--preset", "nope", "--dry_run"], ["nope", "cpu", "smoke", "tiny"]),
    (["--sweep", "no_such_sweep.gin", "--dry_run"], ["no_such_sweep.gin"]),
])
def test_launch_cli_bad_input_is_one_line(tmp_path, capsys, args, names):
    assert launch_main([*args, "--root", str(tmp_path)]) == cli_errors.EXIT_BAD_INPUT
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: ")
    for name in names:
        assert name in err[0]


def test_one_line_joins_gin_call_site_lines():
    e = ValueError("lr must be > 0, got -1\n  In call to configurable 'adamw'\n")
    assert cli_errors.one_line(e) == "lr must be > 0, got -1 In call to configurable 'adamw'"
    assert cli_errors.one_line(KeyError("no run 'x'")) == "no run 'x'"
