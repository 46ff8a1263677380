"""Pruning schedules: when masks are updated and how dense each leaf is after each update.

Steps are optimizer-update indices ``t = 0, 1, ...``; the mask update of an event step
``t`` happens inside update ``t`` and holds from then on. All methods work elementwise on
NumPy arrays (planning) and on traced ``jnp`` scalars (inside the jitted step).

- ``oneshot``: prune to the final density at ``start``.
- ``cubic`` (Zhu & Gupta, arXiv 1710.01878): events at ``start + k * frequency`` up to
  ``end`` (and at ``end``); sparsity ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (end - t0))^3``.
- ``geometric`` (Jin et al., arXiv 2501.12486): ``K = (end - start) // frequency + 1``
  events, each removing the same fraction of the *remaining* weights: density after event
  ``k`` is ``d_f ** ((k + 1) / K)``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ("oneshot", "cubic", "geometric")


def _xp(step):
    return jnp if isinstance(step, jax.Array) else np


@dataclasses.dataclass(frozen=True)
class PruningSchedule:
    """A schedule in absolute steps.

    Attributes:
      kind: one of :data:`SCHEDULES`.
      start, end: first and last event step (``end`` ignored by ``oneshot``).
      frequency: steps between events (the update period).
      initial_sparsity: ``s_i`` of the cubic schedule (capped at each leaf's final).
    """

    kind: str = "oneshot"
    start: int = 0
    end: int = 0
    frequency: int = 1
    initial_sparsity: float = 0.0

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown pruning schedule {self.kind!r}; valid: {SCHEDULES}")
        if self.frequency < 1:
            raise ValueError(f"pruning frequency must be >= 1, got {self.frequency}")
        if self.start < 0 or (self.kind != "oneshot" and self.end < self.start):
            raise ValueError(f"pruning schedule needs 0 <= start <= end, got start={self.start},"
                             f" end={self.end}")

    @property
    def num_events(self) -> int:
        """Geometric ``K`` (and cubic's regular events, without a trailing ``end``)."""
        return (self.end - self.start) // self.frequency + 1

    @property
    def last_event(self) -> int:
        """Step of the event that reaches the final density."""
        if self.kind == "oneshot":
            return self.start
        if self.kind == "cubic":
            return self.end
        return self.start + (self.num_events - 1) * self.frequency

    def is_event(self, step):
        """True at steps where masks are recomputed."""
        since = step - self.start
        if self.kind == "oneshot":
            return step == self.start
        on_grid = (since >= 0) & (since % self.frequency == 0)
        if self.kind == "cubic":
            return (on_grid & (step <= self.end)) | (step == self.end)
        return on_grid & (step <= self.last_event)

    def density(self, step, final_density):
        """Density in force after update ``step`` for a leaf whose final density is
        ``final_density`` (arrays broadcast)."""
        xp = _xp(step)
        final = xp.asarray(final_density, xp.float32 if xp is jnp else np.float64)
        started = step >= self.start
        if self.kind == "oneshot":
            return xp.where(started, final, 1.0)
        since = xp.maximum(step - self.start, 0)
        if self.kind == "cubic":
            span = max(self.end - self.start, 1)
            last = xp.where(step >= self.end, span,
                            xp.minimum((since // self.frequency) * self.frequency, span))
            u = last / span
            s_f = 1.0 - final
            s_i = xp.minimum(self.initial_sparsity, s_f)
            s = s_f + (s_i - s_f) * (1.0 - u) ** 3
            return xp.where(started, 1.0 - s, 1.0)
        k = xp.minimum(since // self.frequency, self.num_events - 1)
        return xp.where(started, final ** ((k + 1) / self.num_events), 1.0)

    def kept(self, step, capacity, final_kept):
        """Kept units per matrix after update ``step``: ``round(capacity * density)``,
        exactly ``final_kept`` from the last event on (int arrays broadcast)."""
        xp = _xp(step)
        dtype = xp.int32 if xp is jnp else np.int64
        cap = xp.asarray(capacity, dtype)
        fin = xp.asarray(final_kept, dtype)
        d = self.density(step, fin / cap)
        k = xp.clip(xp.round(cap * d).astype(dtype), fin, cap)
        return xp.where(step >= self.last_event, fin, k)
