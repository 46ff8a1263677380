"""Logical axis names -> mesh axes: one rules table for parameters, optimizer state, batches.

Every parameter carries ``logical_axes`` metadata (e.g. ``("embed", "mlp")``). A single
:class:`AxisRules` table maps each logical name to mesh axes; resolving an array's names
raises if two of its dimensions would land on the same mesh axis. A dimension whose size
the mesh axes do not divide stays replicated (tiny models on big meshes still run).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MeshAxes = str | tuple[str, ...] | None

DEFAULT_RULES: tuple[tuple[str, MeshAxes], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("experts", "expert"),
    ("expert_choice", None),
    ("seq", None),
    ("norm", None),
)


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


@dataclasses.dataclass(frozen=True)
class AxisRules:
    """A table ``logical name -> mesh axes``; unknown logical names are an error."""

    rules: tuple[tuple[str, MeshAxes], ...] = DEFAULT_RULES

    def __post_init__(self):
        names = [n for n, _ in self.rules]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"logical axis names given twice in sharding rules: {sorted(dup)}")

    def mesh_axes(self, logical: str | None) -> tuple[str, ...]:
        if logical is None:
            return ()
        table = dict(self.rules)
        if logical not in table:
            raise ValueError(
                f"logical axis {logical!r} has no sharding rule; known: {sorted(table)}"
            )
        return _as_tuple(table[logical])

    def spec(self, logical_axes: Sequence[str | None], shape: Sequence[int] | None = None,
             mesh: Mesh | None = None) -> P:
        """PartitionSpec for an array with the given logical axis names (and shape).

        Mesh axes of size 1 are dropped; with ``shape`` and ``mesh`` given, a dimension that
        its mesh axes do not divide is left replicated.
        """
        used: dict[str, str] = {}
        out = []
        for i, name in enumerate(logical_axes):
            axes = self.mesh_axes(name)
            if mesh is not None:
                axes = tuple(a for a in axes if mesh.shape[a] > 1)
                if shape is not None and axes and shape[i] % math.prod(mesh.shape[a] for a in axes):
                    axes = ()
            for a in axes:
                if a in used:
                    raise ValueError(
                        f"sharding collision: logical axes {used[a]!r} and {name!r} of an array "
                        f"with logical axes {tuple(logical_axes)} both map to mesh axis {a!r}"
                    )
                used[a] = name
            out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
        while out and out[-1] is None:
            out.pop()
        return P(*out)


def is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def logical_axes_of(v: Any, ndim: int) -> tuple[str | None, ...]:
    """The ``logical_axes`` metadata of an ``nnx.Variable`` (all ``None`` when absent)."""
    axes = v.get_metadata().get("logical_axes") if is_variable(v) else None
    if axes is None:
        return (None,) * ndim
    if len(axes) != ndim:
        raise ValueError(f"logical_axes {axes} do not match an array of rank {ndim}")
    return tuple(axes)


def state_shardings(state: Any, mesh: Mesh, rules: AxisRules = AxisRules()) -> Any:
    """NamedShardings for every array of an ``nnx.State`` (or abstract state), from metadata.

    Returns a tree of the same structure as ``state`` with shardings as leaves.
    """

    def one(v):
        value = v.get_value() if is_variable(v) else v
        spec = rules.spec(logical_axes_of(v, value.ndim), value.shape, mesh)
        return v.replace(NamedSharding(mesh, spec)) if is_variable(v) else NamedSharding(mesh, spec)

    return jax.tree.map(one, state, is_leaf=is_variable)


def batch_sharding(mesh: Mesh, rules: AxisRules = AxisRules(), ndim: int = 2) -> NamedSharding:
    """Sharding of a ``(batch, seq, ...)`` array: batch over the data axes."""
    return NamedSharding(mesh, rules.spec(("batch",) + (None,) * (ndim - 1), mesh=mesh))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
    """``ShapeDtypeStruct``s of ``tree`` carrying ``shardings`` (restore targets)."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def _keys(path) -> tuple:
    out = []
    for k in path:
        name = getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))
        if name != "value":  # nnx.Variable's array attribute
            out.append(name)
    return tuple(out)


def shardings_like_params(tree: Any, params: Any, param_shardings: Any, mesh: Mesh) -> Any:
    """Shardings for an optimizer-state-like ``tree``: each leaf whose key path ends with a
    parameter's key path and has that parameter's shape gets the parameter's sharding
    (moments, EMA copies, masks); every other leaf (step counts, scalars) is replicated.

    Returns a tree of ``NamedSharding`` with the structure of ``tree``.
    """
    by_path = {}
    flat_p = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_s = jax.tree.leaves(param_shardings)
    for (path, leaf), sharding in zip(flat_p, flat_s, strict=True):
        by_path[_keys(path)] = (tuple(leaf.shape), sharding)

    def one(path, leaf):
        keys = _keys(path)
        for start in range(len(keys)):
            hit = by_path.get(keys[start:])
            if hit is not None and hit[0] == tuple(leaf.shape):
                return hit[1]
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(one, tree)
