"""Derived bindings: small arithmetic expressions evaluated per run, without ``eval``.

An expression (the quoted value of ``derived.KEY = '...'`` in a sweep file) may use:

* numbers, strings, ``None``, ``+ - * / // % **``, parentheses, comparisons,
  ``and`` / ``or`` / ``not`` and ``x if c else y``;
* the sweep's variables (``var.*``, variables of axes, earlier ``derived.NAME``);
* figures of the run's model and training config, after its axes are applied:
  ``N`` (non-embedding parameters), ``N_total``, ``flops_per_token`` (training FLOPs
  per token, :func:`jaxlab.nn.flops_per_token`), ``batch_size``, ``seq_len``,
  ``batch_tokens`` (= batch_size * seq_len), ``steps``, ``lr`` (peak learning rate);
* any gin binding of the run by name, e.g. ``TrainConfig.batch_size`` or
  ``adamw.b2`` (its bound value, else the configurable's default);
* functions: :data:`FUNCTIONS`; every public function of
  :mod:`jaxlab.scaling.hyperparams` as ``hp.NAME(...)`` and of
  :mod:`jaxlab.sparse.accounting` as ``sparse.NAME(...)`` (:data:`NAMESPACES`).

Examples::

    derived.TrainConfig.steps = 'ceil(tokens_per_param * N / batch_tokens)'
    derived.adamw.weight_decay = 'hp.weight_decay_for_timescale(tau, lr, batch_tokens, steps * batch_tokens)'
    derived.TrainConfig.steps = "sparse.equal_compute_steps(dense_steps, S, 'cubic')"

"""

from __future__ import annotations

import ast
import importlib
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

FUNCTIONS: dict[str, Callable] = {
    "ceil": math.ceil, "floor": math.floor, "round": round, "int": int, "float": float,
    "str": str, "min": min, "max": max, "abs": abs, "sqrt": math.sqrt, "exp": math.exp,
    "log": math.log, "log2": math.log2, "log10": math.log10,
}
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_CMPOPS = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
           ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne}


class DeriveError(ValueError):
    """An expression that cannot be evaluated; names the expression and the problem."""


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


# prefix -> module whose public functions expressions may call as ``prefix.NAME(...)``
NAMESPACES = {"hp": "jaxlab.scaling.hyperparams", "sparse": "jaxlab.sparse.accounting"}


def _namespace_function(prefix: str, name: str) -> Callable:
    module_name = NAMESPACES[prefix]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        raise DeriveError(f"{prefix}.{name}: {module_name} is not available") from None

    def own(n: str, v: Any) -> bool:  # public callables defined there, not imported ones
        return (not n.startswith("_") and callable(v)
                and getattr(v, "__module__", None) == module_name)

    fn = getattr(module, name, None)
    if not own(name, fn):
        valid = sorted(n for n, v in vars(module).items() if own(n, v))
        raise DeriveError(f"{prefix}.{name} is not a function of {module_name}; valid: {valid}")
    return fn


def evaluate(expr: str, names: Mapping[str, Any]) -> Any:
    """Value of ``expr``; ``names[name]`` resolves plain and dotted names (KeyError if none)."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise DeriveError(f"expression {expr!r} is not valid: {e.msg}") from None

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not ev(node.operand)
        if isinstance(node, ast.BoolOp):  # short-circuits, as Python does
            value = ev(node.values[0])
            for v in node.values[1:]:
                if bool(value) == isinstance(node.op, ast.Or):
                    return value
                value = ev(v)
            return value
        if isinstance(node, ast.Compare) and all(type(o) in _CMPOPS for o in node.ops):
            left = ev(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                right = ev(right_node)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return ev(node.body) if ev(node.test) else ev(node.orelse)
        if isinstance(node, ast.Call) and not node.keywords:
            name = _dotted(node.func)
            if name in FUNCTIONS:
                fn = FUNCTIONS[name]
            elif name and name.count(".") == 1 and name.split(".")[0] in NAMESPACES:
                fn = _namespace_function(*name.split("."))
            else:
                raise DeriveError(f"in {expr!r}: unknown function {name!r}; valid: "
                                  f"{sorted(FUNCTIONS)} and "
                                  + ", ".join(f"{p}.NAME" for p in NAMESPACES))
            return fn(*[ev(a) for a in node.args])
        name = _dotted(node)
        if name is not None:
            try:
                return names[name]
            except KeyError as e:
                raise DeriveError(f"in {expr!r}: unknown name {name!r} ({e.args[0]})") from None
        raise DeriveError(f"in {expr!r}: {ast.unparse(node)!r} is not allowed (only "
                          "arithmetic, comparisons, names and function calls)")

    try:
        return ev(tree)
    except DeriveError:
        raise
    except (ArithmeticError, ValueError, TypeError) as e:
        raise DeriveError(f"in {expr!r}: {type(e).__name__}: {e}") from None
