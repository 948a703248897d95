"""Doped models: frozen random MLP blocks are never trained, counted apart, and checkpointed."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from configs import doped
from tests.families import xla_flops
from zoo import accounting, sharding
from zoo import config as config_lib
from zoo.models import Decoder
from zoo.families.doped import FrozenMLPBlock
from zoo.models.parts import Frozen
from zoo.testing import random_batch, tiny_config, tiny_model
from zoo.training import step as step_lib

DOPED = dict(num_layers=5, pattern=("dense", "frozen_mlp"))


def test_frozen_block_weights_are_frozen_variables_with_sharding_names():
  cfg = tiny_model(d_model=32)
  block = FrozenMLPBlock(cfg, rngs=nnx.Rngs(0))
  assert isinstance(block.mlp.in_DF, Frozen) and isinstance(block.mlp.out_FD, Frozen)
  assert block.mlp.in_DF.shape == (32, 6 * 32) and block.mlp.out_FD.shape == (6 * 32, 32)
  assert block.mlp.in_DF.out_sharding == ("embed", "mlp")
  assert isinstance(block.norm.scale, nnx.Param)
  assert float(np.std(np.asarray(block.mlp.in_DF[...]))) > 0  # random, not zeros


@pytest.mark.parametrize("size, layers, trainable, width, heads", [
    ("xsmall", 5, 3, 768, 12), ("small", 11, 6, 768, 12), ("medium", 23, 12, 1024, 16)])
def test_presets_follow_table2_first_and_last_layers_trainable(size, layers, trainable, width,
                                                                heads):
  cfg = config_lib.from_configdict(doped.get_config(size))
  config_lib.validate(cfg, num_devices=1)
  kinds = cfg.model.layer_kinds
  assert len(kinds) == layers and kinds.count("dense") == trainable
  assert kinds[0] == kinds[-1] == "dense"
  assert all(a != b for a, b in zip(kinds, kinds[1:]))  # alternating
  assert (cfg.model.d_model, cfg.model.num_heads) == (width, heads)
  counts = accounting.count_params(cfg.model)
  assert counts.frozen == (layers - trainable) * 2 * width * 6 * width
  nnx.eval_shape(lambda: Decoder(cfg.model, rngs=nnx.Rngs(0)))  # builds at full size


def test_param_counts_report_frozen_apart():
  d, f, v = 32, 64, 64
  counts = accounting.count_params(tiny_model(d_model=d, d_ff=f, vocab_size=v, **DOPED))
  dense_layer = 4 * d * d + 2 * d * f + 2 * d
  assert counts.frozen == 2 * (2 * d * 6 * d)
  assert counts.trainable_non_embedding == 3 * dense_layer + 2 * d + d  # frozen blocks' norms
  assert counts.total == counts.embedding + counts.trainable_non_embedding + counts.frozen
  assert counts.trainable == counts.total - counts.frozen


def _frozen_values(trainer, state):
  return jax.device_get(nnx.state(trainer.model(state), Frozen))


@pytest.fixture(scope="module")
def doped_run():
  """A tiny doped model trained 30 steps on a repeated batch by the shared train step."""
  cfg = tiny_config(model=tiny_model(**DOPED), steps=30)
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  trainer, state, shardings = step_lib.create(cfg, mesh)
  before = dict(
      frozen=_frozen_values(trainer, state),
      params=jax.tree.leaves(state.params, is_leaf=lambda x: isinstance(x, nnx.Variable)),
      moments=sum(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim > 0),
      trainable=sum(x.size for x in jax.tree.leaves(state.params)))
  step, _ = step_lib.jit_steps(trainer, shardings, mesh)
  batch = random_batch(cfg)
  losses = []
  with sharding.activate(mesh):
    for _ in range(cfg.steps):
      state, metrics = step(state, sharding.global_batch(batch, mesh))  # donates the old state
      losses.append(float(metrics["loss"]))
  return trainer, before, state, losses


@pytest.mark.slow
def test_doped_model_learns(doped_run):
  _, _, _, losses = doped_run
  assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.slow
def test_frozen_weights_get_no_gradient_and_no_optimizer_state(doped_run):
  _, before, _, _ = doped_run
  assert not any(isinstance(v, Frozen) for v in before["params"])
  # Two Adam moments for each trainable number and nothing for frozen ones.
  assert before["moments"] == 2 * before["trainable"]


@pytest.mark.slow
def test_training_never_changes_frozen_weights(doped_run):
  trainer, before, state, _ = doped_run
  assert jax.tree.leaves(before["frozen"])
  jax.tree.map(np.testing.assert_array_equal, before["frozen"], _frozen_values(trainer, state))


@pytest.mark.slow
def test_frozen_weights_are_saved_and_restored_with_the_train_state(doped_run, tmp_path):
  trainer, _, state, _ = doped_run
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / "state", state)
  checkpointer.wait_until_finished()
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored = checkpointer.restore(tmp_path / "state", target)
  jax.tree.map(np.testing.assert_array_equal, _frozen_values(trainer, state),
               _frozen_values(trainer, restored))


def test_training_flops_count_frozen_blocks_at_two_thirds():
  """XLA's count of the gradient agrees with forward + input-gradient for frozen blocks."""
  cfg = tiny_model(vocab_size=1024, d_model=256, num_heads=4, d_ff=0, **DOPED)
  batch, seq = 2, 128
  tokens = batch * seq
  xla = xla_flops(cfg, batch, seq, train=True)
  analytic = accounting.train_flops_per_token(cfg, seq) * tokens
  three_x = 3 * accounting.forward_flops_per_token(cfg, seq) * tokens
  print(f"doped train: analytic/xla {analytic / xla:.3f}, 3 x forward/xla {three_x / xla:.3f}")
  assert abs(analytic / xla - 1) < 0.10
  assert three_x / xla > 1.10  # counting frozen blocks like trainable ones would be wrong
  forward = accounting.forward_flops_per_token(cfg, seq) * tokens
  assert abs(forward / xla_flops(cfg, batch, seq) - 1) < 0.10
