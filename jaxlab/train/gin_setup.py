"""Gin at the entry points: parsing with clear errors, the explicit configs built from
the bindings, and the operative config written next to each run.

Gin binds configuration objects here and nowhere deeper: the config dataclasses
(``TrainConfig``, ``ModelConfig``, ``DataConfig``, ...) are gin-configurable, and the
optimizer's parts are gathered by :func:`optimizer_config` into one explicit
:class:`~jaxlab.train.optimizer.OptimizerConfig` that the loop passes to
``build_optimizer``. Library functions take arguments and read no gin.
"""

from __future__ import annotations

from pathlib import Path

import gin

# Importing these registers every configurable that a binding may name.
import jaxlab.data.images  # noqa: F401
import jaxlab.data.pipeline  # noqa: F401
import jaxlab.nn.config  # noqa: F401
import jaxlab.nn.vit  # noqa: F401
import jaxlab.train.config  # noqa: F401
from jaxlab.optim.averaging import weight_averaging
from jaxlab.optim.layerwise import layerwise_rules
from jaxlab.optim.schedules import make_schedule
from jaxlab.sparse.training import sparsity_config
from jaxlab.train import gin_names
from jaxlab.train.optimizer import OptimizerConfig

# The gin names of the optimizer's parts (each registered optimizer has its own, made by
# `register`): the keyword arguments of these plain functions.
gin_names.expose("make_schedule", make_schedule, skip=("peak_lr", "total_steps"))
gin_names.expose("layerwise_rules", layerwise_rules, skip=("infos",))
gin_names.expose("weight_averaging", weight_averaging, skip=("tx", "kind"))
gin_names.expose("sparsity", sparsity_config)
# build_optimizer.* are OptimizerConfig's own fields; the parts above fill the rest.
_PARTS = ("hparams", "schedule", "layerwise_rules", "weight_averaging", "sparsity")
gin_names.expose("build_optimizer", OptimizerConfig, skip=_PARTS)


def optimizer_config(**overrides) -> OptimizerConfig:
    """The :class:`~jaxlab.train.optimizer.OptimizerConfig` the current gin bindings
    describe (``build_optimizer.*``, ``<optimizer>.*``, ``make_schedule.*``,
    ``layerwise_rules.*``, ``weight_averaging.*``, ``sparsity.*``); ``overrides``
    replace its fields. Only the optimizer picked has its hyperparameters read."""
    own = {**gin_names.collect("build_optimizer"), **overrides}
    name = own.get("optimizer", OptimizerConfig.optimizer)
    parts = {"hparams": gin_names.collect(name) if gin_names.exposed(name) else {},
             "schedule": gin_names.collect("make_schedule"),
             "layerwise_rules": gin_names.collect("layerwise_rules"),
             "weight_averaging": gin_names.collect("weight_averaging"),
             "sparsity": sparsity_config(**gin_names.collect("sparsity"))}
    return OptimizerConfig(**{**parts, **own})


# Config paths such as 'jaxlab/configs/models/d128.gin' resolve from any directory.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
gin.add_config_file_search_path(str(PACKAGE_ROOT))


def resolve_gin_file(path: str) -> str:
    """``path`` as given if it exists, else relative to the jaxlab checkout."""
    if Path(path).exists():
        return path
    if (PACKAGE_ROOT / path).exists():
        return str(PACKAGE_ROOT / path)
    raise FileNotFoundError(f"gin file {path!r} does not exist (looked in . and {PACKAGE_ROOT})")


def parse_gin(files: list[str], bindings: list[str]) -> None:
    """Parses gin files then bindings; unknown configurables or parameters raise
    ``ValueError`` naming the offending binding."""
    files = [resolve_gin_file(f) for f in files]
    try:
        gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
    except (ValueError, KeyError) as e:
        raise ValueError(f"bad gin config ({e}); files={files}, bindings={bindings}") from None


def write_operative_config(workdir: str | Path) -> None:
    """Writes ``workdir/config.gin``: every binding that the run actually used."""
    Path(workdir, "config.gin").write_text(gin.operative_config_str())
