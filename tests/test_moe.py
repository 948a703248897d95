"""The MoE block in the whole model: causality, sharding, training, accounting, configs."""

import dataclasses
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import moe as moe_configs
from tests import families
from zoo import accounting, config, plotting, sharding
from zoo.config import ConfigError, MeshConfig
from zoo.families.mixture_of_experts import MoeConfig
from zoo.models import Decoder, flops
from zoo.training import collectives, step as step_lib
from zoo.testing import random_batch, tiny_config, tiny_model

SWITCH = MoeConfig(router="switch", num_experts=8, capacity_factor=1.0)


def _model(moe: MoeConfig, **overrides):
  cfg = tiny_model(pattern=("dense", "moe"), moe=moe, **overrides)
  return cfg, Decoder(cfg, rngs=nnx.Rngs(0))


def _logits(model, tokens):
  graphdef, state = nnx.split(model)
  return jax.jit(lambda s, t: nnx.merge(graphdef, s)(t)[0])(state, tokens)


def _later_token_changes_earlier_output(moe: MoeConfig) -> bool:
  _, model = _model(moe)
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, (2, 16)), jnp.int32)
  changed = tokens.at[:, 12:].set((tokens[:, 12:] + 7) % 63 + 1)
  a, b = _logits(model, tokens), _logits(model, changed)
  return not np.allclose(a[:, :12], b[:, :12], rtol=0, atol=0)


@pytest.mark.parametrize("moe", [
    MoeConfig(router="switch", capacity_factor=0.0),
    MoeConfig(router="switch", capacity_factor=1.0),
    MoeConfig(router="topk", top_k=2, capacity_factor=0.0),
    MoeConfig(router="hash", num_experts=8, capacity_factor=0.0, hash_kind="bigram"),
], ids=["switch_dropless", "switch_capacity", "topk_dropless", "hash_bigram"])
def test_token_choice_is_causal(moe):
  assert not _later_token_changes_earlier_output(moe)


def test_expert_choice_is_not_causal():
  assert _later_token_changes_earlier_output(
      MoeConfig(router="expert_choice", num_experts=8, capacity_factor=1.0))


def _loss_and_grads(model_cfg, mesh_cfg: MeshConfig, devices, *, partition="shard_map",
                    hlo=False):
  cfg = tiny_config(model=model_cfg, mesh=mesh_cfg, partition=partition)
  mesh = sharding.make_mesh(cfg.mesh, devices)
  trainer, state, shardings = step_lib.create(cfg, mesh)
  batch = sharding.global_batch(random_batch(cfg, seed=7), mesh)
  with sharding.activate(mesh):
    def fn(s, b):
      with sharding.partition(partition):
        return step_lib.loss_and_grads(trainer, s, b)
    fn = jax.jit(fn, in_shardings=(shardings, sharding.batch_sharding(mesh)))
    loss, grads, aux = fn(state, batch)
    text = fn.lower(state, batch).compile().as_text() if hlo else None
  out = state, jax.device_get(loss), jax.device_get(nnx.to_pure_dict(grads)), jax.device_get(aux)
  return out + (text,) if hlo else out


MESHES = [MeshConfig(data=1, expert=8), MeshConfig(data=2, expert=4)]


def _assert_same(got, want):
  _, loss, grads, aux = got[:4]
  np.testing.assert_allclose(loss, want[1], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               grads, want[2])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               aux, want[3])


@pytest.mark.slow
@pytest.mark.parametrize("moe", [
    MoeConfig(router="switch", capacity_factor=1.25),
    MoeConfig(router="topk", top_k=2, capacity_factor=0.0),
    MoeConfig(router="expert_choice", capacity_factor=2.0),
    MoeConfig(router="switch", noop_experts=8),
    MoeConfig(router="hash", capacity_factor=0.0),
], ids=["switch_capacity", "topk_dropless", "expert_choice", "integrated_mode", "hash"])
def test_expert_sharded_matches_one_device(moe):
  """Expert parallelism (8 and 4 experts per device, tokens moved by all-to-all, or by
  all-gather and reduce-scatter when dropless) gives the loss, gradients and statistics of
  one device."""
  model_cfg = tiny_model(pattern=("dense", "moe"), moe=moe, tie_embeddings=False)
  want = _loss_and_grads(model_cfg, MeshConfig(data=1), jax.devices()[:1])
  for mesh_cfg in MESHES:
    got = _loss_and_grads(model_cfg, mesh_cfg, jax.devices())
    experts = got[0].params["stack"]["units"][0]["blocks"][1]["moe"]["experts"]["in_EDF"][...]
    assert experts.sharding.spec[0] == "expert"
    assert experts.addressable_shards[0].data.shape[0] == 8 // mesh_cfg.expert
    _assert_same(got, want)


@pytest.mark.slow
def test_shard_map_moves_tokens_by_all_to_all_and_matches_gspmd():
  """The same Switch step partitioned both ways: shard_map sends slots to their experts with
  all-to-all; GSPMD, left to itself, does not; the results agree."""
  model_cfg = tiny_model(pattern=("dense", "moe"), moe=SWITCH, tie_embeddings=False)
  mesh_cfg = MeshConfig(data=2, expert=4)
  *manual, manual_hlo = _loss_and_grads(model_cfg, mesh_cfg, jax.devices(), hlo=True)
  *auto, auto_hlo = _loss_and_grads(model_cfg, mesh_cfg, jax.devices(), partition="gspmd",
                                    hlo=True)
  assert collectives.bytes_by_kind(manual_hlo)["all-to-all"] > 0
  assert collectives.bytes_by_kind(auto_hlo)["all-to-all"] == 0
  _assert_same(manual, auto)


def _train(moe: MoeConfig, steps: int = 30):
  """Fits one fixed batch of random tokens; "learns" means the loss ends 20% below its
  start (ln 64 = 4.16 at uniform predictions), far past what noise can do."""
  cfg = tiny_config(model=tiny_model(pattern=("dense", "moe"), moe=moe), steps=steps,
                    batch_size=8, seq_len=16)
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  trainer, state, shardings = step_lib.create(cfg, mesh)
  train, _ = step_lib.jit_steps(trainer, shardings, mesh)
  batch = sharding.global_batch(random_batch(cfg, seed=1), mesh)
  losses = []
  for _ in range(steps):
    state, metrics = train(state, batch)
    losses.append(float(metrics["loss"]))
  return losses, jax.device_get(metrics)


@pytest.mark.slow
def test_switch_learns_and_reports_aux_separately():
  losses, metrics = _train(SWITCH)
  assert losses[-1] < 0.8 * losses[0]
  assert 0 < metrics["layer_1/aux_loss/load_balance"] < 0.1  # alpha = 0.01 times ~1
  for name in ("dropped", "load_max", "load_min", "router_entropy"):
    assert np.isfinite(metrics[f"layer_1/moe/{name}"])
  load = metrics["layer_1/moe/expert_load"]  # the load histogram: one entry per expert
  assert load.shape == (8,) and np.isclose(load.mean(), 1.0, rtol=1e-5)
  assert np.isclose(load.max(), metrics["layer_1/moe/load_max"])


@pytest.mark.slow
@pytest.mark.parametrize("moe", [
    MoeConfig(router="topk", top_k=2),
    MoeConfig(router="topk", top_k=2, capacity_factor=0.0),
    MoeConfig(router="expert_choice", capacity_factor=2.0),
    MoeConfig(router="base", num_experts=4),
    MoeConfig(router="hash", capacity_factor=0.0),
    MoeConfig(router="expert_choice", num_experts=16, top_k=4, granularity=4,
              capacity_factor=1.0),
], ids=["topk", "topk_dropless", "expert_choice", "base", "hash", "fine_grained"])
def test_every_router_learns(moe):
  losses, _ = _train(moe)
  assert losses[-1] < 0.8 * losses[0]


def test_routing_flops_follow_krajewski():
  cfg = tiny_model(pattern=("moe",), num_layers=1, moe=SWITCH)
  dense = dataclasses.replace(cfg, pattern=("dense",))
  seq = 16
  extra_train = accounting.train_flops_per_token(cfg, seq) - accounting.train_flops_per_token(
      dense, seq)
  extra_fwd = accounting.forward_flops_per_token(cfg, seq) - accounting.forward_flops_per_token(
      dense, seq)
  assert extra_train == 14 * cfg.d_model * 8  # top-1: expert FLOPs equal the dense MLP's
  assert extra_fwd == 6 * cfg.d_model * 8
  topk = dataclasses.replace(cfg, moe=MoeConfig(router="topk", top_k=2))
  assert (accounting.forward_flops_per_token(topk, seq)
          - accounting.forward_flops_per_token(cfg, seq)) == flops.mlp_flops(cfg)


@pytest.mark.parametrize("router", moe_configs.ROUTERS)
def test_configs_parse_and_build_at_full_size(router):
  for size in ("tiny", "small"):
    cfg = config.from_configdict(moe_configs.get_config(f"{router}_{size}"))
    config.validate(cfg, num_devices=1)
    if size == "small":
      params = accounting.count_params(cfg.model)
      assert params.active_per_token < params.total
      model = nnx.eval_shape(lambda c=cfg: Decoder(c.model, rngs=nnx.Rngs(0)))
      assert model is not None


@pytest.mark.parametrize("field,value", [
    ("router", "sinkhorn"), ("top_k", 1), ("capacity_factor", -1.0), ("granularity", 3),
    ("hash_kind", "cuckoo"), ("backend", "triton")])
def test_bad_moe_values_name_the_field(field, value):
  moe = dict(router="topk", top_k=2)
  moe[field] = value
  cfg = tiny_config(model=tiny_model(pattern=("moe",), moe=MoeConfig(**moe)))
  with pytest.raises(ConfigError, match=f"model.moe.{field}"):
    config.validate(cfg, num_devices=1)


def test_base_needs_a_sequence_divisible_by_the_experts():
  cfg = tiny_config(model=tiny_model(pattern=("moe",), moe=MoeConfig(router="base",
                                                                       num_experts=5)))
  with pytest.raises(ConfigError, match="model.moe.num_experts"):
    config.validate(cfg, num_devices=1)


@pytest.mark.parametrize("moe", [
    MoeConfig(router="switch", num_experts=8, capacity_factor=1.0),
    MoeConfig(router="expert_choice", num_experts=8, capacity_factor=1.0),
    MoeConfig(router="switch", num_experts=8, noop_experts=8, capacity_factor=1.0),
], ids=["switch", "expert_choice", "integrated_mode"])
@pytest.mark.parametrize("train", [False, True], ids=["forward", "train"])
def test_analytic_flops_match_xla_within_3_percent(moe, train):
  """Capacity factor 1, so the experts compute exactly the slots the analytic count charges
  (at balance for the no-op case: E x C = L E / (E + N) slots). Krajewski et al.'s routing
  term counts dispatch and combine as if they were matmuls (4 d E of the 6 d E forward); ours
  are gathers, so XLA counts less there: 1% of this model."""
  cfg = tiny_model(vocab_size=256, d_model=256, num_heads=4, d_ff=0, num_layers=2,
                   pattern=("moe",), moe=moe)
  batch, seq = 2, 128
  xla = families.xla_flops(cfg, batch, seq, train=train)
  per_token = (accounting.train_flops_per_token if train
               else accounting.forward_flops_per_token)(cfg, seq)
  print(f"{moe.router} noop={moe.noop_experts} train={train}: analytic/xla "
        f"{per_token * batch * seq / xla:.4f}")
  assert abs(per_token * batch * seq / xla - 1) < 0.03


def test_metric_writer_keeps_vector_statistics(tmp_path):
  """A per-expert load goes to metrics.jsonl as a list and to TensorBoard as a histogram."""
  import json

  from zoo.training.metrics import MetricWriter

  writer = MetricWriter(str(tmp_path))
  writer.add(10, {"loss": np.float32(2.5), "layer_1/moe/expert_load": np.array([0.5, 1.5])})
  writer.close()
  record = json.loads((tmp_path / "metrics.jsonl").read_text())
  assert record == {"step": 10, "loss": 2.5, "layer_1/moe/expert_load": [0.5, 1.5]}
  assert list((tmp_path / "tensorboard").iterdir())


def test_expert_load_figure_reads_the_logged_histograms(tmp_path):
  """eval.py --figures: one PNG per MoE layer from metrics.jsonl, steps along x."""
  from zoo.families import mixture_of_experts
  rows = [{"step": s, "loss": 1.0, "layer_1/moe/expert_load": [1.0 + 0.1 * s, 1.0 - 0.1 * s]}
          for s in (10, 20, 30)]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  run = types.SimpleNamespace(workdir=str(tmp_path))
  paths = mixture_of_experts.figures(run, str(tmp_path))
  assert paths == [str(tmp_path / "expert_load_layer_1.png")]
  assert open(paths[0], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  fig = plotting.expert_loads([10, 20], [[1.0, 1.0], [1.2, 0.8]])
  assert fig.axes[0].get_xlabel() == "training step" and fig.axes[0].get_ylabel() == "expert"
