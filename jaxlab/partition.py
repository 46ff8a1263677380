"""Parameter labelling: which leaves are hidden matrices, embeddings, heads or vectors.

Muon (arXiv 2502.16982) orthogonalises only hidden 2-D weights; the embedding, the output
head and vector-like parameters (norm gains, biases, scalars) go to AdamW. Getting this
wrong is the classic trap (optax.contrib.muon sends every 2-D leaf, embeddings included,
to Muon and every 3-D scan stack to Adam). This module labels every leaf once, from
metadata where the model provides it and from path patterns and shapes otherwise, and
records for each matrix which axes are stacked (layers / experts), fan-in and fan-out, so
a ``(L, D, H, Dh)`` attention kernel is treated as ``L`` matrices of shape ``D x (H Dh)``.

Works on ``nnx.State`` (leaves wrapped in ``nnx.Variable`` with ``logical_axes`` and
``fan_in_ndim`` metadata, as jaxlab's model makes them) and on plain pytrees of arrays.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

MATRIX, EMBEDDING, HEAD, VECTOR = "matrix", "embedding", "head", "vector"
LABELS = (MATRIX, EMBEDDING, HEAD, VECTOR)

_STACK_AXES = ("layers", "experts")
_EMBED_PATTERN = re.compile(r"(^|/)(embed|embedding|embeddings|wte|tok_embeddings|token_embedding)(/|$)")
_HEAD_PATTERN = re.compile(r"(^|/)(lm_head|head|unembed|output_projection|logits)(/|$)")
_STACK_PATTERN = re.compile(r"(^|/)(blocks|layers|scan|experts|stack)(/|$)")
# Names of vector-like leaves in plain pytrees (norm gains, biases), so a scan-stacked
# (L, D) gain is L vectors, not one L x D matrix. The single letters `b` and `g` are
# too common as generic names to override a leaf's shape: they only mark the trailing
# axis as the vector axis under a stack path; the longer names are vectors at any shape.
_VECTOR_PATTERN = re.compile(
    r"(^|/)(bias|b|scale|gain|g|ln\w*|\w*norm\w*|layer_?norm\w*)$", re.IGNORECASE)
_NAMED_VECTOR_PATTERN = re.compile(
    r"(^|/)(bias|scale|gain|ln\w*|\w*norm\w*|layer_?norm\w*)$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class ParamInfo:
    """How the optimizer should see one parameter leaf.

    Attributes:
      path: ``"/"``-joined tree path, e.g. ``"blocks/attn/q/kernel"``.
      label: one of :data:`LABELS`.
      shape: the leaf's shape.
      batch_ndim: leading stacked axes (scan layers, experts); the rest is one matrix.
      fan_in_ndim: axes after the batch axes that ``x @ W`` contracts.
    """

    path: str
    label: str
    shape: tuple[int, ...]
    batch_ndim: int = 0
    fan_in_ndim: int = 1

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.shape[: self.batch_ndim]

    @property
    def fan_in(self) -> int:
        return math.prod(self.shape[self.batch_ndim: self.batch_ndim + self.fan_in_ndim])

    @property
    def fan_out(self) -> int:
        return math.prod(self.shape[self.batch_ndim + self.fan_in_ndim:])

    @property
    def num_matrices(self) -> int:
        return math.prod(self.batch_shape)

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """``(fan_in, fan_out)`` of each matrix in the leaf."""
        return (self.fan_in, self.fan_out)

    def as_matrices(self, x: jax.Array) -> jax.Array:
        """``x`` of shape ``shape`` -> ``(num_matrices, fan_in, fan_out)``."""
        return jnp.reshape(x, (self.num_matrices, self.fan_in, self.fan_out))

    def from_matrices(self, x: jax.Array) -> jax.Array:
        """Inverse of :meth:`as_matrices`."""
        return jnp.reshape(x, self.shape)


def is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def path_str(path) -> str:
    """``"/"``-joined readable form of a ``jax.tree_util`` key path."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            if k.name != "value":
                parts.append(k.name)
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.FlattenedIndexKey):
            parts.append(str(k.key))
        else:
            parts.append(str(k))
    return "/".join(parts)


def axes_from_dimension_numbers(path: str, shape: tuple[int, ...], dims: Any) -> tuple[int, int]:
    """``(batch_ndim, fan_in_ndim)`` from an ``optax.contrib.MuonDimensionNumbers``
    (``reduction_axis`` = fan-in, ``output_axis`` = fan-out, every other axis a batch).
    jaxlab reshapes without transposing, so the batch axes must lead and the fan-in axes
    precede the fan-out axes; another layout is an error naming the leaf."""
    ndim = len(shape)
    as_tuple = lambda a: tuple(sorted(x % ndim for x in ((a,) if isinstance(a, int) else a)))  # noqa: E731
    red, out = as_tuple(dims.reduction_axis), as_tuple(dims.output_axis)
    batch = tuple(i for i in range(ndim) if i not in red and i not in out)
    if set(red) & set(out) or not red or not out or (batch + red + out) != tuple(range(ndim)):
        raise ValueError(
            f"{path!r} of shape {shape}: MuonDimensionNumbers(reduction_axis={dims.reduction_axis}, "
            f"output_axis={dims.output_axis}) must name batch axes first, then the fan-in "
            "(reduction) axes, then the fan-out (output) axes, contiguously")
    return len(batch), len(red)


_STACK_NAMES = ("blocks", "layers", "scan", "experts", "stack")


def _plain_matrix_axes(path: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """The documented rule for a hidden matrix of a plain pytree (no metadata): each stack
    component of the path (``blocks``, ``layers``, ``scan``, ``experts``, ``stack``) is one
    leading batch axis, and what remains must be a 2-D ``fan_in x fan_out`` matrix. So
    ``layers/mlp (L, D, F)`` is L matrices and ``layers/experts/w (L, E, D, F)`` is L E
    matrices. Any other rank is ambiguous (is a ``(D, H, Dh)`` kernel ``D x (H Dh)`` or H
    matrices?) and an error that names the leaf and how to state its axes."""
    k = sum(part in _STACK_NAMES for part in path.split("/"))
    if len(shape) == 2 + k:
        return k, 1
    raise ValueError(
        f"cannot tell the matrix axes of {path!r} with shape {shape} in a plain pytree: its "
        f"path has {k} stack component(s) ({'/'.join(_STACK_NAMES)}), so the rule expects "
        f"{2 + k} axes (stacks, fan_in, fan_out). Say them with axis_overrides={{regex: "
        "(batch_ndim, fan_in_ndim)}} or dimension_numbers (optax.contrib."
        "MuonDimensionNumbers), or label the leaf with overrides={regex: 'vector'} to keep "
        "it out of the matrix optimizer")


def _describe_leaf(path: str, leaf: Any, overrides: Mapping[str, str],
                   axis_overrides: Mapping[str, tuple[int, int]], dims: Any = None) -> ParamInfo:
    meta = leaf.get_metadata() if is_variable(leaf) else {}
    value = leaf.get_value() if is_variable(leaf) else leaf
    shape = tuple(value.shape)
    axes = meta.get("logical_axes")
    if axes is not None:
        batch_ndim = 0
        while batch_ndim < len(axes) and axes[batch_ndim] in _STACK_AXES:
            batch_ndim += 1
    elif _VECTOR_PATTERN.search(path) and len(shape) >= 1:
        batch_ndim = len(shape) - 1 if _STACK_PATTERN.search(path) else 0
    else:
        batch_ndim = len(shape) - 2 if len(shape) > 2 and _STACK_PATTERN.search(path) else 0
    fan_in_ndim = meta.get("fan_in_ndim", 1)
    said = dims is not None or any(re.search(p, path) for p in axis_overrides)
    if dims is not None:
        batch_ndim, fan_in_ndim = axes_from_dimension_numbers(path, shape, dims)
    for pattern, (b, f) in axis_overrides.items():
        if re.search(pattern, path):
            batch_ndim, fan_in_ndim = b, f
    core = shape[batch_ndim:]

    label = meta.get("label")  # a layer may say it (the MoE router: "head")
    for pattern, lab in overrides.items():
        if re.search(pattern, path):
            label = lab
    if label is None:
        if axes is not None and "vocab" in axes:
            label = EMBEDDING if axes[batch_ndim] == "vocab" else HEAD
        elif _EMBED_PATTERN.search(path):
            label = EMBEDDING
        elif _HEAD_PATTERN.search(path):
            label = HEAD
        elif len(core) < 2 or (axes is None and _NAMED_VECTOR_PATTERN.search(path)):
            label = VECTOR
        else:
            label = MATRIX
    if label not in LABELS:
        raise ValueError(f"label {label!r} for {path!r} is not one of {LABELS}")
    if label == MATRIX and axes is None and "fan_in_ndim" not in meta and not said:
        batch_ndim, fan_in_ndim = _plain_matrix_axes(path, shape)
        core = shape[batch_ndim:]
    if label == MATRIX and not 0 < fan_in_ndim < len(core):
        raise ValueError(
            f"matrix {path!r} of shape {shape} with batch_ndim={batch_ndim} cannot have "
            f"fan_in_ndim={fan_in_ndim}; need 0 < fan_in_ndim < {len(core)}"
        )
    return ParamInfo(path=path, label=label, shape=shape, batch_ndim=batch_ndim,
                     fan_in_ndim=fan_in_ndim if len(core) >= 2 else 0)


def describe_params(params: Any, overrides: Mapping[str, str] | None = None,
                    axis_overrides: Mapping[str, tuple[int, int]] | None = None,
                    dimension_numbers: Any = None) -> Any:
    """A tree of :class:`ParamInfo`, one per leaf, with the structure of ``params``.

    For an ``nnx.State`` the ``nnx.Variable`` nodes are replaced by their ParamInfo, so the
    result is a prefix of ``params`` (what ``optax.partition`` expects of labels).
    Matrix axes come from the model's metadata, else from ``dimension_numbers`` or
    ``axis_overrides``, else from the plain-pytree rule (2-D: one matrix; 3-D under a
    stack path: a stack; anything else an error naming the leaf). :func:`matrix_table`
    prints what was chosen.

    Args:
      params: ``nnx.State``, abstract state, or any pytree of arrays.
      overrides: ``{regex on the path: label}``; later entries win.
      axis_overrides: ``{regex: (batch_ndim, fan_in_ndim)}`` for unusual layouts.
      dimension_numbers: a tree with the structure of ``params`` whose leaves are
        ``optax.contrib.MuonDimensionNumbers`` or None (optax's ``muon_weight_dimension_numbers``).
    """
    overrides = dict(overrides or {})
    axis_overrides = dict(axis_overrides or {})
    if dimension_numbers is None:
        return jax.tree_util.tree_map_with_path(
            lambda p, x: _describe_leaf(path_str(p), x, overrides, axis_overrides),
            params, is_leaf=is_variable)
    is_dims = lambda d: d is None or hasattr(d, "reduction_axis")  # noqa: E731
    dims = jax.tree.leaves(dimension_numbers, is_leaf=is_dims)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_variable)
    if len(dims) != len(flat):
        raise ValueError(f"dimension_numbers has {len(dims)} leaves for {len(flat)} params; "
                         "give one MuonDimensionNumbers (or None) per parameter")
    return jax.tree_util.tree_unflatten(treedef, [
        _describe_leaf(path_str(p), x, overrides, axis_overrides, d)
        for (p, x), d in zip(flat, dims)])


def matrix_table(infos: Any) -> str:
    """One line per leaf: path, shape, label and, for matrices, how the optimizer sees
    them (``L x fan_in x fan_out``), to check the inferred shapes before training."""
    rows = []
    for i in infos_list(infos):
        seen = (f"{i.num_matrices} x {i.fan_in} x {i.fan_out}" if i.label == MATRIX else "")
        rows.append((i.path, str(i.shape), i.label, seen))
    widths = [max(len(r[k]) for r in rows + [("path", "shape", "label", "matrices")])
              for k in range(4)]
    lines = [("path", "shape", "label", "matrices (count x fan_in x fan_out)"), *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines)


def label_params(params: Any, overrides: Mapping[str, str] | None = None, **kw) -> Any:
    """Tree of label strings (see :func:`describe_params`), usable by ``optax.partition``."""
    return jax.tree.map(lambda i: i.label, describe_params(params, overrides, **kw),
                        is_leaf=lambda x: isinstance(x, ParamInfo))


def infos_list(infos: Any) -> list[ParamInfo]:
    """The ParamInfo leaves of a tree from :func:`describe_params`, in flatten order."""
    return jax.tree.leaves(infos, is_leaf=lambda x: isinstance(x, ParamInfo))
