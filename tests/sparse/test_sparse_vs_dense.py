"""A 50%-sparse run (cubic magnitude pruning, 25%-75% of compute) trains to within a
stated margin of the dense run of the same size, through ``python -m jaxlab.train``.

Measured (d128, 400 steps of 16 x 128 bytes of pystdlib, AdamW, cubic pruning every 10
steps from step 65 to 270 = 24.9%-75.0% of the run's compute): dense final val loss 1.737,
50%-sparse 1.826 (+0.089 nats, +5.1%); N_bar 262,244 of 402,048 non-embedding params.
The margin asserted is 0.15 nats.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

MARGIN_NATS = 0.15
ROOT = Path(__file__).resolve().parents[2]
SPARSE = ["sparsity.target = 0.5", "sparsity.schedule = 'cubic'", "sparsity.start = 0.25",
          "sparsity.end = 0.75", "sparsity.unit = 'compute'", "sparsity.frequency = 10"]


def run(workdir: Path, bindings: list[str]) -> dict:
    cmd = [sys.executable, "-m", "jaxlab.train", "--workdir", str(workdir),
           "--gin_file", "jaxlab/configs/models/d128.gin",
           "--gin_file", "jaxlab/configs/train/cpu_smoke.gin",
           "--gin_bindings", "TrainConfig.progress = False",
           "--gin_bindings", "TrainConfig.checkpoint_every = 0"]
    for b in bindings:
        cmd += ["--gin_bindings", b]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads((workdir / "summary.json").read_text())


@pytest.mark.slow
def test_half_sparse_within_margin_of_dense(tmp_path):
    dense = run(tmp_path / "dense", [])
    sparse = run(tmp_path / "sparse", SPARSE)
    assert dense["status"] == sparse["status"] == "done"
    assert sparse["final_val_loss"] <= dense["final_val_loss"] + MARGIN_NATS
    # accounting: N_bar between the final sparse and the dense non-embedding count
    n_dense = dense["params_non_embedding"]
    assert 0.5 * n_dense < sparse["n_bar"] < n_dense
    assert sparse["train_flops_sparse"] < 6.0 * n_dense * sparse["tokens_seen"]
    metrics = [json.loads(line) for line in (tmp_path / "sparse" / "metrics.jsonl").open()]
    last = [m for m in metrics if "sparse/density/matrix" in m][-1]
    assert last["sparse/density/matrix"] == pytest.approx(0.5, abs=1e-6)
