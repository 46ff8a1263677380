"""The sweep file: a gin-style dialect for declaring sweeps, and its parser.

gin has no sweep syntax, so a sweep file is a small dialect that reads like gin::

    # experiments/<study>/sweep.gin
    include 'jaxlab/configs/train/cpu_smoke.gin'      # base config of every run

    TrainConfig.seq_len = 128                         # a fixed binding of every run

    var.tokens_per_param = 20                         # a sweep variable (no gin binding)

    axis.model = {                                    # one axis; its keys vary together
        'gin_file': ['jaxlab/configs/models/d64.gin', 'jaxlab/configs/models/d128.gin'],
        'label':    ['d64', 'd128'],                  # optional readable names
    }
    axis.lr = {'build_optimizer.learning_rate': [1e-3, 3e-3]}
    axis.seed = {'TrainConfig.seed': [0, 1]}

    sweep.product = ['model', 'lr', 'seed']           # cross product, in this order
    sweep.zip = [['lr', 'seed']]                      # ...except these axes move together

    derived.tokens = 'tokens_per_param * N'           # a derived variable
    derived.TrainConfig.steps = 'ceil(tokens / batch_tokens)'   # a derived binding

    smoke/var.tokens_per_param = 5                    # preset `smoke` overrides
    smoke/axis.seed = {'TrainConfig.seed': [0]}

Statements (one per line; a value may span lines inside brackets; ``#`` comments):

* ``include 'FILE.gin'``: a gin file passed to every run (``--gin_file``), resolved
  from the sweep file's folder, the current folder, then the jaxlab checkout.
* ``Configurable.param = VALUE``: a gin binding passed to every run (any gin value).
* ``var.NAME = LITERAL``: a variable for derived expressions.
* ``axis.NAME = {KEY: [values...], ...}``: an axis. A KEY with a dot is a gin binding;
  ``'gin_file'`` adds a gin file per value; ``'label'`` names the values in run
  directories; any other KEY is a variable. All lists of one axis have one length and
  move together (a zip inside the axis).
* ``sweep.product = [AXIS, ...]``: the order of the cross product (default: all axes,
  in the order declared). ``sweep.zip = [[AXIS, AXIS], ...]``: groups of axes of equal
  length that move together; a group takes the product position of its first axis.
* ``derived.NAME = 'EXPR'`` (variable) or ``derived.Configurable.param = 'EXPR'``
  (binding): evaluated per run, in the order declared, after the axes (see
  :mod:`jaxlab.launch.derive` for the names and functions an EXPR may use).
* ``sweep.SETTING = LITERAL``: ``name`` (study name, default: the sweep file's folder),
  ``workers``, ``threads_per_run``, ``processes_per_run`` (local backend: each run as that
  many processes of one multi-process JAX run, :mod:`jaxlab.train.distributed`) with
  ``cpu_devices_per_process`` (fake CPU devices each, for CPU hosts and the tests),
  ``analysis`` (the study's analysis module, default
  ``analysis.py`` next to the sweep file), ``ray_resources`` (dict of Ray task options),
  ``est_flops_per_s`` and ``est_startup_s`` (for the dry run's time estimate),
  ``where`` (an expression, as for ``derived``: only the combinations for which it is
  true become runs, e.g. a full grid at one width and a local one at the others).
* A branched run: ``TrainConfig.init_from = 'sweep:AXIS=LABEL@STEP'`` (usually derived)
  starts from a checkpoint of a sibling run, which the launcher runs first (see
  :mod:`jaxlab.launch.expand`).
* ``PRESET/STATEMENT``: a statement of preset ``PRESET`` (gin scope syntax); it
  replaces the unscoped statement with the same key, or adds to it, when the sweep is
  launched with ``--preset PRESET``.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path
from typing import Any

SETTINGS = {
    "name": str,
    "product": list,
    "zip": list,
    "workers": int,
    "threads_per_run": int,
    "processes_per_run": int,
    "cpu_devices_per_process": int,
    "analysis": str,
    "ray_resources": dict,
    "est_flops_per_s": float,
    "est_startup_s": float,
    "where": str,
}
RESERVED_AXIS_KEYS = ("gin_file", "label")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BINDING = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*\.[A-Za-z_][A-Za-z0-9_]*$")
_PRESET = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)/(.*)$")


class SweepError(ValueError):
    """A sweep file that cannot be expanded; the message names the file, line and value."""


@dataclasses.dataclass(frozen=True)
class Statement:
    """One statement of a sweep file: ``key = value`` (``include`` has key ``include``)."""

    kind: str            # include | binding | var | axis | derived | sweep
    key: str             # e.g. 'TrainConfig.steps', 'model', 'name'
    value: Any           # parsed literal (raw text for bindings that are not literals)
    raw: str             # value as written
    where: str           # 'FILE:LINE'
    preset: str | None = None


@dataclasses.dataclass(frozen=True)
class Axis:
    """An axis: ``values[key]`` lists of one length, moving together."""

    name: str
    values: dict[str, list]
    where: str

    @property
    def size(self) -> int:
        return len(next(iter(self.values.values())))

    def labels(self) -> list[str]:
        if "label" in self.values:
            return [str(v) for v in self.values["label"]]
        out = []
        for i in range(self.size):
            parts = []
            for key, vals in self.values.items():
                v = vals[i]
                parts.append(Path(v).stem if key == "gin_file" else _short(v))
            label = "_".join(parts)
            numeric = all(isinstance(vals[i], (int, float)) for vals in self.values.values())
            out.append(f"{self.name}{label}" if numeric else label)
        return out


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file with one preset applied."""

    path: Path
    preset: str | None
    presets: tuple[str, ...]
    includes: tuple[str, ...]
    bindings: dict[str, str]        # fixed gin bindings: key -> value text
    variables: dict[str, Any]
    axes: dict[str, Axis]
    factors: tuple[tuple[str, ...], ...]   # product order; each factor zips its axes
    derived: dict[str, str]         # key -> expression, in evaluation order
    settings: dict[str, Any]

    @property
    def study(self) -> str:
        name = self.settings.get("name") or self.path.resolve().parent.name
        return f"{name}-{self.preset}" if self.preset else name


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


# ----------------------------------------------------------------------------- lexing
def _statements_text(text: str, path: str):
    """Yields ``(line_number, statement_text)``: joins lines while brackets are open."""
    buf, start, depth, quote = [], 0, 0, None
    for lineno, line in enumerate(text.splitlines(), 1):
        kept = []
        i = 0
        while i < len(line):
            ch = line[i]
            if quote:
                kept.append(ch)
                if ch == "\\" and i + 1 < len(line):
                    kept.append(line[i + 1])
                    i += 1
                elif ch == quote:
                    quote = None
            elif ch == "#":
                break
            else:
                if ch in "'\"":
                    quote = ch
                elif ch in "([{":
                    depth += 1
                elif ch in ")]}":
                    depth -= 1
                    if depth < 0:
                        raise SweepError(f"{path}:{lineno}: unbalanced {ch!r}")
                kept.append(ch)
            i += 1
        if quote:
            raise SweepError(f"{path}:{lineno}: unterminated string")
        chunk = "".join(kept).strip()
        if not buf and not chunk:
            continue
        if not buf:
            start = lineno
        buf.append(chunk)
        if depth == 0:
            yield start, " ".join(b for b in buf if b)
            buf = []
    if buf:
        raise SweepError(f"{path}:{start}: bracket opened here is never closed")


def _literal(raw: str, where: str, what: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise SweepError(f"{where}: {what} must be a Python literal, got {raw!r}") from None


def _statement(lineno: int, text: str, path: str) -> Statement:
    where = f"{path}:{lineno}"
    preset = None
    left = text.split("=", 1)[0]
    if "/" in left and not text.startswith("include "):
        m = _PRESET.match(text)
        if not m or "/" in m.group(2).split("=", 1)[0]:
            raise SweepError(f"{where}: {left.strip()!r}: a preset statement is "
                             f"'PRESET/KEY = VALUE' with one plain PRESET name")
        preset, text = m.group(1), m.group(2)
    if text.startswith("include "):
        if preset:
            raise SweepError(f"{where}: include cannot be scoped to a preset ({preset!r})")
        value = _literal(text[len("include "):].strip(), where, "include")
        if not isinstance(value, str):
            raise SweepError(f"{where}: include takes a quoted path, got {value!r}")
        return Statement("include", "include", value, value, where)
    if "=" not in text:
        raise SweepError(f"{where}: expected 'KEY = VALUE' or \"include 'FILE'\", got {text!r}")
    key, raw = (s.strip() for s in text.split("=", 1))
    head, _, rest = key.partition(".")
    if head in ("var", "axis", "sweep") and _NAME.match(rest):
        value = _literal(raw, where, f"{key}")
        if head == "sweep" and rest not in SETTINGS:
            raise SweepError(f"{where}: unknown setting sweep.{rest}; valid: {sorted(SETTINGS)}")
        return Statement(head, rest, value, raw, where, preset)
    if head == "derived" and (_NAME.match(rest) or _BINDING.match(rest)):
        value = _literal(raw, where, key)
        if not isinstance(value, str):
            raise SweepError(f"{where}: {key} must be a quoted expression, got {raw!r}")
        return Statement("derived", rest, value, raw, where, preset)
    if head in ("var", "axis", "sweep", "derived"):
        raise SweepError(f"{where}: bad name {key!r}: {head}.NAME needs a plain NAME"
                         + (" or a gin binding" if head == "derived" else ""))
    if not _BINDING.match(key):
        raise SweepError(f"{where}: {key!r} is not a gin binding 'Configurable.param'")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # a gin reference such as @fn or %MACRO: passed to gin as written
    return Statement("binding", key, value, raw, where, preset)


def parse_statements(path: str | Path) -> list[Statement]:
    """Every statement of the sweep file at ``path``, presets included."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {str(path)!r} does not exist")
    return [_statement(n, t, str(path)) for n, t in _statements_text(path.read_text(), str(path))]


# ----------------------------------------------------------------------------- building
def _resolve_include(name: str, sweep_path: Path, where: str) -> str:
    from jaxlab.train.gin_setup import PACKAGE_ROOT

    for base in (sweep_path.parent, Path.cwd(), PACKAGE_ROOT):
        p = (base / name)
        if p.is_file():
            p = p.resolve()
            try:  # inside the checkout: a repo-relative path, so run hashes are portable
                return str(p.relative_to(PACKAGE_ROOT))
            except ValueError:
                return str(p)
    raise SweepError(f"{where}: included file {name!r} not found next to the sweep file, in "
                     f"the current folder or in {PACKAGE_ROOT}")


def _axis(st: Statement, sweep_path: Path) -> Axis:
    if not isinstance(st.value, dict) or not st.value:
        raise SweepError(f"{st.where}: axis.{st.key} must be a non-empty dict "
                         f"{{KEY: [values]}}, got {st.raw!r}")
    values: dict[str, list] = {}
    for key, vals in st.value.items():
        if not isinstance(key, str) or not (_NAME.match(key) or _BINDING.match(key)):
            raise SweepError(f"{st.where}: axis.{st.key} key {key!r} must be a gin binding "
                             f"'Configurable.param', 'gin_file', 'label' or a variable name")
        if not isinstance(vals, (list, tuple)) or not vals:
            raise SweepError(f"{st.where}: axis.{st.key}[{key!r}] must be a non-empty list, "
                             f"got {vals!r}")
        values[key] = list(vals)
    sizes = {k: len(v) for k, v in values.items()}
    if len(set(sizes.values())) != 1:
        raise SweepError(f"{st.where}: the lists of axis.{st.key} must have one length "
                         f"(they move together), got {sizes}")
    if "gin_file" in values:
        values["gin_file"] = [_resolve_include(f, sweep_path, st.where)
                              for f in values["gin_file"]]
    if "label" in values:
        labels = [str(v) for v in values["label"]]
        if len(set(labels)) != len(labels):
            raise SweepError(f"{st.where}: axis.{st.key} labels repeat: {labels}")
    return Axis(st.key, values, st.where)


def presets_of(statements: list[Statement]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s.preset for s in statements if s.preset))


def load_spec(path: str | Path, preset: str | None = None) -> SweepSpec:
    """Parses the sweep file at ``path`` and applies ``preset`` (None: no preset)."""
    path = Path(path)
    statements = parse_statements(path)
    presets = presets_of(statements)
    if preset is not None and preset not in presets:
        raise SweepError(f"preset {preset!r} is not defined in {path}; valid: {list(presets)}")
    chosen: dict[tuple[str, str], Statement] = {}
    includes: list[str] = []
    for st in statements:  # unscoped first, then the preset's statements replace them
        if st.kind == "include":
            includes.append(_resolve_include(st.value, path, st.where))
        elif st.preset is None:
            if (st.kind, st.key) in chosen:
                raise SweepError(f"{st.where}: {st.kind}.{st.key} is set twice (first at "
                                 f"{chosen[(st.kind, st.key)].where})")
            chosen[(st.kind, st.key)] = st
    for st in statements:
        if st.preset is not None and st.preset == preset:
            chosen[(st.kind, st.key)] = st
    by_kind = {k: [s for s in chosen.values() if s.kind == k]
               for k in ("binding", "var", "axis", "derived", "sweep")}
    axes = {s.key: _axis(s, path) for s in by_kind["axis"]}
    variables = {s.key: s.value for s in by_kind["var"]}
    settings = {}
    for s in by_kind["sweep"]:
        want = SETTINGS[s.key]
        ok = isinstance(s.value, want) or (want is float and isinstance(s.value, int))
        if not ok:
            raise SweepError(f"{s.where}: sweep.{s.key} must be a {want.__name__}, got {s.raw!r}")
        settings[s.key] = s.value
    for name, ax in axes.items():
        for key in ax.values:
            if key in variables:
                raise SweepError(f"{ax.where}: axis.{name} sweeps {key!r}, also set by var.{key}")
    factors = _factors(axes, settings, str(path))
    derived = {s.key: s.value for s in by_kind["derived"]}
    for key in derived:
        for ax in axes.values():
            if key in ax.values:
                raise SweepError(f"derived.{key} is also swept by axis.{ax.name} ({ax.where})")
    return SweepSpec(
        path=path, preset=preset, presets=presets, includes=tuple(includes),
        bindings={s.key: s.raw if isinstance(s.value, str) and s.value == s.raw
                  else repr(s.value) for s in by_kind["binding"]},
        variables=variables, axes=axes, factors=factors, derived=derived, settings=settings)


def _factors(axes: dict[str, Axis], settings: dict, where: str) -> tuple[tuple[str, ...], ...]:
    """The product order as factors of zipped axes, checked against the declared axes."""
    zips = settings.get("zip", [])
    group_of: dict[str, tuple[str, ...]] = {}
    for group in zips:
        if not isinstance(group, (list, tuple)) or len(group) < 2:
            raise SweepError(f"{where}: each sweep.zip entry must list >= 2 axes, got {group!r}")
        group = tuple(group)
        for name in group:
            if name not in axes:
                raise SweepError(f"{where}: sweep.zip names axis {name!r}; declared axes: "
                                 f"{list(axes)}")
            if name in group_of:
                raise SweepError(f"{where}: axis {name!r} is in two sweep.zip groups")
            group_of[name] = group
        sizes = {n: axes[n].size for n in group}
        if len(set(sizes.values())) != 1:
            raise SweepError(f"{where}: zipped axes must have one length, got {sizes}")
    order = settings.get("product", list(axes))
    for name in order:
        if name not in axes:
            raise SweepError(f"{where}: sweep.product names axis {name!r}; declared axes: "
                             f"{list(axes)}")
    missing = [a for a in axes if a not in order and not
               any(g in order for g in group_of.get(a, ()))]
    if missing:
        raise SweepError(f"{where}: axes {missing} are declared but missing from "
                         f"sweep.product {order}")
    factors, seen = [], set()
    for name in order:
        group = group_of.get(name, (name,))
        if group in seen:
            continue
        seen.add(group)
        factors.append(group)
    return tuple(factors)
