"""The block-sparse linear op (Pallas kernel, interpret mode on CPU) against the dense
masked product: outputs and gradients, multi-axis kernels, and bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.nn.block_linear import (
    block_sparse_dot,
    check_block_kernel_compatible,
    live_tiles,
)


def _masked_kernel(key, in_shape, out_shape, b, density):
    kw, km = jax.random.split(key)
    k, n = int(np.prod(in_shape)), int(np.prod(out_shape))
    tiles = jax.random.uniform(km, (k // b, n // b)) < density
    mask = jnp.repeat(jnp.repeat(tiles, b, 0), b, 1)
    w = jax.random.normal(kw, (k, n)) * mask
    return w.reshape(*in_shape, *out_shape), tiles


@pytest.mark.parametrize("in_shape,out_shape", [((32,), (48,)), ((32,), (2, 16)), ((2, 16), (32,))])
def test_matches_dense_masked_product_and_grads(in_shape, out_shape):
    b = 8
    w, tiles = _masked_kernel(jax.random.key(0), in_shape, out_shape, b, 0.5)
    x = jax.random.normal(jax.random.key(1), (3, 5, *in_shape))
    in_ndim = len(in_shape)
    axes = tuple(range(x.ndim - in_ndim, x.ndim)), tuple(range(in_ndim))

    def dense(x, w):
        return jax.lax.dot_general(x, w, (axes, ((), ())))

    def sparse(x, w):
        return block_sparse_dot(x, w, in_ndim, b, interpret=True)

    np.testing.assert_allclose(sparse(x, w), dense(x, w), rtol=1e-5, atol=1e-5)
    probe = jax.random.normal(jax.random.key(2), dense(x, w).shape)
    gx_d, gw_d = jax.grad(lambda x, w: jnp.sum(dense(x, w) * probe), (0, 1))(x, w)
    gx_s, gw_s = jax.grad(lambda x, w: jnp.sum(sparse(x, w) * probe), (0, 1))(x, w)
    np.testing.assert_allclose(gx_s, gx_d, rtol=1e-5, atol=1e-5)
    # dW: the dense gradient on live tiles, exactly zero on dead ones
    k, n = int(np.prod(in_shape)), int(np.prod(out_shape))
    elem = np.repeat(np.repeat(np.asarray(tiles), b, 0), b, 1)
    gw_s2, gw_d2 = np.asarray(gw_s).reshape(k, n), np.asarray(gw_d).reshape(k, n)
    np.testing.assert_allclose(gw_s2[elem], gw_d2[elem], rtol=1e-5, atol=1e-5)
    assert np.all(gw_s2[~elem] == 0) and np.any(gw_d2[~elem] != 0)


def test_live_tiles_reads_zero_tiles():
    w = jnp.zeros((16, 24)).at[9, 17].set(1.0)
    live = live_tiles(w, 8)
    assert live.shape == (2, 3) and live.tolist() == [[False, False, False], [False, False, True]]


def test_bad_block_size_and_incompatible_setups_are_named():
    with pytest.raises(ValueError, match=r"\(30, 16\).*block size 8"):
        live_tiles(jnp.ones((30, 16)), 8)
    with pytest.raises(ValueError, match="structure='block'.*'nm'"):
        check_block_kernel_compatible("nm", "prune", "magnitude")
    with pytest.raises(ValueError, match="'srste'"):
        check_block_kernel_compatible("block", "srste", "magnitude")
    with pytest.raises(ValueError, match="'saliency'"):
        check_block_kernel_compatible("block", "prune", "saliency")
    check_block_kernel_compatible("block", "prune", "random")


def test_block_kernel_size_choice(monkeypatch):
    from jaxlab.sparse import training
    from jaxlab.sparse.training import SparsityConfig, block_kernel_size, sparsity_config

    block = sparsity_config(target=0.5, structure="block", block_size=8)
    assert block_kernel_size(1, block) is None  # 'auto' on CPU: the dense XLA product
    assert block_kernel_size(1, sparsity_config(target=0.5, structure="block", block_size=8,
                                                kernel="pallas")) == 8
    assert block_kernel_size(1, sparsity_config()) is None  # sparsity off
    with pytest.raises(ValueError, match="one device; the mesh has 8"):
        block_kernel_size(8, sparsity_config(target=0.5, structure="block", kernel="pallas"))
    with pytest.raises(ValueError, match="structure='block'"):
        block_kernel_size(1, sparsity_config(target=0.5, kernel="pallas"))
    with pytest.raises(ValueError, match="unknown sparsity.kernel 'fast'"):
        SparsityConfig(kernel="fast")
    # 'auto' on one accelerator device takes the kernel only where it gives the dense updates
    monkeypatch.setattr(training.jax, "default_backend", lambda: "gpu")
    assert block_kernel_size(1, block) == 8
    assert block_kernel_size(2, block) is None
    assert block_kernel_size(1, sparsity_config(target=0.5, structure="nm")) is None
    assert block_kernel_size(1, sparsity_config(target=0.5, structure="block",
                                                score="saliency")) is None


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_training_through_the_kernel_matches_the_dense_path(tmp_path, optimizer):
    """Block-sparse training (one-shot 50% of 16 x 16 tiles at step 2) with the model's
    hidden matrices multiplied by the Pallas kernel (interpret mode) gives the dense
    product's losses and final weights: the kernel's dW is zero on dead tiles, where the
    prune wrapper masks the dense gradient anyway."""
    import gin

    from jaxlab.data import DataConfig
    from jaxlab.nn import ModelConfig
    from jaxlab.tasks import LanguageModelTask
    from jaxlab.train.config import TrainConfig
    from jaxlab.train.gin_setup import optimizer_config
    from jaxlab.train.loop import Run
    from jaxlab.train.metrics import read_metrics

    model = ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=32)
    cfg = TrainConfig(steps=6, batch_size=2, seq_len=32, log_every=1, eval_every=0,
                      checkpoint_every=0, mesh="data=1", progress=False)
    results = {}
    for kernel in ("pallas", "dense"):
        gin.clear_config()
        gin.parse_config(f"build_optimizer.optimizer = '{optimizer}'\n"
                         "sparsity.target = 0.5\nsparsity.structure = 'block'\n"
                         "sparsity.block_size = 16\nsparsity.unit = 'step'\n"
                         f"sparsity.start = 2\nsparsity.kernel = '{kernel}'\n")
        try:
            run = Run(tmp_path / kernel, LanguageModelTask(model, DataConfig(), cfg.seq_len), cfg,
                      optimizer_config())
            summary = run.run()
        finally:
            gin.clear_config()
        params = jax.tree_util.tree_leaves_with_path(run.final_state["params"])
        results[kernel] = (summary,
                           [r["loss"] for r in read_metrics(tmp_path / kernel / "metrics.jsonl")],
                           {jax.tree_util.keystr(k): np.asarray(v) for k, v in params})
    (s_p, loss_p, w_p), (s_d, loss_d, w_d) = results["pallas"], results["dense"]
    assert s_p["model"]["sparse_block_size"] == 16 and s_d["model"]["sparse_block_size"] is None
    assert len(loss_p) == len(loss_d) == 6
    np.testing.assert_allclose(loss_p, loss_d, rtol=2e-5)
    mlp_up = [k for k in w_p if "'up'" in k]
    assert mlp_up and np.mean(w_p[mlp_up[0]] == 0) >= 0.45  # the run really was block-sparse
    for k in w_d:
        np.testing.assert_allclose(w_p[k], w_d[k], rtol=1e-4, atol=1e-6, err_msg=str(k))
