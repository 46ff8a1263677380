"""The transformer LM: shapes, causality, GQA, scan-vs-loop equivalence, accounting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlab.nn import ModelConfig, TransformerLM, count_params, flops_per_token, param_counts


def make(**kw):
    cfg = ModelConfig(**{"d_model": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 64, **kw})
    return cfg, TransformerLM(cfg, rngs=nnx.Rngs(0))


def tokens(b=2, t=16, seed=0):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, 256)


@pytest.mark.parametrize("scan", [True, False])
@pytest.mark.parametrize("tie", [True, False])
def test_logits_shape_and_param_count(scan, tie):
    cfg, model = make(scan_layers=scan, tie_embeddings=tie, n_kv_heads=2, qk_norm=True)
    assert model(tokens()).shape == (2, 16, 256)
    assert count_params(nnx.state(model, nnx.Param)) == param_counts(cfg)["total"]


def test_causal():
    _, model = make()
    x = tokens()
    y = x.at[:, 10:].set((x[:, 10:] + 7) % 256)
    a, b = model(x), model(y)
    np.testing.assert_allclose(a[:, :10], b[:, :10], atol=1e-5)
    assert not np.allclose(a[:, 10:], b[:, 10:], atol=1e-3)


def test_scan_equals_python_loop():
    """The stacked (L, ...) parameters run through lax.scan give the same logits as the
    same parameters in L separate blocks."""
    cfg_s, scanned = make(scan_layers=True)
    cfg_l, looped = make(scan_layers=False)
    stacked = nnx.state(scanned.blocks, nnx.Param)
    for i, block in enumerate(looped.blocks):
        nnx.update(block, jax.tree.map(lambda x: x[i], stacked))
    nnx.update(looped.embed, nnx.state(scanned.embed))
    nnx.update(looped.final_norm, nnx.state(scanned.final_norm))
    np.testing.assert_allclose(scanned(tokens()), looped(tokens()), rtol=1e-5, atol=1e-5)


def test_stacked_params_have_layers_axis():
    _, model = make(n_layers=3)
    for path, v in nnx.to_flat_state(nnx.state(model.blocks, nnx.Param)):
        assert v.get_value().shape[0] == 3
        assert v.get_metadata()["logical_axes"][0] == "layers", path


def test_gqa_equals_mha_with_repeated_kv_heads():
    """GQA with K kv-heads equals MHA whose k/v kernels repeat each kv head H/K times."""
    cfg_g, gqa = make(n_kv_heads=2, scan_layers=False, n_layers=1)
    cfg_m, mha = make(scan_layers=False, n_layers=1)
    nnx.update(mha, nnx.state(gqa, nnx.Param))
    for name in ("k", "v"):
        w = getattr(gqa.blocks[0].attn, name).kernel.get_value()  # (D, K, Dh)
        getattr(mha.blocks[0].attn, name).kernel.set_value(jnp.repeat(w, 2, axis=1))
    np.testing.assert_allclose(gqa(tokens()), mha(tokens()), rtol=1e-5, atol=1e-5)


def test_bf16_compute_runs_close_to_f32():
    _, m32 = make()
    cfg16 = ModelConfig(d_model=32, n_layers=2, n_heads=4, max_seq_len=64, compute_dtype="bfloat16")
    m16 = TransformerLM(cfg16, rngs=nnx.Rngs(0))
    out = m16(tokens())
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), m32(tokens()), atol=0.1)


def test_sequence_longer_than_model_raises():
    _, model = make(max_seq_len=8)
    with pytest.raises(ValueError, match="max_seq_len=8"):
        model(tokens(t=9))


@pytest.mark.parametrize("bad, match", [
    ({"n_heads": 3}, "not divisible by n_heads=3"),
    ({"n_kv_heads": 3}, "n_kv_heads=3 must divide n_heads=4"),
    ({"compute_dtype": "float64"}, "compute_dtype='float64'"),
])
def test_bad_config_raises(bad, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**{"d_model": 32, "n_heads": 4, **bad})


def test_flops_per_token_by_hand():
    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=4, d_ff=128, vocab_size=256)
    matmul = 2 * (64 * 64 * 4 + 3 * 64 * 128)  # q,k,v,o + gate,up,down per layer
    attention = 2 * 2 * 32 * 64              # QK^T and AV at T=32, MACs per token
    expected_forward = 2 * (matmul + 64 * 256 + attention)
    f = flops_per_token(cfg, seq_len=32)
    assert f["forward"] == expected_forward
    assert f["train"] == 3 * expected_forward
    norms = 2 * 64  # attn_norm, mlp_norm gains per layer
    assert param_counts(cfg)["non_embedding"] == 2 * (matmul // 2 + norms) + 64  # + final norm
