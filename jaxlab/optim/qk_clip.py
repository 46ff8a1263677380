"""QK-clip and MuonClip (Kimi K2, arXiv 2507.20534): after each step, shrink the query and
key projections of every attention head whose maximum logit exceeded a threshold.

With ``S_h = max_{b, i, j} q_i . k_j / sqrt(Dh)`` the largest logit head ``h`` produced in
this step's forward pass (signed, over unmasked entries; reported by the attention, see
:mod:`jaxlab.nn.attention`) and ``gamma_h = min(1, tau / S_h)``, the new weights are::

    W_q[h] <- gamma_h^alpha W_q[h]        W_k[h] <- gamma_h^(1 - alpha) W_k[h]

so head ``h``'s logits shrink by exactly ``gamma_h`` (to ``tau`` at most); heads at or
below ``tau`` are untouched, ``W_v`` never. K2: ``tau = 100``, ``alpha = 1/2``. K2 uses MLA;
for grouped-query attention (a key head shared by ``G`` query heads, not in the paper)
the key head takes ``k_g = (min_{h in g} gamma_h)^(1 - alpha)`` and each query head
``gamma_h / k_g``, which again scales head ``h``'s logits by exactly ``gamma_h`` (a query
head of an unclipped head in a clipped group grows by ``1 / k_g``). With QK-norm the
rescaling would be undone by the norm, so it is refused.

As an optax transformation: :func:`qk_clip` wraps the whole optimizer and its ``update``
takes the maxima as an extra argument, ``tx.update(g, state, params,
attn_max_logits=S)`` with ``S (L, H)``, returning ``u' = clip(params + u) - params``.
:func:`muonclip` is Muon (:func:`jaxlab.optim.muon`) so wrapped. The training step passes
the maxima its task reports (``jaxlab.tasks``). Defaults: ``docs/methods.md`` (MuonClip).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.optim.arg_checks import check_positive, check_range
from jaxlab.optim.muon import muon
from jaxlab.partition import infos_list, path_str

MAX_LOGITS = "attn_max_logits"  # the extra argument of update: (L, H) per-head maxima
_Q = re.compile(r"(^|/)attn/q/kernel(/value)?$")
_K = re.compile(r"(^|/)attn/k/kernel(/value)?$")
_QK_NORM = re.compile(r"(^|/)attn/(q|k)_norm(/|$)")
_LAYER = re.compile(r"(^|/)(\d+)/attn/")


class QKClipState(NamedTuple):
    """``inner``: the wrapped optimizer's state; ``stats``: the last step's figures."""

    inner: Any
    stats: dict[str, jax.Array]


def clip_factors(max_logits: jax.Array, threshold: float) -> jax.Array:
    """``gamma = min(1, tau / S)`` per head (1 where ``S <= tau``, so negative too)."""
    s = max_logits.astype(jnp.float32)
    return jnp.where(s > threshold, threshold / jnp.where(s > threshold, s, 1.0), 1.0)


def head_scales(gamma_LxH: jax.Array, kv_heads: int, alpha: float
                ) -> tuple[jax.Array, jax.Array]:
    """``(query scale (L, H), key scale (L, K))`` with ``q k`` scaled by ``gamma`` per head:
    ``k_g = min_{h in g}(gamma_h)^(1 - alpha)``, ``q_h = gamma_h / k_g`` (MHA: ``K = H``,
    ``gamma^alpha`` and ``gamma^(1 - alpha)``)."""
    layers, heads = gamma_LxH.shape
    groups = gamma_LxH.reshape(layers, kv_heads, heads // kv_heads)
    k_scale = jnp.min(groups, axis=-1) ** (1.0 - alpha)
    q_scale = (groups / k_scale[..., None]).reshape(layers, heads)
    return q_scale, k_scale


def check_clippable(infos: Any) -> None:
    """Raises unless the tree has attention query and key kernels and no QK-norm."""
    paths = [i.path for i in infos_list(infos)]
    if any(_QK_NORM.search(p) for p in paths):
        raise ValueError("QK-clip rescales W_q and W_k, which QK-norm (ModelConfig.qk_norm) "
                         "undoes: use one or the other")
    if not any(_Q.search(p) for p in paths) or not any(_K.search(p) for p in paths):
        raise ValueError("QK-clip found no attention query/key kernels (paths ending "
                         f"'attn/q/kernel' and 'attn/k/kernel'); paths: {paths[:8]}...")


def _layer_of(path: str, stacked: bool) -> int | None:
    """Layer index of an unstacked block's kernel (``blocks/3/attn/q/kernel`` -> 3)."""
    if stacked:
        return None
    found = _LAYER.search(path)
    return int(found.group(2)) if found else 0


def apply_qk_clip(params: Any, max_logits_LxH: jax.Array, *, threshold: float,
                  alpha: float = 0.5) -> tuple[Any, dict[str, jax.Array]]:
    """``params`` with every attention's ``W_q``/``W_k`` heads rescaled (module docstring)
    and the figures ``qk_clip/clipped_frac`` (heads over ``tau``) and ``qk_clip/max_logit``.

    ``params``: the model's tree, with query kernels ``(..., D, H, Dh)`` and key kernels
    ``(..., D, K, Dh)``, either scan-stacked ``(L, D, ...)`` or one per block
    (``blocks/<l>/attn/...``); ``max_logits_LxH``: this step's maxima, layer by layer.
    """
    gamma = clip_factors(max_logits_LxH, threshold)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    out = []
    for path, x in leaves:
        p = path_str(path)
        is_q, is_k = bool(_Q.search(p)), bool(_K.search(p))
        if not (is_q or is_k):
            out.append(x)
            continue
        stacked = x.ndim == 4
        heads, kv = gamma.shape[1], None
        if is_k:
            kv = x.shape[-2]
        q_scale, k_scale = head_scales(gamma, kv or _kv_heads(leaves, heads), alpha)
        scale = q_scale if is_q else k_scale  # (L, heads of this kernel)
        layer = _layer_of(p, stacked)
        s = scale if layer is None else scale[layer]
        shape = (s.shape[0], 1, s.shape[1], 1) if stacked else (1, s.shape[0], 1)
        out.append((x * s.reshape(shape).astype(x.dtype)).astype(x.dtype))
    stats = {"qk_clip/clipped_frac": jnp.mean((gamma < 1.0).astype(jnp.float32)),
             "qk_clip/max_logit": jnp.max(max_logits_LxH).astype(jnp.float32)}
    return jax.tree_util.tree_unflatten(treedef, out), stats


def _kv_heads(leaves, heads: int) -> int:
    """Key heads of the model, read off its first key kernel ``(..., K, Dh)``."""
    for path, x in leaves:
        if _K.search(path_str(path)):
            return x.shape[-2]
    return heads


def qk_clip(tx: optax.GradientTransformation, *, threshold: float = 100.0,
            alpha: float = 0.5, infos: Any = None) -> optax.GradientTransformationExtraArgs:
    """``tx`` followed by QK-clip: ``update(g, state, params, attn_max_logits=S)`` returns
    ``u`` such that ``params + u`` is ``params + tx's update`` with its attention heads
    clipped. Without ``attn_max_logits`` it is an error (the task must report them).

    Args:
      tx: the whole optimizer (so the clip sees the final weights).
      threshold: ``tau`` (K2: 100). alpha: the query's share of the rescale (K2: 0.5).
      infos: ParamInfo tree, to refuse models without q/k kernels or with QK-norm now.
    """
    check_positive("qk_clip threshold", threshold)
    check_range("qk_clip alpha", alpha, 0.0, 1.0)
    if infos is not None:
        check_clippable(infos)
    inner = optax.with_extra_args_support(tx)

    def init(params):
        zero = jnp.zeros((), jnp.float32)
        return QKClipState(inner.init(params), {"qk_clip/clipped_frac": zero,
                                                "qk_clip/max_logit": zero})

    def update(updates, state, params=None, **extra):
        max_logits = extra.pop(MAX_LOGITS, None)
        if params is None or max_logits is None:
            raise ValueError(f"qk_clip needs params and the extra argument {MAX_LOGITS}= "
                             "(per-layer, per-head maximum attention logits, (L, H))")
        u, inner_state = inner.update(updates, state.inner, params, **extra)
        stepped = optax.apply_updates(params, u)
        clipped, stats = apply_qk_clip(stepped, max_logits, threshold=threshold, alpha=alpha)
        u = jax.tree.map(lambda new, old, a: (new - old).astype(a.dtype), clipped, params, u)
        return u, QKClipState(inner_state, stats)

    return optax.GradientTransformationExtraArgs(init, update)


def muonclip(learning_rate: optax.ScalarOrSchedule, infos: Any = None, *,
             qk_clip_threshold: float = 100.0, qk_clip_alpha: float = 0.5,
             **muon_kwargs) -> optax.GradientTransformationExtraArgs:
    """MuonClip (arXiv 2507.20534): :func:`jaxlab.optim.muon` (its defaults, Moonlight's
    RMS-0.2 scale and decay 0.1, which K2 also uses) then :func:`qk_clip` with K2's
    ``tau = 100``, ``alpha = 0.5``. The gin name ``muonclip`` is this function."""
    return qk_clip(muon(learning_rate, infos, **muon_kwargs), threshold=qk_clip_threshold,
                   alpha=qk_clip_alpha, infos=infos)


__all__ = ["MAX_LOGITS", "QKClipState", "apply_qk_clip", "check_clippable", "clip_factors",
           "head_scales", "muonclip", "qk_clip"]
