"""Mesh specs and the logical-axis rules table, on 8 fake CPU devices."""

import jax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxlab.mesh import make_mesh, parse_mesh_spec
from jaxlab.nn import ModelConfig, TransformerLM
from jaxlab.sharding import AxisRules, state_shardings


def test_eight_fake_devices():
    assert jax.device_count() == 8


@pytest.mark.parametrize("spec, sizes", [
    ("data=2,fsdp=2,tensor=2", {"data": 2, "fsdp": 2, "tensor": 2}),
    ("fsdp=-1,tensor=2", {"data": 1, "fsdp": 4, "tensor": 2}),
    ("data=-1", {"data": 8, "fsdp": 1, "tensor": 1}),
    ("data=1", {"data": 1, "fsdp": 1, "tensor": 1}),
    ("tensor=4", {"data": 1, "fsdp": 1, "tensor": 4}),
    ("data=2,expert=4", {"data": 2, "fsdp": 1, "tensor": 1, "expert": 4}),
])
def test_parse_mesh_spec(spec, sizes):
    assert parse_mesh_spec(spec, 8) == {"expert": 1, **sizes}


@pytest.mark.parametrize("spec, match", [
    ("data=3", "needs 3 devices, which does not divide the 8"),
    ("data=-1,fsdp=-1", "only one mesh axis may be -1"),
    ("model=2", "'model=2'"),
    ("data=two", "non-integer size 'two'"),
    ("fsdp=3,data=-1", "fixed axes need 3 devices"),
])
def test_bad_mesh_spec(spec, match):
    with pytest.raises(ValueError, match=match):
        make_mesh(spec)


def test_subset_mesh_uses_first_devices():
    mesh = make_mesh("data=1")
    assert mesh.devices.size == 1 and mesh.devices.flat[0] == jax.devices()[0]


def test_rules_resolve_and_collide():
    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    rules = AxisRules()
    assert rules.spec(("embed", "mlp"), (8, 16), mesh) == P("fsdp", "tensor")
    assert rules.spec(("layers", "embed", "heads", "head_dim"), (2, 8, 4, 4), mesh) == \
        P(None, "fsdp", "tensor")
    assert rules.spec(("batch", None), (8, 4), mesh) == P(("data", "fsdp"))
    # A dimension the mesh axes do not divide stays replicated.
    assert rules.spec(("embed", "kv_heads"), (8, 1), mesh) == P("fsdp")
    with pytest.raises(ValueError, match="both map to mesh axis 'tensor'"):
        rules.spec(("heads", "mlp"), (4, 4), mesh)
    with pytest.raises(ValueError, match="no sharding rule"):
        rules.spec(("nonsense",), (4,), mesh)
    with pytest.raises(ValueError, match="given twice"):
        AxisRules((("embed", "fsdp"), ("embed", "tensor")))


def test_every_model_param_gets_a_sharding():
    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=4, tie_embeddings=False)
    abstract = nnx.state(nnx.eval_shape(lambda: TransformerLM(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    specs = {"/".join(map(str, p)): v.get_value().spec
             for p, v in nnx.to_flat_state(state_shardings(abstract, mesh))}
    assert specs["blocks/attn/q/kernel"] == P(None, "fsdp", "tensor")
    assert specs["blocks/mlp/down/kernel"] == P(None, "tensor", "fsdp")
    assert specs["embed/embedding"] == P("tensor", "fsdp")
    assert specs["lm_head/kernel"] == P("fsdp", "tensor")
    assert specs["final_norm/scale"] == P()
