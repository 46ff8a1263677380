"""Pruning scores: which weights matter.

- ``magnitude``: ``|w|`` (Zhu & Gupta, arXiv 1710.01878; Frantar et al., arXiv 2309.08520).
- ``random``: i.i.d. uniform scores; with a one-shot schedule at step 0 this is random
  pruning at initialisation (Liu et al., ICLR 2022, arXiv 2202.02643).
- ``saliency``: ``|w * g|``, the first-order estimate of the loss change from removing w
  (SNIP-style connection sensitivity).

Scores of already-pruned weights are set to ``-inf`` so sparsity only grows (a pruned
weight never comes back unless the target density rises). For a global threshold across
layers, each matrix's scores are divided by their RMS over its live entries so layers of
different scale compete fairly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SCORES = ("magnitude", "random", "saliency")


def score(kind: str, w: jax.Array, g: jax.Array | None, key: jax.Array | None) -> jax.Array:
    """Float32 score of the same shape as ``w``.

    Args:
      kind: one of :data:`SCORES`.
      w: parameter array (any shape).
      g: its gradient (needed for ``saliency``).
      key: PRNG key (needed for ``random``).
    """
    if kind == "magnitude":
        return jnp.abs(w.astype(jnp.float32))
    if kind == "saliency":
        if g is None:
            raise ValueError("saliency scores |w g| need the gradient")
        return jnp.abs(w.astype(jnp.float32) * g.astype(jnp.float32))
    if kind == "random":
        if key is None:
            raise ValueError("random scores need a PRNG key")
        return jax.random.uniform(key, w.shape, jnp.float32)
    raise ValueError(f"unknown pruning score {kind!r}; valid: {SCORES}")


def restrict_to_live(s: jax.Array, mask: jax.Array) -> jax.Array:
    """``s`` with pruned entries (``mask`` False) at ``-inf``."""
    return jnp.where(mask, s, -jnp.inf)


def normalise_per_matrix(s: jax.Array, mask: jax.Array, batch_ndim: int) -> jax.Array:
    """``s / rms(s over live entries)`` per matrix (axes after ``batch_ndim`` reduced)."""
    axes = tuple(range(batch_ndim, s.ndim))
    live = jnp.sum(mask, axis=axes, keepdims=True, dtype=jnp.float32)
    sq = jnp.sum(jnp.where(mask, jnp.square(s), 0.0), axis=axes, keepdims=True)
    rms = jnp.sqrt(sq / jnp.maximum(live, 1.0))
    return s / jnp.where(rms > 0, rms, 1.0)
