"""``benchmarks/_train_setup.py``, which the GPU figures (``benchmarks/gpu.sh``) rely on,
on a tiny model: its train step learns, and the update alone still runs after the step
has donated the carried state."""

import sys
from pathlib import Path

import gin
import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _train_setup import jaxlab_train_step  # noqa: E402

from jaxlab.nn import ModelConfig  # noqa: E402

TINY = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, max_seq_len=16)
CONSTANT_LR = ["make_schedule.name = 'constant'", "make_schedule.warmup_steps = 0"]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_step_learns_the_batch(optimizer):
    run = jaxlab_train_step(TINY, batch=4, seq=16, optimizer=optimizer,
                            gin_bindings=[*CONSTANT_LR, "build_optimizer.learning_rate = 0.01"])
    losses = [float(run.step()) for _ in range(30)]
    assert run.opt.name == optimizer
    # one fixed batch of random tokens, memorised: 5.4 nats -> 0.1 (adamw), 0.5 (muon)
    assert losses[-1] < losses[0] / 2, losses


def test_update_alone_after_donating_steps_and_bindings_applied():
    run = jaxlab_train_step(TINY, batch=2, seq=16, optimizer="muon",
                            gin_bindings=["muon.ns_dtype = 'bfloat16'"])
    assert gin.query_parameter("muon.ns_dtype") == "bfloat16"
    run.step()
    run.step()  # the step's params and state are donated: update() must not need them
    first, second = run.update(), run.update()
    updates, _ = first
    leaves = jax.tree.leaves(updates)
    assert leaves and all(np.isfinite(np.asarray(x)).all() for x in leaves)
    # fixed gradients and state: the same update every call
    for a, b in zip(leaves, jax.tree.leaves(second[0])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
