"""The optimizer registry: names, errors, and diagnostics that survive wrapping."""

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab.diagnostics import collect_stats, with_stats
from jaxlab.optim.adamuon import adamuon
from jaxlab.optim.dion import dion
from jaxlab.optim.muon import muon
from jaxlab.optim.normuon import normuon
from jaxlab.optim.trasmuon import trasmuon
from jaxlab.partition import describe_params
from jaxlab.sparse.training import sparsity_config
from jaxlab.train import optimizer as registry
from jaxlab.train.gin_setup import optimizer_config


def _counting(infos, lr, make_lr, wd_mult=None):
    """A factory whose state reports its own step count as a `stats` figure."""
    tx = optax.chain(optax.scale_by_adam(), optax.scale_by_learning_rate(lr))
    return with_stats(tx, lambda state: {"count": state[0].count})


registry.register("_counting")(_counting)  # once per process: gin keeps its configurables


@pytest.fixture
def counting_optimizer():
    return "_counting"


@pytest.mark.parametrize("clip_norm", [None, 1.0])
@pytest.mark.parametrize("layerwise", [False, True])
@pytest.mark.parametrize("averaging", [None, "ema"])
def test_stats_are_found_through_every_wrapper(counting_optimizer, clip_norm, layerwise,
                                               averaging):
    """The factory's `stats` reach the metrics whatever wraps it: clipping, layerwise
    scaling, weight averaging and sparse training (whose own figures join them)."""
    params = {"blocks": {"w": jnp.ones((2, 8, 8))}, "norm": jnp.ones(8)}
    opt = registry.build_optimizer(params, 10, optimizer=counting_optimizer,
                                   clip_norm=clip_norm, layerwise=layerwise,
                                   averaging=averaging, sparsity=sparsity_config(target=0.5))
    state = opt.tx.init(params)
    for _ in range(3):
        _, state = opt.tx.update(params, state, params)
    stats = collect_stats(state)
    assert int(stats["count"]) == 3
    assert float(stats["sparse/target_sparsity"]) == 0.5


def test_collect_stats_walks_chains_partitions_and_dicts():
    class S(NamedTuple):
        inner: object
        stats: dict

    state = (optax.EmptyState(), {"a": [S(S(None, {"x": 1, "y": 2}), {"x": 0})]})
    assert collect_stats(state) == {"x": 0, "y": 2}   # the outer figure wins
    assert collect_stats((optax.EmptyState(),)) == {}


def test_a_factory_must_return_a_transformation():
    registry.OPTIMIZERS["_pair"] = lambda infos, lr, make_lr: (optax.sgd(lr), None)
    try:
        with pytest.raises(TypeError, match="returned tuple; it must return an optax"):
            registry.build_optimizer({"w": jnp.ones((2, 2))}, 10, optimizer="_pair")
    finally:
        del registry.OPTIMIZERS["_pair"]


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown optimizer 'lion'; valid: .*adamw"):
        registry.build_optimizer({"w": jnp.ones((2, 2))}, 10, optimizer="lion")


def test_adamw_decays_matrices_not_vectors():
    params = {"h": {"w": jnp.ones((4, 4)), "b": jnp.ones(4)}}
    opt = registry.build_optimizer(params, 10, clip_norm=None)
    zero = {"h": {"w": jnp.zeros((4, 4)), "b": jnp.zeros(4)}}
    state = opt.tx.init(params)
    for _ in range(5):  # past the warmup's lr(0) = 0; zero grads keep Adam's moments 0
        updates, state = opt.tx.update(zero, state, params)
    lr = float(opt.lr(4))
    assert lr > 1e-4
    assert float(jnp.abs(updates["h"]["b"]).max()) == 0.0
    assert jnp.allclose(updates["h"]["w"], -lr * 0.1 * params["h"]["w"], rtol=1e-6)


def test_a_new_optimizer_is_one_file_that_registers_itself(tmp_path):
    """tests/train/toy_optimizer.py registers itself; the CLI trains with it through
    --gin_bindings alone (import, name, a hyperparameter), and the loss goes down."""
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")])}
    workdir = tmp_path / "toy"
    cmd = [sys.executable, "-m", "jaxlab.train", "--workdir", str(workdir),
           "--gin_file", "jaxlab/configs/train/cpu_smoke.gin",
           "--gin_bindings", "import toy_optimizer",
           "--gin_bindings", "build_optimizer.optimizer = 'toy_sign_descent'",
           "--gin_bindings", "build_optimizer.learning_rate = 3e-3",
           "--gin_bindings", "toy_sign_descent.momentum = 0.8",
           "--gin_bindings", "ModelConfig.d_model = 32", "--gin_bindings", "ModelConfig.n_layers = 1",
           "--gin_bindings", "ModelConfig.n_heads = 2", "--gin_bindings", "TrainConfig.seq_len = 64",
           "--gin_bindings", "TrainConfig.eval_every = 0", "--gin_bindings", "TrainConfig.steps = 40",
           "--gin_bindings", "TrainConfig.progress = False"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300,
                          cwd=here.parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["optimizer"] == "toy_sign_descent" and summary["status"] == "done"
    losses = [json.loads(line)["train_loss"]
              for line in (workdir / "metrics.jsonl").read_text().splitlines()
              if "train_loss" in line]
    assert losses[-1] < losses[0] - 0.3, losses
    assert "toy_sign_descent.momentum = 0.8" in (workdir / "config.gin").read_text()


@pytest.mark.parametrize("name, fn", [("muon", muon), ("trasmuon", trasmuon),
                                      ("normuon", normuon), ("adamuon", adamuon),
                                      ("dion", dion)])
def test_the_gin_name_builds_exactly_the_python_call(name, fn):
    """No binding: build_optimizer's `muon` equals muon(schedule, infos) with the Python
    defaults, update for update; the registry's defaults are the function's."""
    params = {"embed": {"embedding": jnp.ones((32, 16))},
              "blocks": {"w": jax.random.normal(jax.random.key(0), (2, 16, 24))},
              "norm": jnp.ones(16)}
    opt = registry.build_optimizer(params, 20, optimizer=name, clip_norm=None)
    ref = fn(opt.lr, describe_params(params))
    g = jax.tree.map(lambda x: jax.random.normal(jax.random.key(1), x.shape), params)
    s1, s2 = opt.tx.init(params), ref.init(params)
    for _ in range(3):
        u1, s1 = opt.tx.update(g, s1, params)
        u2, s2 = ref.update(g, s2, params)
        for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
            np.testing.assert_array_equal(a, b)
    defaults = {p.name: p.default for p in inspect.signature(fn).parameters.values()
                if p.kind is p.KEYWORD_ONLY}
    factory = inspect.signature(registry.OPTIMIZERS[name]).parameters
    for key, value in defaults.items():
        if key not in ("adam_learning_rate", "wd_mult"):
            assert factory[key].default == value, key


def test_gin_gathers_one_explicit_config_and_the_library_reads_no_gin():
    """The entry point's optimizer_config() turns every gin name of the optimizer's parts
    into one OptimizerConfig; build_optimizer with it equals the Python call with the same
    arguments, and bindings made after the config was built change nothing."""
    gin.parse_config("build_optimizer.optimizer = 'muon'\n"
                     "build_optimizer.learning_rate = 0.02\n"
                     "muon.weight_decay = 0.05\nmuon.ns_steps = 3\n"
                     "make_schedule.name = 'wsd'\nsparsity.target = 0.5")
    try:
        cfg = optimizer_config(clip_norm=None)
        gin.parse_config("muon.weight_decay = 0.5\nmake_schedule.name = 'constant'")
        params = {"blocks": {"w": jax.random.normal(jax.random.key(0), (2, 16, 24))},
                  "norm": jnp.ones(16)}
        opt = registry.build_optimizer(params, 20, cfg)
    finally:
        gin.clear_config()
    assert (cfg.optimizer, cfg.learning_rate, cfg.clip_norm) == ("muon", 0.02, None)
    assert cfg.hparams["weight_decay"] == 0.05 and cfg.hparams["ns_steps"] == 3
    assert cfg.schedule["name"] == "wsd" and cfg.sparsity.target == 0.5
    ref = registry.build_optimizer(
        params, 20, optimizer="muon", learning_rate=0.02, clip_norm=None,
        hparams={"weight_decay": 0.05, "ns_steps": 3}, schedule={"name": "wsd"},
        sparsity=sparsity_config(target=0.5))
    g = jax.tree.map(lambda x: jax.random.normal(jax.random.key(1), x.shape), params)
    s1, s2 = opt.tx.init(params), ref.tx.init(params)
    for _ in range(3):
        u1, s1 = opt.tx.update(g, s1, params)
        u2, s2 = ref.tx.update(g, s2, params)
        for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
            np.testing.assert_array_equal(a, b)
    assert opt.hparams["weight_decay"] == 0.05 and opt.sparsity == 0.5


def test_an_unknown_or_missing_hyperparameter_names_itself():
    with pytest.raises(ValueError, match="'muon' has no hyperparameter 'wd'; valid: .*weight_decay"):
        registry.build_optimizer({"w": jnp.ones((2, 2))}, 10, optimizer="muon",
                                 hparams={"wd": 0.1})

    def needs_beta(infos, lr, make_lr, beta):
        return optax.sgd(lr, momentum=beta)

    registry.OPTIMIZERS["_needs_beta"] = needs_beta
    try:
        with pytest.raises(ValueError, match="'_needs_beta' needs hyperparameter 'beta'"):
            registry.build_optimizer({"w": jnp.ones((2, 2))}, 10, optimizer="_needs_beta")
    finally:
        del registry.OPTIMIZERS["_needs_beta"]


def _needs_rank(infos, lr, make_lr, rank: int):
    """A factory with a hyperparameter that has no default."""
    del infos, make_lr, rank
    return optax.sgd(lr)


registry.register("_needs_rank")(_needs_rank)


def test_a_gin_value_that_must_be_set_and_is_not_is_named():
    gin.parse_config("build_optimizer.optimizer = '_needs_rank'")
    try:
        with pytest.raises(ValueError, match=r"_needs_rank.rank must be set"):
            optimizer_config()
        gin.parse_config("_needs_rank.rank = 4")
        assert optimizer_config().hparams == {"rank": 4}
    finally:
        gin.clear_config()


def test_a_misspelt_hyperparameter_is_refused_by_gin():
    with pytest.raises(ValueError, match="'muon' doesn't have a parameter named 'wieght_decay'"):
        gin.parse_config("muon.wieght_decay = 0.2")
