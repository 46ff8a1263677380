"""Expanding a sweep spec into its runs: axes combined, derived bindings evaluated, every
binding checked against gin, and each run's size, tokens and FLOPs counted.

Nothing is launched here: a bad binding anywhere raises :class:`SweepError` first.

Branched runs: ``TrainConfig.init_from = 'sweep:AXIS=LABEL[,AXIS=LABEL...]@STEP'`` starts
a run from checkpoint ``STEP`` of another run of the same sweep, the one whose labels
are this run's with the named axes set to the given labels (e.g. a cooldown branched
from the constant-lr run of the same lr: ``'sweep:arm=constant@240'``). The launcher
runs a parent before its branches and resolves the reference to the parent's run
directory when the branch starts (:func:`resolve_init_from`).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import itertools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gin

from jaxlab.launch.derive import DeriveError, evaluate
from jaxlab.launch.spec import SweepError, SweepSpec, load_spec

DEFAULT_ROOT = Path("sweeps")
DEFAULT_EST_FLOPS_PER_S = 2.0e10   # achieved by tiny models on one 2-core CPU (measured)
DEFAULT_EST_STARTUP_S = 15.0       # python + JAX import + compile per run
INIT_FROM = "TrainConfig.init_from"
SWEEP_REF = "sweep:"


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: what to pass to ``python -m jaxlab.train`` and its figures."""

    name: str                       # '<readable prefix>-<hash>', the run's directory name
    run_id: str                     # hash of gin files and sorted bindings
    gin_files: tuple[str, ...]
    bindings: tuple[tuple[str, str], ...]   # (key, value text), in application order
    labels: tuple[tuple[str, str], ...]     # (axis, label)
    variables: tuple[tuple[str, Any], ...]
    figures: tuple[tuple[str, float], ...]  # params, steps, tokens, train_flops, est_time_s
    parent: str | None = None       # name of the run this one branches from (same sweep)

    def binding_lines(self) -> list[str]:
        return [f"{k} = {v}" for k, v in self.bindings]

    def figure(self, name: str) -> float:
        return dict(self.figures)[name]

    def to_json(self) -> dict:
        return {"name": self.name, "run_id": self.run_id, "gin_files": list(self.gin_files),
                "bindings": dict(self.bindings), "labels": dict(self.labels),
                "variables": dict(self.variables), "figures": dict(self.figures),
                "parent": self.parent}


@dataclasses.dataclass(frozen=True)
class Plan:
    """A sweep with a preset applied, expanded into runs under ``root / study``."""

    spec: SweepSpec
    runs: tuple[RunSpec, ...]
    root: Path

    @property
    def sweep_dir(self) -> Path:
        return self.root / self.spec.study

    def run_dir(self, run: RunSpec) -> Path:
        return self.sweep_dir / run.name

    def setting(self, name: str, default: Any = None) -> Any:
        return self.spec.settings.get(name, default)


def run_hash(gin_files: list[str], bindings: list[tuple[str, str]]) -> str:
    """The run's identity: a hash of its gin files (in order) and its sorted bindings."""
    blob = json.dumps({"gin_files": list(gin_files),
                       "bindings": sorted(f"{k} = {v}" for k, v in bindings)})
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_")[:80] or "run"


# ----------------------------------------------------------------------------- gin checks
def _register_configurables() -> None:
    import jaxlab.train.gin_setup  # noqa: F401  (registers the core configurables)
    import jaxlab.train.optimizer  # noqa: F401  (registers adamw, muon, trasmuon)



def _valid_params(key: str) -> str:
    configurable = key.rsplit(".", 1)[0].split("/")[-1]
    try:
        fn = gin.get_configurable(configurable)
    except ValueError:
        return "no such configurable"
    params = [p for p in inspect.signature(fn).parameters if p not in ("self", "args", "kwargs")]
    return f"parameters of {configurable}: {params}"


def check_binding(key: str, text: str, source: str) -> None:
    """Raises SweepError naming ``source`` when gin does not know ``key`` or ``text``."""
    try:
        gin.parse_config(f"{key} = {text}")
    except Exception as e:  # noqa: BLE001  (gin raises ValueError, KeyError, ParseError)
        raise SweepError(f"{source}: gin binding '{key} = {text}' is invalid: "
                         f"{str(e).splitlines()[0]} ({_valid_params(key)})") from None


def check_spec(spec: SweepSpec) -> None:
    """Checks every binding key named by the spec (fixed, axes, derived) before expansion."""
    _register_configurables()
    gin.clear_config()
    try:
        for key, text in spec.bindings.items():
            check_binding(key, text, f"{spec.path}: binding")
        for axis in spec.axes.values():
            for key, values in axis.values.items():
                if "." in key:
                    for v in values:
                        check_binding(key, repr(v), f"{axis.where}: axis.{axis.name}")
        for key in spec.derived:
            if "." in key and key.split(".", 1)[0] != "hp":
                configurable, param = key.rsplit(".", 1)
                try:
                    fn = gin.get_configurable(configurable)
                except ValueError:
                    raise SweepError(f"{spec.path}: derived.{key}: no configurable "
                                     f"{configurable!r}") from None
                if param not in inspect.signature(fn).parameters:
                    raise SweepError(f"{spec.path}: derived.{key}: {configurable!r} has no "
                                     f"parameter {param!r} ({_valid_params(key)})")
    finally:
        gin.clear_config()


# ----------------------------------------------------------------------------- names
class _RunNames(Mapping):
    """Names a derived expression may use, resolved against the current gin config."""

    FIGURES = ("N", "N_total", "flops_per_token", "batch_size", "seq_len", "batch_tokens",
               "steps", "lr")

    def __init__(self, variables: dict[str, Any]):
        self.variables = variables

    def figures(self) -> dict[str, float]:
        from jaxlab.tasks import build_task
        from jaxlab.train.config import TrainConfig

        train = TrainConfig()
        task = build_task(train.task, train.seq_len)
        counts = task.param_counts()
        return {"N": counts["non_embedding"], "N_total": counts["total"],
                "flops_per_token": task.flops_per_token()["train"],
                "batch_size": train.batch_size, "seq_len": task.tokens_per_example,
                "batch_tokens": train.batch_size * task.tokens_per_example,
                "steps": train.steps,
                "lr": self["build_optimizer.learning_rate"]}

    def __getitem__(self, name: str) -> Any:
        if name in self.variables:
            return self.variables[name]
        if name in self.FIGURES:
            return self.figures()[name]
        if "." in name:
            try:
                return gin.query_parameter(name)
            except ValueError:
                pass
            configurable, param = name.rsplit(".", 1)
            try:
                p = inspect.signature(gin.get_configurable(configurable)).parameters.get(param)
            except ValueError:
                p = None
            if p is not None and p.default is not inspect.Parameter.empty:
                return p.default
            raise KeyError(f"{name!r} is neither bound nor a parameter with a default")
        raise KeyError(f"valid names: variables {sorted(self.variables)}, "
                       f"figures {list(self.FIGURES)}, or a gin binding 'Configurable.param'")

    def __iter__(self):
        return iter(self.variables)

    def __len__(self) -> int:
        return len(self.variables)


# ----------------------------------------------------------------------------- expansion
def _combinations(spec: SweepSpec):
    """Yields a list of (axis, index) per run, in product order."""
    factor_ranges = [range(spec.axes[f[0]].size) for f in spec.factors]
    for idx in itertools.product(*factor_ranges):
        yield [(axis, i) for factor, i in zip(spec.factors, idx) for axis in factor]


def _expand_one(spec: SweepSpec, choice: list[tuple[str, int]]) -> RunSpec | None:
    """The run of one combination of axis values; None when ``sweep.where`` leaves it out."""
    from jaxlab.train.gin_setup import parse_gin

    gin_files = list(spec.includes)
    bindings: dict[str, str] = dict(spec.bindings)
    variables = dict(spec.variables)
    labels = []
    for axis_name, i in choice:
        axis = spec.axes[axis_name]
        labels.append((axis_name, axis.labels()[i]))
        for key, values in axis.values.items():
            if key == "gin_file":
                gin_files.append(values[i])
            elif key == "label":
                continue
            elif "." in key:
                bindings[key] = repr(values[i])
            else:
                variables[key] = values[i]
    where = f"run {dict(labels)}"
    gin.clear_config()
    try:
        parse_gin(gin_files, [f"{k} = {v}" for k, v in bindings.items()])
    except (ValueError, FileNotFoundError) as e:
        raise SweepError(f"{spec.path}: {where}: {e}") from None
    names = _RunNames(variables)
    for key, expr in spec.derived.items():
        try:
            value = evaluate(expr, names)
        except DeriveError as e:
            raise SweepError(f"{spec.path}: derived.{key} for {where}: {e}") from None
        if "." in key:
            bindings[key] = repr(value)
            check_binding(key, repr(value), f"{spec.path}: derived.{key} for {where}")
        else:
            variables[key] = value
    if "where" in spec.settings:
        try:
            keep = evaluate(spec.settings["where"], names)
        except DeriveError as e:
            raise SweepError(f"{spec.path}: sweep.where for {where}: {e}") from None
        if not keep:
            gin.clear_config()
            return None
    fig = names.figures()
    tokens = fig["steps"] * fig["batch_tokens"]
    train_flops = fig["flops_per_token"] * tokens
    est = (float(spec.settings.get("est_startup_s", DEFAULT_EST_STARTUP_S))
           + train_flops / float(spec.settings.get("est_flops_per_s", DEFAULT_EST_FLOPS_PER_S)))
    figures = (("params_non_embedding", fig["N"]), ("params_total", fig["N_total"]),
               ("flops_per_token", fig["flops_per_token"]), ("steps", fig["steps"]),
               ("batch_tokens", fig["batch_tokens"]), ("tokens", tokens),
               ("train_flops", train_flops), ("est_time_s", est))
    gin.clear_config()
    items = list(bindings.items())
    rid = run_hash(gin_files, items)
    prefix = _slug("-".join(label for _, label in labels))
    return RunSpec(name=f"{prefix}-{rid}", run_id=rid, gin_files=tuple(gin_files),
                   bindings=tuple(items), labels=tuple(labels),
                   variables=tuple(sorted(variables.items())), figures=figures)


def expand(spec: SweepSpec, root: str | Path = DEFAULT_ROOT) -> Plan:
    """All runs of ``spec``; raises SweepError before launching anything if one is bad."""
    check_spec(spec)
    runs = []
    try:
        for choice in _combinations(spec):
            run = _expand_one(spec, choice)
            if run is not None:
                runs.append(run)
    finally:
        gin.clear_config()
    if not runs:
        raise SweepError(f"{spec.path}: sweep.where = {spec.settings['where']!r} leaves no run")
    seen: dict[str, RunSpec] = {}
    for r in runs:
        if r.run_id in seen:
            raise SweepError(f"{spec.path}: runs {dict(seen[r.run_id].labels)} and "
                             f"{dict(r.labels)} have identical bindings; an axis changes "
                             "nothing (a variable no derived binding uses?)")
        seen[r.run_id] = r
    return Plan(spec=spec, runs=tuple(_link_parents(spec, runs)), root=Path(root))


def parse_sweep_ref(text: str) -> tuple[dict[str, str], int] | None:
    """``'sweep:arm=constant,lr=1e-2@240'`` -> ({'arm': 'constant', 'lr': '1e-2'}, 240);
    None for any other ``init_from`` value (a path, None)."""
    if not isinstance(text, str) or not text.startswith(SWEEP_REF):
        return None
    selector, at, step = text[len(SWEEP_REF):].rpartition("@")
    pairs = [p.partition("=") for p in selector.split(",") if p]
    if not at or not step.isdigit() or not pairs or any(not k or not v for k, _, v in pairs):
        raise SweepError(f"{INIT_FROM} = {text!r}: a sweep reference must look like "
                         "'sweep:AXIS=LABEL[,AXIS=LABEL...]@STEP'")
    return {k.strip(): v.strip() for k, _, v in pairs}, int(step)


def _link_parents(spec: SweepSpec, runs: list[RunSpec]) -> list[RunSpec]:
    """Sets ``parent`` of each run whose ``init_from`` is a sweep reference."""
    by_labels = {r.labels: r for r in runs}
    out = []
    for r in runs:
        text = dict(r.bindings).get(INIT_FROM)
        ref = parse_sweep_ref(ast.literal_eval(text)) if text else None
        if ref is None:
            out.append(r)
            continue
        overrides = ref[0]
        labels = dict(r.labels)
        unknown = sorted(set(overrides) - set(labels))
        if unknown:
            raise SweepError(f"{spec.path}: run {labels}: {INIT_FROM} names axes {unknown}; "
                             f"the run's axes are {list(labels)}")
        want = tuple((a, overrides.get(a, v)) for a, v in r.labels)
        parent = by_labels.get(want)
        if parent is None or parent is r:
            what = "is the run itself" if parent is r else "is not a run of this sweep"
            raise SweepError(f"{spec.path}: run {labels}: the parent {dict(want)} of "
                             f"{INIT_FROM} = {text} {what}")
        # It trains only the steps after the branch point: the time estimate says so.
        fig = dict(r.figures)
        startup = float(spec.settings.get("est_startup_s", DEFAULT_EST_STARTUP_S))
        left = max(fig["steps"] - ref[1], 0) / max(fig["steps"], 1)
        fig["est_time_s"] = startup + (fig["est_time_s"] - startup) * left
        out.append(dataclasses.replace(r, parent=parent.name, figures=tuple(fig.items())))
    return out


def resolve_init_from(run: dict, run_dir: str | Path) -> dict[str, str]:
    """The run's bindings with a sweep reference in ``init_from`` replaced by
    ``'<parent run dir>@STEP'`` (the parent is a sibling of ``run_dir``)."""
    bindings = dict(run["bindings"])
    text = bindings.get(INIT_FROM)
    ref = parse_sweep_ref(ast.literal_eval(text)) if text else None
    if ref is not None:
        bindings[INIT_FROM] = repr(f"{Path(run_dir).parent / run['parent']}@{ref[1]}")
    return bindings


def load_plan(path: str | Path, preset: str | None = None,
              root: str | Path = DEFAULT_ROOT) -> Plan:
    """Parses, checks and expands the sweep file at ``path`` with ``preset``."""
    return expand(load_spec(path, preset), root)
