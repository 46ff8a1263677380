"""Vision Transformer (Dosovitskiy et al., arXiv 2010.11929) from the LM's own modules.

Images are cut into ``P x P`` patches, each projected to ``D`` by one matrix (the patch
embedding), a learned position embedding is added (and a class token prepended with
``pool='cls'``), then ``L`` of the LM's pre-norm blocks (:class:`jaxlab.nn.transformer.
Block`: GQA attention, SwiGLU, RMSNorm) run non-causally without rotary embeddings,
scan-stacked ``(L, ...)`` like the LM's. A final RMSNorm, the class token (or the mean of
the patch tokens with ``pool='mean'``) and a zero-initialised linear head give the logits.

Parameter labels (:mod:`jaxlab.partition`): everything under ``embed/`` (patch
projection, position embedding, class token) is ``embedding`` and the classifier
``head/kernel`` is ``head``, so both go to AdamW inside Muon-family optimizers; the
blocks' attention and MLP kernels are ``matrix`` (Muon), their norm gains ``vector``.
"""

from __future__ import annotations

import dataclasses

import gin
import jax
import jax.numpy as jnp
from flax import nnx

from jaxlab.nn.config import ModelConfig
from jaxlab.nn.layers import DenseGeneral, RMSNorm, param
from jaxlab.nn.transformer import apply_blocks, make_blocks

POOLS = ("cls", "mean")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """A ViT classifier.

    Attributes:
      image_size: height and width of the (square) input images.
      channels: input channels C.
      patch_size: patch side P (must divide ``image_size``).
      num_classes: output classes.
      d_model, n_layers, n_heads, n_kv_heads, d_ff, qk_norm, scan_layers, remat,
        param_dtype, compute_dtype, norm_eps: as in :class:`jaxlab.nn.ModelConfig`.
      pool: ``"cls"`` (a learned class token) or ``"mean"`` (mean of the patch tokens).
      pos_init_std: std of the learned position embedding's initialiser.
    """

    image_size: int = 8
    channels: int = 1
    patch_size: int = 2
    num_classes: int = 10
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None
    d_ff: int | None = None
    pool: str = "cls"
    qk_norm: bool = False
    scan_layers: bool = True
    remat: bool = False
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    norm_eps: float = 1e-6
    pos_init_std: float = 0.02

    def __post_init__(self):
        for name in ("image_size", "channels", "patch_size", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"ViTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise ValueError(f"ViTConfig.patch_size={self.patch_size} must divide "
                             f"image_size={self.image_size}")
        if self.pool not in POOLS:
            raise ValueError(f"ViTConfig.pool={self.pool!r}; valid: {POOLS}")
        self.block_config()  # validates the block shapes (heads, dtypes, ...)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def seq_len(self) -> int:
        """Tokens per image: the patches, plus the class token with ``pool='cls'``."""
        return self.num_patches + (1 if self.pool == "cls" else 0)

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * self.channels

    def block_config(self) -> ModelConfig:
        """The LM config the blocks are built from: non-causal, no vocabulary."""
        return ModelConfig(vocab_size=self.num_classes, d_model=self.d_model,
                           n_layers=self.n_layers, n_heads=self.n_heads,
                           n_kv_heads=self.n_kv_heads, d_ff=self.d_ff,
                           max_seq_len=self.seq_len, qk_norm=self.qk_norm,
                           tie_embeddings=False, scan_layers=self.scan_layers,
                           remat=self.remat, causal=False, param_dtype=self.param_dtype,
                           compute_dtype=self.compute_dtype, norm_eps=self.norm_eps)


def patchify(images_BxHxWxC, patch: int):
    """``(B, H, W, C) -> (B, N, P, P, C)`` with ``N = (H / P) (W / P)``, row-major patches."""
    b, h, w, c = images_BxHxWxC.shape
    x = images_BxHxWxC.reshape(b, h // patch, patch, w // patch, patch, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // patch) * (w // patch), patch, patch, c)


class PatchEmbedding(nnx.Module):
    """Patch projection ``kernel (P, P, C, D)``, ``position (T, D)`` and, with
    ``pool='cls'``, the class token ``cls (D,)``: ``images -> (B, T, D)``."""

    def __init__(self, cfg: ViTConfig, *, rngs: nnx.Rngs):
        pd = jnp.dtype(cfg.param_dtype)
        p, c, d = cfg.patch_size, cfg.channels, cfg.d_model
        self.patch_size = p
        self.proj = DenseGeneral((p, p, c), (d,), logical_axes=(None, None, None, "embed"),
                                 rngs=rngs, param_dtype=pd)
        self.position = param(rngs, jax.nn.initializers.normal(cfg.pos_init_std),
                              (cfg.seq_len, d), pd, (None, "embed"))
        self.cls = (param(rngs, jax.nn.initializers.zeros, (d,), pd, ("embed",))
                    if cfg.pool == "cls" else None)

    def __call__(self, images_BxHxWxC, dtype):
        x_BxNxD = self.proj(patchify(images_BxHxWxC.astype(dtype), self.patch_size))
        if self.cls is not None:
            cls_Bx1xD = jnp.broadcast_to(self.cls[...].astype(dtype),
                                         (x_BxNxD.shape[0], 1, x_BxNxD.shape[-1]))
            x_BxNxD = jnp.concatenate([cls_Bx1xD, x_BxNxD], axis=1)
        return x_BxNxD + self.position[...].astype(dtype)


class ViT(nnx.Module):
    """``images (B, H, W, C) float -> logits (B, num_classes)``."""

    def __init__(self, cfg: ViTConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        block_cfg = cfg.block_config()
        self.block_cfg = block_cfg
        pd = jnp.dtype(cfg.param_dtype)
        self.embed = PatchEmbedding(cfg, rngs=rngs)
        self.blocks = make_blocks(block_cfg, rngs)
        self.final_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, param_dtype=pd)
        self.head = DenseGeneral((cfg.d_model,), (cfg.num_classes,),
                                 logical_axes=("embed", None), rngs=rngs, param_dtype=pd,
                                 init_scale=0.0)

    def __call__(self, images_BxHxWxC):
        cfg = self.cfg
        shape = (cfg.image_size, cfg.image_size, cfg.channels)
        if tuple(images_BxHxWxC.shape[1:]) != shape:
            raise ValueError(f"images of shape {tuple(images_BxHxWxC.shape)}; this ViT takes "
                             f"(B, {shape[0]}, {shape[1]}, {shape[2]}) (ViTConfig.image_size, "
                             "channels)")
        x = self.embed(images_BxHxWxC, jnp.dtype(cfg.compute_dtype))
        x = self.final_norm(apply_blocks(self.blocks, x, self.block_cfg)[0])
        pooled_BxD = x[:, 0] if cfg.pool == "cls" else jnp.mean(x, axis=1)
        return self.head(pooled_BxD).astype(jnp.float32)


def vit_param_counts(cfg: ViTConfig) -> dict[str, int]:
    """``{"total", "non_embedding", "embedding", "head"}``: non-embedding excludes the
    patch embedding (projection, positions, class token) and the head."""
    from jaxlab.nn.accounting import block_params

    d = cfg.d_model
    embedding = cfg.patch_dim * d + cfg.seq_len * d + (d if cfg.pool == "cls" else 0)
    head = d * cfg.num_classes
    non_embedding = cfg.n_layers * block_params(cfg.block_config()) + d
    return {"total": embedding + head + non_embedding, "non_embedding": non_embedding,
            "embedding": embedding, "head": head}


def vit_flops_per_token(cfg: ViTConfig) -> dict[str, float]:
    """Forward and training (3x) FLOPs per token (patch or class token) of one image:
    2 per multiply-accumulate of the patch projection, the blocks' matmuls, attention
    scores and values over all ``T`` tokens, and the head (once per image)."""
    from jaxlab.nn.accounting import block_params

    bc, t = cfg.block_config(), cfg.seq_len
    d, h, dh = bc.d_model, bc.n_heads, bc.resolved_head_dim
    matmul = bc.n_layers * (block_params(bc) - 2 * d - (2 * dh if bc.qk_norm else 0))
    per_image = (cfg.num_patches * cfg.patch_dim * d + t * matmul
                 + 2 * bc.n_layers * t * t * h * dh + d * cfg.num_classes)
    forward = 2.0 * per_image / t
    return {"forward": forward, "train": 3.0 * forward, "train_6n": 6.0 *
            vit_param_counts(cfg)["non_embedding"]}


__all__ = ["POOLS", "PatchEmbedding", "ViT", "ViTConfig", "patchify", "vit_flops_per_token",
           "vit_param_counts"]
