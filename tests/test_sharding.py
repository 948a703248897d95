"""8 fake CPU devices: sharded loss and gradients equal one device's; shardings follow the rules."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from tests.families import loss_and_grads_on
from zoo import sharding
from zoo.config import MeshConfig
from zoo.training import step as step_lib
from zoo.testing import tiny_config, tiny_model

MODEL = tiny_model(num_layers=2, d_model=32, num_heads=4, d_ff=64, vocab_size=64,
                   tie_embeddings=False)


def _loss_and_grads(mesh_cfg: MeshConfig, devices):
  return loss_and_grads_on(tiny_config(model=MODEL, mesh=mesh_cfg, batch_size=16, seq_len=16),
                           devices)


@pytest.fixture(scope="module")
def reference():
  _, loss, grads = _loss_and_grads(MeshConfig(data=1), jax.devices()[:1])
  return loss, grads


@pytest.mark.parametrize("mesh_cfg", [
    MeshConfig(data=8), MeshConfig(data=1, fsdp=8),
    MeshConfig(data=2, fsdp=2, tensor=2), MeshConfig(data=-1, tensor=2, expert=2),
], ids=["data8", "fsdp8", "data2_fsdp2_tensor2", "data2_tensor2_expert2"])
def test_sharded_matches_one_device(mesh_cfg, reference):
  assert jax.device_count() == 8
  state, loss, grads = _loss_and_grads(mesh_cfg, jax.devices())
  ref_loss, ref_grads = reference
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               grads, ref_grads)


def test_parameter_shardings_follow_the_rules():
  state, _, _ = _loss_and_grads(MeshConfig(data=2, fsdp=2, tensor=2), jax.devices())
  params = state.params
  expected = {
      ("embed", "table_VD"): P("tensor", "fsdp"),
      ("unembed", "out_DV"): P("fsdp", "tensor"),
      ("final_norm", "scale"): P("fsdp"),
  }
  for path, spec in expected.items():
    assert params[path[0]][path[1]][...].sharding.spec == spec
  attn = params["stack"]["units"][0]["blocks"][0]["attn"]
  assert attn["qkv_D3HK"][...].sharding.spec == P("fsdp", None, "tensor", None)
  assert attn["out_HKD"][...].sharding.spec == P("tensor", None, "fsdp")
  mlp = params["stack"]["units"][0]["blocks"][0]["mlp"]
  assert mlp["in_DF"][...].sharding.spec == P("fsdp", "tensor")
  # Born sharded: each device holds only its shard of a parameter sharded 4 ways.
  table = params["embed"]["table_VD"][...]
  assert table.addressable_shards[0].data.shape == (32, 16)
  # Optimizer moments are sharded like their parameters.
  mu = state.opt_state[1][0].mu["embed"]["table_VD"][...]
  assert mu.sharding.spec == P("tensor", "fsdp")


def test_scanned_parameters_have_a_replicated_layer_axis():
  cfg = tiny_config(model=tiny_model(num_layers=2, scan_layers=True), mesh=MeshConfig(fsdp=8, data=1))
  mesh = sharding.make_mesh(cfg.mesh)
  _, state, _ = step_lib.create(cfg, mesh)
  qkv = state.params["stack"]["units"]["blocks"][0]["attn"]["qkv_D3HK"][...]
  assert qkv.sharding.spec == P(None, "fsdp", None, "tensor", None)
