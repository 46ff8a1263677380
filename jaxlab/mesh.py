"""Device meshes from a short text spec such as ``"data=2,fsdp=2,tensor=2"``.

The mesh always has the four axes of :data:`MESH_AXES` (``expert`` shards the expert
stacks of mixture-of-experts layers), in that order; axes that a spec
leaves out have size 1, so one sharding rules table (``jaxlab.sharding``) works on every
mesh, from a laptop CPU to a pod slice.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor", "expert")


def parse_mesh_spec(spec: str, num_devices: int) -> dict[str, int]:
    """Parses ``"data=2,fsdp=-1"`` into ``{"data": 2, "fsdp": 4, "tensor": 1, "expert": 1}``.

    One axis may be ``-1`` (takes what is left of ``num_devices``). The product of the
    sizes must divide ``num_devices``; the mesh then uses the first ``product`` devices.
    """
    sizes = {name: 1 for name in MESH_AXES}
    seen: set[str] = set()
    wildcard = None
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in MESH_AXES:
            raise ValueError(
                f"bad mesh spec entry {part!r} in {spec!r}: expected NAME=SIZE with NAME one "
                f"of {MESH_AXES}, e.g. 'data=2,fsdp=2,tensor=2'"
            )
        if name in seen:
            raise ValueError(f"mesh axis {name!r} given twice in mesh spec {spec!r}")
        seen.add(name)
        try:
            size = int(value)
        except ValueError:
            raise ValueError(f"mesh axis {name!r} has non-integer size {value!r} in {spec!r}")
        if size == -1:
            if wildcard is not None:
                raise ValueError(f"only one mesh axis may be -1, got {wildcard!r} and {name!r}")
            wildcard = name
        elif size < 1:
            raise ValueError(f"mesh axis {name!r} has size {size}; sizes are >= 1 or -1")
        sizes[name] = size
    fixed = math.prod(s for n, s in sizes.items() if n != wildcard)
    if wildcard is not None:
        if num_devices % fixed:
            raise ValueError(
                f"mesh spec {spec!r}: the fixed axes need {fixed} devices, which does not "
                f"divide the {num_devices} available devices"
            )
        sizes[wildcard] = num_devices // fixed
    total = math.prod(sizes.values())
    if num_devices % total:
        raise ValueError(
            f"mesh spec {spec!r} needs {total} devices, which does not divide the "
            f"{num_devices} available devices; use sizes whose product divides {num_devices}"
        )
    return sizes


def make_mesh(spec: str = "data=-1", devices=None) -> Mesh:
    """Builds a mesh with axes ``("data", "fsdp", "tensor", "expert")`` from a spec string.

    Args:
      spec: e.g. ``"data=8"``, ``"fsdp=4,tensor=2"``, ``"data=-1"`` (all devices on data).
      devices: devices to use (default ``jax.devices()``).
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = parse_mesh_spec(spec, len(devices))
    shape = tuple(sizes[n] for n in MESH_AXES)
    used = np.asarray(devices[: math.prod(shape)])
    if len(used) == len(devices):
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                             devices=list(used))
    return Mesh(used.reshape(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def mesh_spec_string(mesh: Mesh) -> str:
    """The spec that rebuilds ``mesh``, e.g. ``"data=2,fsdp=2,tensor=2"``."""
    return ",".join(f"{n}={mesh.shape[n]}" for n in mesh.axis_names)
