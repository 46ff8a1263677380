"""SwiGLU feed-forward block (Shazeer, arXiv 2002.05202)."""

from __future__ import annotations

import math

import jax
from flax import nnx

from jaxlab.nn.config import ModelConfig
from jaxlab.nn.layers import DenseGeneral


class SwiGLU(nnx.Module):
    """``down(silu(gate(x)) * up(x))`` with kernels ``gate, up (D, F)`` and ``down (F, D)``."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, f, pd, b = cfg.d_model, cfg.ff_dim, cfg.param_jnp_dtype, cfg.sparse_block_size
        self.gate = DenseGeneral((d,), (f,), logical_axes=("embed", "mlp"), rngs=rngs,
                                 param_dtype=pd, block_size=b)
        self.up = DenseGeneral((d,), (f,), logical_axes=("embed", "mlp"), rngs=rngs,
                               param_dtype=pd, block_size=b)
        self.down = DenseGeneral((f,), (d,), logical_axes=("mlp", "embed"), rngs=rngs,
                                 param_dtype=pd, block_size=b,
                                 init_scale=1.0 / math.sqrt(2 * cfg.n_layers))

    def __call__(self, x_BxTxD):
        return self.down(jax.nn.silu(self.gate(x_BxTxD)) * self.up(x_BxTxD))
