"""The ViT: patches by hand, labels for Muon, counts, non-causal attention, zero head."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlab.nn.accounting import count_params
from jaxlab.nn.vit import ViT, ViTConfig, patchify, vit_flops_per_token, vit_param_counts
from jaxlab.partition import describe_params, infos_list


def test_patchify_cuts_row_major_patches():
    x = jnp.arange(2 * 4 * 4 * 3).reshape(2, 4, 4, 3)
    p = patchify(x, 2)
    assert p.shape == (2, 4, 2, 2, 3)
    np.testing.assert_array_equal(p[1, 1], x[1, 0:2, 2:4])   # top-right patch
    np.testing.assert_array_equal(p[0, 2], x[0, 2:4, 0:2])   # bottom-left patch


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_labels_counts_and_shapes(pool):
    cfg = ViTConfig(d_model=32, n_layers=3, n_heads=2, pool=pool)
    model = ViT(cfg, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    labels = {i.path: (i.label, i.num_matrices, i.matrix_shape)
              for i in infos_list(describe_params(params))}
    assert labels["embed/proj/kernel"][0] == "embedding"      # AdamW inside Muon
    assert labels["embed/position"][0] == "embedding"
    assert labels["head/kernel"][0] == "head"
    f = cfg.block_config().ff_dim
    assert labels["blocks/attn/q/kernel"] == ("matrix", 3, (32, 32))   # 3 stacked layers
    assert labels["blocks/mlp/down/kernel"] == ("matrix", 3, (f, 32))
    assert labels["blocks/attn_norm/scale"][0] == "vector"
    assert ("embed/cls" in labels) == (pool == "cls")
    assert count_params(params) == vit_param_counts(cfg)["total"]
    logits = model(jax.random.normal(jax.random.key(1), (5, 8, 8, 1)))
    assert logits.shape == (5, 10) and logits.dtype == jnp.float32
    np.testing.assert_array_equal(logits, 0.0)   # zero-initialised head


def test_attention_is_not_causal():
    """The first token's output depends on the last patch (it would not in the LM)."""
    cfg = ViTConfig(d_model=32, n_layers=1, n_heads=2, pool="cls")
    model = ViT(cfg, rngs=nnx.Rngs(0))
    model.head.kernel.set_value(jax.random.normal(jax.random.key(2), model.head.kernel.shape))
    x = jax.random.normal(jax.random.key(3), (1, 8, 8, 1))
    y = x.at[:, 6:, 6:].add(1.0)                             # only the last patch changes
    assert not np.allclose(model(x), model(y))


def test_flops_count_every_matmul_once():
    cfg = ViTConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, pool="mean")
    t, d = cfg.seq_len, 32
    per_block = 4 * d * d + 3 * d * 64                      # q, k, v, o and the SwiGLU
    per_image = 16 * 4 * d + t * 2 * per_block + 2 * 2 * t * t * d + d * 10
    assert vit_flops_per_token(cfg)["forward"] == pytest.approx(2 * per_image / t)


@pytest.mark.parametrize("kwargs,match", [({"patch_size": 3}, "must divide image_size=8"),
                                          ({"pool": "max"}, "pool='max'"),
                                          ({"n_heads": 3}, "not divisible by n_heads=3")])
def test_bad_configs_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ViTConfig(**kwargs)
