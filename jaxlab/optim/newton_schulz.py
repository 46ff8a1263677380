"""Newton-Schulz orthogonalisation: ``X = U S V^T -> approximately U V^T``, batched.

The quintic iteration of Muon (Keller Jordan; Moonlight, arXiv 2502.16982): with ``X``
normalised by its Frobenius norm and ``m <= n`` (short side first),
``A = X X^T;  X <- a X + (b A + c A^2) X``, one ``(a, b, c)`` per step. Coefficient sets
by name (:data:`COEFFICIENTS`): ``keller`` (fixed, 5 steps), ``polar_express`` (per-step
minimax coefficients of arXiv 2505.16932, Algorithm 1, with its 1.01 safety scaling),
``polar_express_nanogpt`` (modded-nanogpt's 5-step list, 1.02), ``dion`` (arXiv
2504.05295), or explicit per-step ``(a, b, c)`` tuples.

Two variants, same result in exact arithmetic:

* ``plain``: the iteration above, ``4 m^2 n + 2 m^3`` FLOPs per step.
* ``gram``: iterates on the ``m x m`` Gram matrix. Every iterate is ``X_k = Q_k X_0``
  with ``Q_k`` a polynomial in ``R = X_0 X_0^T``, so with ``Z = a I + b A + c A^2``:
  ``Q <- Z Q`` and ``A <- Z A Z``; ``X = Q X_0`` is formed once at the end. It costs
  ``4 m^2 n`` plus ``m^3`` work per step, so it wins for rectangular matrices (the
  "Gram Newton-Schulz" of Dao AI Lab). Rounding makes ``A`` drift from ``Q R Q`` in half
  precision, and in f32 too after a large first step (Polar Express multiplies by 8.2:
  without a restart its singular values stop at [0.994, 1.004]), so the iteration
  restarts (``X = Q X_0``, ``R = X X^T``, ``Q = I``) after the steps in
  ``gram_restarts`` (default: after step 2 in bf16, after steps 1 and 3 in f32).

``variant='auto'`` picks whichever needs fewer FLOPs (:func:`ns_flops`). Tall matrices
(``m > n``) are iterated from the right (``A = X^T X``, ``X <- a X + X B``), which is the
transpose of the left iteration on ``X^T`` without materialising a transpose.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

Coeffs = tuple[float, float, float]

KELLER: Coeffs = (3.4445, -4.7750, 2.0315)
# Polar Express (Amsel et al., arXiv 2505.16932, Algorithm 1): the minimax quintic of each
# step for singular values in [1e-3, 1] (with cushion 0.02), each but the last divided by
# the safety factor 1.01 as (a / 1.01, b / 1.01^3, c / 1.01^5); steps past the 8th repeat
# the last triple, the quintic Newton-Schulz map whose fixed point is exactly 1. Used
# with X / (1.01 ||X||_F + eps).
_POLAR_EXPRESS_UNSAFE: tuple[Coeffs, ...] = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
)
POLAR_EXPRESS_SAFETY = 1.01
POLAR_EXPRESS: tuple[Coeffs, ...] = tuple(
    (a / POLAR_EXPRESS_SAFETY, b / POLAR_EXPRESS_SAFETY ** 3, c / POLAR_EXPRESS_SAFETY ** 5)
    for a, b, c in _POLAR_EXPRESS_UNSAFE) + ((1.875, -1.25, 0.375),)
# The 5-step list of the modded-nanogpt speedrun (used with a 1.02 norm safety factor).
# Not the paper's: its numbers differ from Algorithm 1 by up to 6%, and its last triple
# does not fix 1, so more than 5 steps drift above 1 (12 steps: about [1.02, 1.05]).
POLAR_EXPRESS_NANOGPT: tuple[Coeffs, ...] = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
DION: tuple[Coeffs, ...] = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
# Turbo-Muon (arXiv 2512.04632; github thib-s/flash-newton-schulz): Dion's list without
# its first triple, 4 steps after AOL preconditioning (the AOL scaling does the work of the
# dropped first step).
TURBO_MUON: tuple[Coeffs, ...] = DION[1:]
COEFFICIENTS: dict[str, tuple[Coeffs, ...]] = {
    "keller": (KELLER,),
    "polar_express": POLAR_EXPRESS,
    "polar_express_nanogpt": POLAR_EXPRESS_NANOGPT,
    "dion": DION,
    "turbo_muon": TURBO_MUON,
}
# Frobenius-norm safety factor each named set was designed with (so that sigma_max <= 1
# holds despite rounding): arXiv 2505.16932 uses 1.01, modded-nanogpt 1.02.
NORM_SCALES: dict[str, float] = {"keller": 1.0, "polar_express": POLAR_EXPRESS_SAFETY,
                                 "polar_express_nanogpt": 1.02, "dion": 1.0,
                                 "turbo_muon": 1.0}
VARIANTS = ("auto", "plain", "gram")
PRECONDITIONERS = ("frobenius", "aol")


def ns_coefficients(coeffs: str | Sequence, steps: int) -> tuple[Coeffs, ...]:
    """Per-step ``(a, b, c)`` as Python floats, ``steps`` of them.

    ``coeffs``: a name in :data:`COEFFICIENTS`, one ``(a, b, c)`` triple (used every step)
    or a sequence of triples. A named or explicit list shorter than ``steps`` repeats its
    last triple; a longer one is cut to its first ``steps``.
    """
    if steps < 1:
        raise ValueError(f"Newton-Schulz steps must be >= 1, got {steps}")
    if isinstance(coeffs, str):
        if coeffs not in COEFFICIENTS:
            raise ValueError(f"unknown Newton-Schulz coefficients {coeffs!r}; valid: "
                             f"{sorted(COEFFICIENTS)} or explicit (a, b, c) tuples")
        table = COEFFICIENTS[coeffs]
    else:
        bad = ValueError(f"Newton-Schulz coefficients must be a name in "
                         f"{sorted(COEFFICIENTS)}, one (a, b, c) or a sequence of (a, b, c) "
                         f"triples of numbers, got {coeffs!r}")
        try:
            seq = tuple(coeffs)
        except TypeError:
            raise bad from None
        is_number = lambda c: isinstance(c, (int, float)) and not isinstance(c, bool)  # noqa: E731
        if seq and all(is_number(c) for c in seq):
            if len(seq) != 3:
                raise bad
            table = (tuple(float(c) for c in seq),)
        else:
            if not seq or any(not isinstance(t, Sequence) or len(t) != 3
                              or not all(is_number(c) for c in t) for t in seq):
                raise bad
            table = tuple(tuple(float(c) for c in t) for t in seq)
        if not all(math.isfinite(c) for t in table for c in t):
            raise ValueError(f"Newton-Schulz coefficients must be finite, got {coeffs!r}")
    table = tuple(table[:steps])
    return table + (table[-1],) * (steps - len(table))


def default_norm_scale(coeffs: str | Sequence) -> float:
    """The Frobenius-norm safety factor a named coefficient set expects (1 otherwise)."""
    return NORM_SCALES.get(coeffs, 1.0) if isinstance(coeffs, str) else 1.0


def default_gram_restarts(compute_dtype) -> tuple[int, ...]:
    """Where the Gram iteration restarts by default: after step 2 in half precision
    (rounding drifts ``A`` from ``Q R Q``); after steps 1 and 3 in f32, where Polar
    Express's 8.2x first step otherwise leaves a 0.5% error (measured on a 64 x 96 matrix
    with singular values 1.2e-3..1, 5 steps: 2.3e-3 off the plain iteration without a
    restart, 3.8e-6 with one after step 2, 1.5e-6 after steps 1 and 3)."""
    return (1, 3) if jnp.dtype(compute_dtype).itemsize >= 4 else (2,)


def ns_flops(m: int, n: int, steps: int, variant: str,
             gram_restarts: Sequence[int] = ()) -> float:
    """Matmul FLOPs of one ``m x n`` orthogonalisation (either orientation).

    ``plain``: ``steps (4 s^2 l + 2 s^3)`` with ``s, l`` the short and long side.
    ``gram``: per segment between restarts, ``2 s^2 l`` for the Gram matrix and ``2 s^2 l``
    to multiply back, plus ``2 s^3`` per product of the segment's square iteration.
    """
    s, l = min(m, n), max(m, n)
    if variant == "plain":
        return float(steps * (4 * s * s * l + 2 * s ** 3))
    if variant != "gram":
        raise ValueError(f"ns_flops variant must be 'plain' or 'gram', got {variant!r}")
    total = 0.0
    for seg in _segments(steps, gram_restarts):
        total += 4 * s * s * l + 2 * s ** 3 * _gram_products(seg)
    return total


def choose_variant(m: int, n: int, steps: int, gram_restarts: Sequence[int] = ()) -> str:
    """``'gram'`` where it needs fewer FLOPs than ``'plain'``, else ``'plain'``."""
    gram = ns_flops(m, n, steps, "gram", gram_restarts)
    return "gram" if gram < ns_flops(m, n, steps, "plain") else "plain"


def _segments(steps: int, restarts: Sequence[int]) -> list[int]:
    cuts = sorted({r for r in restarts if 0 < r < steps})
    bounds = [0, *cuts, steps]
    return [b - a for a, b in itertools.pairwise(bounds)]


def _gram_products(k: int) -> int:
    """Square products of a ``k``-step Gram segment: the first step has ``Q = Z`` for free,
    the last needs no new ``A``; each step squares ``A``."""
    if k == 1:
        return 1
    return 3 + 4 * (k - 2) + 2


def _gram(x, side_left: bool):
    """``X X^T`` (left) or ``X^T X`` (right) over the batch axes."""
    if side_left:
        return jnp.einsum("...ij,...kj->...ik", x, x)
    return jnp.einsum("...ji,...jk->...ik", x, x)


def _apply(b, x, side_left: bool):
    """``B X`` (left) or ``X B`` (right)."""
    if side_left:
        return jnp.einsum("...ik,...kj->...ij", b, x)
    return jnp.einsum("...ik,...kj->...ij", x, b)


def _poly(a_mat, coeffs: Coeffs, with_identity: bool):
    """``b A + c A^2`` (+ ``a I`` when ``with_identity``)."""
    a, b, c = coeffs
    out = b * a_mat + c * (a_mat @ a_mat)
    if with_identity:
        out = out + a * jnp.eye(a_mat.shape[-1], dtype=a_mat.dtype)
    return out


def _plain(x, table, side_left, a_mat=None):
    """``len(table)`` plain steps; ``a_mat``: the Gram matrix of ``x`` if already known."""
    for i, coeffs in enumerate(table):
        a = a_mat if (i == 0 and a_mat is not None) else _gram(x, side_left)
        x = coeffs[0] * x + _apply(_poly(a, coeffs, False), x, side_left)
    return x


def _gram_segment(x0, table, side_left, a_mat=None):
    """``len(table)`` steps on the Gram matrix of ``x0`` (``a_mat`` if already known);
    returns ``Q x0``."""
    a_mat = _gram(x0, side_left) if a_mat is None else a_mat
    q = None
    for i, coeffs in enumerate(table):
        z = _poly(a_mat, coeffs, True)
        q = z if q is None else z @ q
        if i + 1 < len(table):
            a_mat = (z @ a_mat) @ z
    return _apply(q, x0, side_left)


def aol_scale(x: jax.Array, side_left: bool, eps: float) -> tuple[jax.Array, jax.Array]:
    """AOL preconditioning (Prach & Lampert's almost-orthogonal Lipschitz rescaling, as
    Turbo-Muon uses it, arXiv 2512.04632): with ``A`` the short-side Gram matrix,
    ``d_i = 1 / sqrt(max(sum_j |A_ij|, eps))`` and ``X <- diag(d) X`` (columns for tall
    ``X``), which bounds the spectral norm by 1 (Gershgorin) and leaves the singular
    values closer to 1 than Frobenius normalisation. Returns ``(X', D A D)``: the Gram
    matrix of ``X'`` for the first iteration, at no extra product."""
    a_mat = _gram(x, side_left)
    d = jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.abs(a_mat), axis=-1), eps))
    x = x * (d[..., :, None] if side_left else d[..., None, :])
    return x, a_mat * d[..., :, None] * d[..., None, :]


def newton_schulz(x: jax.Array, coeffs: str | Sequence = "keller", steps: int = 5, *,
                  eps: float = 1e-7, norm_scale: float | None = None,
                  compute_dtype=jnp.float32, variant: str = "auto",
                  gram_restarts: Sequence[int] | None = None,
                  precondition: str = "frobenius") -> jax.Array:
    """Orthogonalises every ``m x n`` matrix of ``x (..., m, n)``; returns ``x``'s dtype.

    Args:
      x: ``(..., m, n)``; leading axes are a batch of independent matrices.
      coeffs: coefficient set name, one ``(a, b, c)`` or per-step triples
        (:func:`ns_coefficients`).
      steps: iterations.
      eps: ``X / (norm_scale ||X||_F + eps)`` before iterating (zero in, zero out).
      norm_scale: Frobenius safety factor; None takes the set's own (:data:`NORM_SCALES`:
        1.01 for ``polar_express``, 1.02 for ``polar_express_nanogpt``, else 1).
      compute_dtype: dtype of the iteration (``float32`` or ``bfloat16``).
      variant: ``'plain'``, ``'gram'`` or ``'auto'`` (fewer FLOPs, :func:`choose_variant`).
      gram_restarts: steps after which the Gram iteration restarts; None:
        :func:`default_gram_restarts` of ``compute_dtype``.
      precondition: ``'frobenius'`` (the normalisation above) or ``'aol'``
        (:func:`aol_scale` instead, its Gram matrix reused by the first step; with
        ``coeffs='turbo_muon'`` and 4 steps, Turbo-Muon). ``norm_scale`` is unused by AOL.
    """
    if x.ndim < 2:
        raise ValueError(f"newton_schulz needs x of shape (..., m, n), got shape {x.shape}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown Newton-Schulz variant {variant!r}; valid: {VARIANTS}")
    if precondition not in PRECONDITIONERS:
        raise ValueError(f"unknown Newton-Schulz precondition {precondition!r}; valid: "
                         f"{PRECONDITIONERS}")
    table = ns_coefficients(coeffs, steps)
    scale = default_norm_scale(coeffs) if norm_scale is None else float(norm_scale)
    restarts = (default_gram_restarts(compute_dtype) if gram_restarts is None
                else tuple(gram_restarts))
    m, n = x.shape[-2:]
    if variant == "auto":
        variant = choose_variant(m, n, steps, restarts)
    side_left = m <= n
    out_dtype = x.dtype
    x = x.astype(compute_dtype)
    a_first = None
    if precondition == "aol":
        x, a_first = aol_scale(x, side_left, eps)
    else:
        norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=(-2, -1),
                                keepdims=True))
        x = (x / (scale * norm + eps).astype(compute_dtype)).astype(compute_dtype)
    if variant == "plain":
        x = _plain(x, table, side_left, a_first)
    else:
        start = 0
        for seg in _segments(steps, restarts):
            x = _gram_segment(x, table[start:start + seg], side_left,
                              a_first if start == 0 else None)
            start += seg
    return x.astype(out_dtype)


def ns_flop_bound(shapes: Sequence[tuple[int, int]], steps: int = 5) -> float:
    """Total ``plain`` NS FLOPs of a list of ``(m, n)`` matrices (the benchmark's bound)."""
    return float(sum(ns_flops(m, n, steps, "plain") for m, n in shapes))


def singular_value_range(x: jax.Array) -> tuple[float, float]:
    """``(min, max)`` singular value of a single matrix (test helper for invariants)."""
    s = jnp.linalg.svd(x.astype(jnp.float32), compute_uv=False)
    return float(jnp.min(s)), float(jnp.max(s))


__all__ = [
    "COEFFICIENTS",
    "DION",
    "KELLER",
    "POLAR_EXPRESS",
    "POLAR_EXPRESS_NANOGPT",
    "POLAR_EXPRESS_SAFETY",
    "PRECONDITIONERS",
    "TURBO_MUON",
    "VARIANTS",
    "aol_scale",
    "choose_variant",
    "default_gram_restarts",
    "default_norm_scale",
    "newton_schulz",
    "ns_coefficients",
    "ns_flop_bound",
    "ns_flops",
]
