"""summary.json records what a fit needs, read from the run itself: the operative weight
decay and optimizer hyperparameters, the target sparsity, and non-zero counts measured in
the final parameters (a scaling fit on the trainer's own directories must not need the
sweep file)."""

import pytest

from jaxlab.nn import ModelConfig
from jaxlab.scaling.results import load_runs
from jaxlab.train.config import TrainConfig
from jaxlab.train.gin_setup import parse_gin
from jaxlab.train.loop import train
from jaxlab.train.metrics import read_metrics

TINY = ModelConfig(d_model=32, n_layers=1, n_heads=2, max_seq_len=64)
CFG = TrainConfig(steps=12, batch_size=4, seq_len=32, eval_every=0, eval_batches=1,
                  checkpoint_every=0, log_every=1, mesh="data=1", progress=False)


def test_dense_run_records_weight_decay_and_dense_counts(tmp_path):
    parse_gin([], ["adamw.weight_decay = 0.05", "adamw.b2 = 0.99"])
    s = train(tmp_path, TINY, cfg=CFG)
    assert s["status"] == "done"
    assert s["weight_decay"] == 0.05 and s["lr"] == 3e-3
    assert s["optimizer_hparams"] == {"b1": 0.9, "b2": 0.99, "eps": 1e-8, "weight_decay": 0.05}
    assert s["sparsity"] == 0.0
    # a dense model has no exact zeros after training
    assert s["nonzero_params"] == s["params_total"]
    assert s["nonzero_non_embedding"] == s["params_non_embedding"]
    df = load_runs([tmp_path])
    assert df["wd"][0] == 0.05 and df["nonzero_N"][0] == s["params_non_embedding"]
    assert df["tau"][0] == pytest.approx(s["batch_tokens"] / (3e-3 * 0.05 * s["tokens_seen"]))


def test_sparse_run_counts_zeros_in_its_parameters(tmp_path):
    parse_gin([], ["sparsity.target = 0.5", "sparsity.schedule = 'oneshot'",
                   "sparsity.start = 0.0", "sparsity.end = 0.0", "sparsity.unit = 'fraction'"])
    s = train(tmp_path, TINY, cfg=CFG)
    assert s["status"] == "done" and s["sparsity"] == 0.5
    # measured in the parameters, it agrees with the masks' own count of the last step
    last = [m for m in read_metrics(tmp_path / "metrics.jsonl")
            if "sparse/nonzero_non_embedding" in m][-1]
    assert s["nonzero_non_embedding"] == last["sparse/nonzero_non_embedding"]
    assert s["nonzero_non_embedding"] < 0.6 * s["params_non_embedding"]
