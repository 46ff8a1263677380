"""Parameter labelling: labels, stacked axes and fan-in/fan-out of every leaf."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlab.nn import ModelConfig, TransformerLM
from jaxlab.partition import ParamInfo, describe_params, infos_list, label_params, matrix_table


def by_path(infos):
    return {i.path: i for i in infos_list(infos)}


@pytest.mark.parametrize("scan_layers", [True, False])
def test_transformer_labels_and_matrix_axes(scan_layers):
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                      tie_embeddings=False, scan_layers=scan_layers)
    state = nnx.state(nnx.eval_shape(lambda: TransformerLM(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    infos = by_path(describe_params(state))
    pre = "blocks/" if scan_layers else "blocks/0/"
    b = 1 if scan_layers else 0
    assert infos["embed/embedding"].label == "embedding"
    assert infos["lm_head/kernel"].label == "head"
    assert infos["final_norm/scale"].label == "vector"
    assert infos[pre + "attn_norm/scale"].label == "vector"
    q, k, o = infos[pre + "attn/q/kernel"], infos[pre + "attn/k/kernel"], infos[pre + "attn/o/kernel"]
    down = infos[pre + "mlp/down/kernel"]
    assert all(i.label == "matrix" and i.batch_ndim == b for i in (q, k, o, down))
    # (d, heads, head_dim) kernels are d x (heads head_dim) matrices; o is (heads head_dim) x d
    assert q.matrix_shape == (32, 32) and k.matrix_shape == (32, 16)
    assert o.matrix_shape == (32, 32) and o.fan_in_ndim == 2
    assert down.matrix_shape == (cfg.ff_dim, 32)
    assert q.num_matrices == (2 if scan_layers else 1)


def test_tied_embedding_is_embedding_not_matrix():
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, tie_embeddings=True)
    state = nnx.state(nnx.eval_shape(lambda: TransformerLM(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    labels = [i.label for i in infos_list(describe_params(state))]
    assert labels.count("embedding") == 1 and "head" not in labels


def test_plain_pytree_patterns_stacks_and_experts():
    params = {
        "wte": jnp.zeros((100, 16)),
        "layers": {"mlp": jnp.zeros((3, 16, 64)), "ln": jnp.zeros((3, 16)),
                   "experts": {"w_in": jnp.zeros((3, 4, 16, 32))}},
        "experts": {"w": jnp.zeros((8, 16, 32))},
        "proj": {"kernel": jnp.zeros((16, 16)), "bias": jnp.zeros(16)},
        "lm_head": jnp.zeros((16, 100)),
        "scalar": jnp.zeros(()),
    }
    infos = by_path(describe_params(params))
    assert infos["wte"].label == "embedding" and infos["lm_head"].label == "head"
    mlp = infos["layers/mlp"]
    assert (mlp.label, mlp.batch_ndim, mlp.matrix_shape) == ("matrix", 1, (16, 64))
    assert infos["layers/ln"].label == "vector"
    # expert stack (E, in, out): E matrices; stacked layers of experts (L, E, in, out)
    ex = infos["experts/w"]
    assert (ex.label, ex.num_matrices, ex.matrix_shape) == ("matrix", 8, (16, 32))
    lex = infos["layers/experts/w_in"]
    assert (lex.batch_ndim, lex.num_matrices, lex.matrix_shape) == (2, 12, (16, 32))
    assert infos["proj/kernel"].batch_ndim == 0 and infos["proj/bias"].label == "vector"
    assert infos["scalar"].label == "vector"


def test_vector_names_single_letters_only_count_under_stacks():
    # `b`/`g` are common generic names: a plain 2-D `b` is a matrix, a stacked (L, D) `b`
    # is L bias vectors; an unambiguous norm name is a vector at any shape.
    params = {"b": jnp.zeros((8, 8)), "layers": {"b": jnp.zeros((3, 8)), "g": jnp.zeros((3, 8))},
              "final_norm": jnp.zeros((3, 8))}
    infos = by_path(describe_params(params))
    assert infos["b"].label == "matrix" and infos["b"].matrix_shape == (8, 8)
    assert infos["layers/b"].label == "vector" and infos["layers/g"].label == "vector"
    assert infos["final_norm"].label == "vector"


def test_as_matrices_round_trip():
    info = ParamInfo("blocks/o", "matrix", (2, 4, 8, 32), batch_ndim=1, fan_in_ndim=2)
    x = jnp.arange(np.prod(info.shape), dtype=jnp.float32).reshape(info.shape)
    m = info.as_matrices(x)
    assert m.shape == (2, 32, 32)
    np.testing.assert_array_equal(info.from_matrices(m), x)
    np.testing.assert_array_equal(m[1, 4 * 8 - 1], x[1, 3, 7])


def test_overrides():
    params = {"embed": jnp.zeros((10, 4)), "h": {"w": jnp.zeros((4, 4))}}
    labels = label_params(params, {r"^h/w$": "vector", "embed": "matrix"})
    assert labels == {"embed": "matrix", "h": {"w": "vector"}}
    infos = describe_params({"odd": jnp.zeros((6, 2, 3, 5))}, axis_overrides={"odd": (1, 2)})
    assert infos["odd"].matrix_shape == (6, 5) and infos["odd"].num_matrices == 6
    with pytest.raises(ValueError, match="label 'weights' for 'h/w' is not one of"):
        describe_params(params, {"h/w": "weights"})
    with pytest.raises(ValueError, match="cannot have fan_in_ndim=3"):
        describe_params({"k": jnp.zeros((4, 4, 4))}, axis_overrides={"k": (0, 3)})


@pytest.mark.parametrize("path,shape", [
    (("blocks", "attn", "q"), (3, 64, 4, 16)),     # (L, D, H, Dh): the rule cannot tell
    (("attn", "o"), (4, 16, 64)),                  # (H, Dh, D) outside any stack
    (("proj",), (2, 3, 4, 5, 6)),
])
def test_plain_pytree_leaf_the_rule_cannot_decide_is_an_error(path, shape):
    params = {path[0]: jnp.zeros(shape)} if len(path) == 1 else {
        path[0]: {path[1]: jnp.zeros(shape)} if len(path) == 2 else
        {path[1]: {path[2]: jnp.zeros(shape)}}}
    with pytest.raises(ValueError, match=rf"'{'/'.join(path)}' with shape \({shape[0]}, "):
        describe_params(params)


def test_plain_pytree_axes_said_by_overrides_or_optax_dimension_numbers():
    """A (L, D, H, Dh) query kernel as L matrices of D x (H Dh), said either way; optax's
    MuonDimensionNumbers are accepted as they are (batch axes implicit)."""
    from optax.contrib import MuonDimensionNumbers

    params = {"blocks": {"q": jnp.zeros((3, 64, 4, 16)), "mlp": jnp.zeros((3, 64, 128))},
              "attn_out": jnp.zeros((4, 16, 64))}
    by_regex = by_path(describe_params(params, axis_overrides={r"blocks/q$": (1, 1),
                                                               r"attn_out": (0, 2)}))
    dims = {"blocks": {"q": MuonDimensionNumbers(reduction_axis=1, output_axis=(2, 3)),
                       "mlp": None},
            "attn_out": MuonDimensionNumbers(reduction_axis=(0, 1), output_axis=2)}
    by_dims = by_path(describe_params(params, dimension_numbers=dims))
    for infos in (by_regex, by_dims):
        q, o, mlp = infos["blocks/q"], infos["attn_out"], infos["blocks/mlp"]
        assert (q.num_matrices, q.fan_in, q.fan_out) == (3, 64, 64)
        assert (o.num_matrices, o.fan_in, o.fan_out) == (1, 64, 64)
        assert (mlp.num_matrices, mlp.fan_in, mlp.fan_out) == (3, 64, 128)  # the rule
    bad = {"blocks": {"q": MuonDimensionNumbers(reduction_axis=3, output_axis=1), "mlp": None},
           "attn_out": None}
    with pytest.raises(ValueError, match="'blocks/q' of shape .* must name batch axes first"):
        describe_params({"blocks": params["blocks"], "attn_out": jnp.zeros((4, 4))},
                        dimension_numbers=bad)


def test_matrix_table_prints_the_chosen_shapes():
    params = {"wte": jnp.zeros((100, 16)), "layers": {"mlp": jnp.zeros((3, 16, 64)),
                                                      "ln": jnp.zeros((3, 16))}}
    table = matrix_table(describe_params(params))
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["path", "shape", "label"]
    mlp = next(line for line in lines if line.startswith("layers/mlp"))
    assert "(3, 16, 64)" in mlp and "matrix" in mlp and mlp.endswith("3 x 16 x 64")
    assert next(line for line in lines if line.startswith("wte")).split()[-1] == "embedding"
