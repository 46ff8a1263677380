"""Exact top-k by threshold search, against NumPy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.sparse.masks import order_keys, topk_masks


def test_order_keys_preserve_float_order():
    x = np.array([-np.inf, -3.5, -1e-30, 0.0, 1e-30, 2.0, 7.25, np.inf], np.float32)
    keys = np.asarray(order_keys(jnp.asarray(x))).astype(np.int64)
    assert np.all(np.diff(keys) > 0)


@pytest.mark.parametrize("k", [0, 1, 17, 34, 35])
def test_topk_per_matrix_exact_count_and_largest(k):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 7)).astype(np.float32)
    ks = np.array([k, max(k - 1, 0), 35 - k])
    (mask,) = jax.jit(lambda x, k: topk_masks([x], k, 1))(x, ks)
    mask = np.asarray(mask)
    np.testing.assert_array_equal(mask.sum(axis=(1, 2)), ks)
    for b in range(3):
        kept, dropped = x[b][mask[b]], x[b][~mask[b]]
        if kept.size and dropped.size:
            assert kept.min() > dropped.max()


def test_ties_broken_by_index_to_exact_count():
    x = np.zeros((2, 8), np.float32)
    x[0, 5] = 1.0
    (mask,) = topk_masks([jnp.asarray(x)], 3)
    mask = np.asarray(mask)
    assert mask.sum() == 3
    assert mask[0, 5] and mask[0, 0] and mask[0, 1]


def test_global_threshold_across_tensors():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(10,)), rng.normal(size=(4, 6))
    masks = topk_masks([jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)], 9)
    flat = np.concatenate([a, b.ravel()]).astype(np.float32)
    want = flat >= np.sort(flat)[-9]
    got = np.concatenate([np.asarray(masks[0]), np.asarray(masks[1]).ravel()])
    np.testing.assert_array_equal(got, want)
