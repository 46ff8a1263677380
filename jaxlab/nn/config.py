"""Model configuration: one frozen dataclass, configurable from gin."""

from __future__ import annotations

import dataclasses

import gin
import jax.numpy as jnp

_DTYPES = ("float32", "bfloat16", "float16")
_ATTENTION_IMPLS = ("auto", "jaxlab", "xla", "cudnn")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A decoder-only transformer LM.

    Attributes:
      vocab_size: tokens in the vocabulary (256 for byte-level text).
      d_model: residual width D.
      n_layers: number of transformer blocks L.
      n_heads: query heads H.
      n_kv_heads: key/value heads K (grouped-query attention when K < H); None means H.
      head_dim: per-head width; None means D // H.
      d_ff: SwiGLU hidden width F; None means 8/3 D rounded up to a multiple of 32.
      max_seq_len: longest sequence the rotary tables and config support.
      rope_theta: rotary base frequency.
      qk_norm: RMSNorm over head_dim on queries and keys (arXiv 2302.05442).
      tie_embeddings: reuse the input embedding as the output head.
      scan_layers: stack block parameters as ``(L, ...)`` and run the blocks in a
        ``lax.scan``, so compile time does not grow with depth.
      attention_impl: the attention core. ``"jaxlab"``: :func:`jaxlab.nn.attention.
        causal_attention` (batched-matmul layout, probabilities recomputed in the backward;
        the fast one on CPU); ``"xla"`` or ``"cudnn"``: ``jax.nn.dot_product_attention``
        with that implementation; ``"auto"``: ``"jaxlab"`` on CPU, ``"xla"`` elsewhere.
      sparse_block_size: when set, the hidden matrices (attention and MLP kernels, not the
        embedding or head) multiply through the block-sparse Pallas kernel with ``b x b``
        tiles, skipping all-zero tiles (:func:`jaxlab.nn.block_linear.block_sparse_dot`).
        The training loop sets it from ``sparsity.kernel``; None is the dense product.
      remat: rematerialise each block in the backward pass (less memory, ~1/3 more compute).
      causal: causal self-attention (the LM); False lets every position see every other
        (the ViT's blocks, :class:`jaxlab.nn.vit.ViT`).
      param_dtype, compute_dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
      norm_eps: RMSNorm epsilon.
      embed_init_std: std of the embedding initialiser.
      moe_experts: E > 0 replaces every block's MLP by a mixture of E SwiGLU experts
        (:class:`jaxlab.nn.moe.MoE`); 0 is the dense MLP.
      moe_top_k: experts per token (softmax over all E, then the top k).
      moe_d_ff: each expert's hidden width; None means ``d_ff`` (``ff_dim``).
      moe_capacity_factor: None routes every token (dropless, ``jax.lax.ragged_dot``); a
        float gives each expert ``ceil(factor * tokens * k / E)`` slots and drops the rest.
      moe_load_balance: weight of the load-balancing loss (Switch, arXiv 2101.03961).
      moe_renormalize: divide the top-k gates by their sum (False: the raw softmax gates).
    """

    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None
    head_dim: int | None = None
    d_ff: int | None = None
    max_seq_len: int = 512
    rope_theta: float = 10_000.0
    qk_norm: bool = False
    tie_embeddings: bool = True
    scan_layers: bool = True
    attention_impl: str = "auto"
    sparse_block_size: int | None = None
    remat: bool = False
    causal: bool = True
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    norm_eps: float = 1e-6
    embed_init_std: float = 1.0
    moe_experts: int = 0
    moe_top_k: int = 2
    moe_d_ff: int | None = None
    moe_capacity_factor: float | None = None
    moe_load_balance: float = 0.01
    moe_renormalize: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_kv_heads is not None and (
            self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads
        ):
            raise ValueError(
                f"ModelConfig.n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads}"
            )
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ValueError(
                f"ModelConfig.d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "set head_dim explicitly or choose n_heads dividing d_model"
            )
        if self.resolved_head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.resolved_head_dim}")
        if self.attention_impl not in _ATTENTION_IMPLS:
            raise ValueError(f"ModelConfig.attention_impl={self.attention_impl!r}; "
                             f"valid: {_ATTENTION_IMPLS}")
        if self.sparse_block_size is not None and (
                not isinstance(self.sparse_block_size, int) or self.sparse_block_size < 1):
            raise ValueError(f"ModelConfig.sparse_block_size={self.sparse_block_size!r}; valid: "
                             f"None (dense) or a positive int tile size")
        if self.moe_experts < 0 or (self.moe_experts and not
                                    1 <= self.moe_top_k <= self.moe_experts):
            raise ValueError(f"ModelConfig.moe_experts={self.moe_experts}, moe_top_k="
                             f"{self.moe_top_k}; valid: moe_experts 0 (dense) or E >= 1 with "
                             "1 <= moe_top_k <= E")
        if self.moe_capacity_factor is not None and not self.moe_capacity_factor > 0:
            raise ValueError(f"ModelConfig.moe_capacity_factor={self.moe_capacity_factor}; "
                             "valid: None (dropless) or a number > 0")
        if self.moe_load_balance < 0:
            raise ValueError(f"ModelConfig.moe_load_balance={self.moe_load_balance}; must be "
                             ">= 0")
        for name in ("param_dtype", "compute_dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)!r}; valid: {_DTYPES}")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @property
    def ff_dim(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        return -(-int(8 * self.d_model / 3) // 32) * 32

    @property
    def expert_ff_dim(self) -> int:
        return self.moe_d_ff if self.moe_d_ff is not None else self.ff_dim

    @property
    def param_jnp_dtype(self):
        return jnp.dtype(self.param_dtype)

    @property
    def compute_jnp_dtype(self):
        return jnp.dtype(self.compute_dtype)
