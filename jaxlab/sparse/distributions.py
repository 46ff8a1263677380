"""How a global sparsity is spread over layers: uniform, ER, ERK, or a custom per-path map.

Every matrix is seen through its ``(fan_in, fan_out)``-normalised shape (a ``(D, H, Dh)``
query kernel is one ``D x (H Dh)`` matrix; a scan stack ``(L, D, F)`` is ``L`` matrices),
as Liu et al. (ICLR 2022, arXiv 2202.02643) prescribe for random pruning at init:

- ER:  ``raw = (fan_in + fan_out) / (fan_in * fan_out)``.
- ERK: ``raw = (sum(dims) / prod(dims)) ** power`` (Evci et al. RigL, arXiv 1911.11134).
  On the normalised 2-D shape ERK with ``power = 1`` equals ER; they differ for
  ``power != 1`` (jaxpruner's ``erk_power_scale``).
- Solve ``eps`` so that ``sum_l eps raw_l n_l`` equals the target non-zeros; while
  ``max(eps raw_l) > 1`` make that layer dense and re-solve; layer density ``eps raw_l``.

Counts are then made *exact*: the total non-zeros equal ``round((1 - S) * N)`` and every
matrix gets an integer count (largest-remainder rounding at matrix granularity).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from jaxlab.partition import ParamInfo

DISTRIBUTIONS = ("uniform", "er", "erk", "custom")


def raw_density(info: ParamInfo, distribution: str, erk_power: float = 1.0) -> float:
    """Unnormalised layer density of one matrix: 1 (uniform), ER or ERK score."""
    fi, fo = info.matrix_shape
    if distribution == "uniform":
        return 1.0
    if distribution == "er":
        return (fi + fo) / (fi * fo)
    if distribution == "erk":
        return ((fi + fo) / (fi * fo)) ** erk_power
    raise ValueError(f"no raw density for distribution {distribution!r}; valid: "
                     f"{DISTRIBUTIONS[:3]}")


def match_per_path(path: str, per_path: Mapping[str, float] | None) -> float | None:
    """Sparsity for ``path`` from ``{regex: sparsity}`` (later entries win), or None."""
    out = None
    for pattern, s in (per_path or {}).items():
        if re.search(pattern, path):
            out = float(s)
    return out


def solve_densities(infos: Sequence[ParamInfo], sparsity: float, distribution: str = "erk",
                    erk_power: float = 1.0, fixed: Mapping[str, float] | None = None,
                    ) -> dict[str, float]:
    """Per-leaf densities whose parameter-weighted mean is ``1 - sparsity``.

    Args:
      infos: the pruned matrices (one ParamInfo per leaf).
      sparsity: global target S in [0, 1).
      distribution: ``"uniform"``, ``"er"`` or ``"erk"``.
      fixed: ``{path: sparsity}`` of leaves whose sparsity is given; the others share
        what is left of the budget.

    Returns:
      ``{path: density}``; leaves made dense by the re-solve get exactly 1.0.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity {sparsity} must be in [0, 1)")
    fixed = dict(fixed or {})
    sizes = {i.path: i.num_matrices * i.fan_in * i.fan_out for i in infos}
    budget = (1.0 - sparsity) * sum(sizes.values())
    out = {p: 1.0 - s for p, s in fixed.items() if p in sizes}
    budget -= sum(out[p] * sizes[p] for p in out)
    free = [i for i in infos if i.path not in out]
    raw = {i.path: raw_density(i, distribution, erk_power) for i in free}
    dense: set[str] = set()
    while True:
        rest = [i for i in free if i.path not in dense]
        left = budget - sum(sizes[p] for p in dense)
        denom = sum(raw[i.path] * sizes[i.path] for i in rest)
        if not rest:
            eps = 0.0
            break
        eps = left / denom
        worst = max(rest, key=lambda i: raw[i.path])
        if eps * raw[worst.path] <= 1.0:
            break
        dense.add(worst.path)
    for i in free:
        out[i.path] = 1.0 if i.path in dense else eps * raw[i.path]
    bad = {p: d for p, d in out.items() if not -1e-12 <= d <= 1.0 + 1e-12}
    if bad:
        raise ValueError(f"sparsity {sparsity} with fixed leaves {fixed} cannot be met: "
                         f"densities {bad} fall outside [0, 1]")
    return {p: min(max(d, 0.0), 1.0) for p, d in out.items()}


def exact_counts(capacities: Mapping[str, Sequence[int]], densities: Mapping[str, float],
                 total: int | None = None) -> dict[str, np.ndarray]:
    """Integer kept-counts per matrix whose sum is exactly ``total``.

    Args:
      capacities: ``{path: (c_1, ..., c_L)}`` units (elements or blocks) per matrix.
      densities: ``{path: density}``.
      total: exact total to hit (default: the rounded sum of ``density * capacity``).

    Returns:
      ``{path: int64 array (L,)}``; floor of each real count, plus one for the matrices
      with the largest remainders (ties: first in order) until the total is met.
    """
    paths = list(capacities)
    cap = np.concatenate([np.asarray(capacities[p], np.int64) for p in paths])
    real = np.concatenate([densities[p] * np.asarray(capacities[p], np.float64) for p in paths])
    base = np.minimum(np.floor(real + 1e-9).astype(np.int64), cap)
    total = int(round(real.sum())) if total is None else int(total)
    extra = total - int(base.sum())
    if extra < 0 or extra > int((cap - base).sum()):
        raise ValueError(f"cannot reach exactly {total} kept units from counts {base.sum()} "
                         f"with capacity {cap.sum()}")
    rem = np.where(base < cap, real - base, -np.inf)
    order = np.argsort(-rem, kind="stable")[:extra]
    base[order] += 1
    out, start = {}, 0
    for p in paths:
        n = len(capacities[p])
        out[p] = base[start:start + n]
        start += n
    return out


def distribute(infos: Sequence[ParamInfo], sparsity: float, distribution: str = "uniform",
               erk_power: float = 1.0, per_path: Mapping[str, float] | None = None,
               unit: int = 1) -> dict[str, np.ndarray]:
    """Exact kept counts per matrix for a pool of leaves.

    Args:
      infos: pooled leaves (e.g. all hidden matrices).
      sparsity: global target S of the pool.
      distribution: one of :data:`DISTRIBUTIONS`. ``"custom"``: each leaf takes its
        sparsity from ``per_path`` (unmatched leaves take ``sparsity``) and is rounded on
        its own; the others fix ``per_path`` leaves and solve the rest so that the pool
        keeps exactly ``round((1 - S) * capacity)`` units.
      per_path: ``{regex: sparsity}``.
      unit: elements per counted unit (``b*b`` for block sparsity).

    Returns:
      ``{path: int array (num_matrices,)}`` of kept units per matrix.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; valid: {DISTRIBUTIONS}")
    caps = {}
    for i in infos:
        if (i.fan_in * i.fan_out) % unit:
            raise ValueError(f"{i.path}: matrix {i.matrix_shape} is not a whole number of "
                             f"{unit}-element units")
        caps[i.path] = [i.fan_in * i.fan_out // unit] * i.num_matrices
    fixed = {i.path: s for i in infos if (s := match_per_path(i.path, per_path)) is not None}
    if distribution == "custom":
        dens = {i.path: 1.0 - fixed.get(i.path, sparsity) for i in infos}
        out = {}
        for i in infos:
            out.update(exact_counts({i.path: caps[i.path]}, {i.path: dens[i.path]}))
        return out
    dens = solve_densities(infos, sparsity, distribution, erk_power, fixed)
    total_cap = sum(sum(c) for c in caps.values())
    fixed_counts = {}
    for p in fixed:
        fixed_counts.update(exact_counts({p: caps[p]}, {p: dens[p]}))
    free = [i.path for i in infos if i.path not in fixed]
    total = int(round((1.0 - sparsity) * total_cap)) - sum(int(c.sum()) for c in fixed_counts.values())
    out = dict(fixed_counts)
    if free:
        out.update(exact_counts({p: caps[p] for p in free}, dens, total))
    return {i.path: out[i.path] for i in infos}
