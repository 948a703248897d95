"""Checkpoints: restore on other meshes, bad checkpoints, process counts, no pickle."""

import dataclasses
import json
import os
import pickle
import shutil

import chex
import jax
import numpy as np
import pytest

from zoo import checkpoint, config, sharding
from zoo.config import MeshConfig
from zoo.training import step as step_lib
from zoo.testing import random_batch, tiny_config, tiny_model

CFG = tiny_config(model=tiny_model(tie_embeddings=False), batch_size=8, seq_len=16)
META_FP = "f" * 64


def _trained_state(mesh_cfg, steps=3):
  cfg = dataclasses.replace(CFG, mesh=mesh_cfg)
  mesh = sharding.make_mesh(cfg.mesh)
  trainer, state, shardings = step_lib.create(cfg, mesh)
  train, evaluate = step_lib.jit_steps(trainer, shardings, mesh)
  with sharding.activate(mesh):
    for i in range(steps):
      state, _ = train(state, sharding.global_batch(random_batch(cfg, seed=i), mesh))
  return cfg, state


def _val_loss(mesh_cfg, directory, step):
  cfg = dataclasses.replace(CFG, mesh=mesh_cfg)
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[: _size(mesh_cfg)])
  trainer, target, shardings = step_lib.create(cfg, mesh)
  ckpt = checkpoint.Checkpointer(directory, keep=3)
  state = ckpt.restore(step, target)
  ckpt.close()
  _, evaluate = step_lib.jit_steps(trainer, shardings, mesh)
  with sharding.activate(mesh):
    s, n = evaluate(state, sharding.global_batch(random_batch(cfg, seed=99), mesh))
  leaf = state.params["embed"]["table_VD"][...]
  return float(s.sum() / n.sum()), leaf.sharding, np.asarray(leaf)


def _size(mesh_cfg):
  return int(np.prod([v for v in dataclasses.asdict(mesh_cfg).values() if v > 0]))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A checkpoint written from 8 devices with fsdp=8."""
  directory = str(tmp_path_factory.mktemp("ckpt"))
  cfg, state = _trained_state(MeshConfig(data=1, fsdp=8))
  ckpt = checkpoint.Checkpointer(directory, keep=3)
  ckpt.save(3, state, None, checkpoint.metadata(cfg, META_FP))
  ckpt.close()
  return directory, cfg


def test_fsdp8_checkpoint_restores_on_one_device_and_on_data2_tensor4(saved):
  directory, _ = saved
  ref_loss, _, ref_table = _val_loss(MeshConfig(data=1, fsdp=8), directory, 3)
  one_loss, one_sharding, one_table = _val_loss(MeshConfig(data=1), directory, 3)
  dt_loss, dt_sharding, dt_table = _val_loss(MeshConfig(data=2, tensor=4), directory, 3)
  assert len(one_sharding.device_set) == 1 and len(dt_sharding.device_set) == 8
  np.testing.assert_array_equal(one_table, ref_table)
  np.testing.assert_array_equal(dt_table, ref_table)
  np.testing.assert_allclose([one_loss, dt_loss], ref_loss, rtol=1e-6)


def test_restore_reads_no_pickle(saved, monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("pickle used on the load path")
  monkeypatch.setattr(pickle, "load", refuse)
  monkeypatch.setattr(pickle, "loads", refuse)
  directory, _ = saved
  _val_loss(MeshConfig(data=1), directory, 3)


def _copy(saved, tmp_path):
  directory, cfg = saved
  target = str(tmp_path / "ckpt")
  shutil.copytree(directory, target)
  return target, cfg


def test_other_width_or_vocabulary_is_named(saved, tmp_path):
  directory, cfg = _copy(saved, tmp_path)
  ckpt = checkpoint.Checkpointer(directory, keep=3)
  meta = ckpt.read_meta(3)
  for field, value in (("d_model", 64), ("vocab_size", 128)):
    other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **{field: value}))
    with pytest.raises(checkpoint.CheckpointMismatch, match=f"model.{field}="):
      checkpoint.check_compatible(meta, other, META_FP, "checkpoint 3")
  with pytest.raises(checkpoint.CheckpointMismatch, match="tokenizer"):
    checkpoint.check_compatible(meta, cfg, "0" * 64, "checkpoint 3")
  ckpt.close()


def test_nested_fields_compare_one_by_one_and_new_fields_as_defaults():
  cfg = tiny_config()
  meta = checkpoint.metadata(cfg, META_FP)
  del meta["config"]["model"]["moe"]["noop_experts"]  # written before the field existed
  meta["config"]["model"]["moe"]["hash_frequencies"] = "/elsewhere/hash_counts.npy"
  checkpoint.check_compatible(meta, cfg, META_FP, "checkpoint 1")
  other = dataclasses.replace(cfg, model=dataclasses.replace(
      cfg.model, moe=dataclasses.replace(cfg.model.moe, router="topk", top_k=2)))
  with pytest.raises(checkpoint.CheckpointMismatch, match=r"model\.moe\.router='switch'"):
    checkpoint.check_compatible(meta, other, META_FP, "checkpoint 1")


def _corrupt(step_dir):
  """Truncates every array file of a step: what a partial copy or a bad disk leaves."""
  for root, _, files in os.walk(os.path.join(step_dir, "state")):
    for name in files:
      path = os.path.join(root, name)
      if "ocdbt" in root or name.startswith("manifest") or root.endswith("d"):
        with open(path, "r+b") as f:
          f.truncate(max(os.path.getsize(path) // 3, 1))


def test_corrupted_checkpoint_is_an_error_and_newest_falls_back(saved, tmp_path):
  directory, cfg = _copy(saved, tmp_path)
  mesh = sharding.make_mesh(MeshConfig(data=1), jax.devices()[:1])
  _, target, _ = step_lib.create(dataclasses.replace(cfg, mesh=MeshConfig(data=1)), mesh)
  # A newer step 5 whose arrays are truncated.
  shutil.copytree(os.path.join(directory, "3"), os.path.join(directory, "5"))
  _corrupt(os.path.join(directory, "5"))
  ckpt = checkpoint.Checkpointer(directory, keep=5)
  with pytest.raises(checkpoint.CheckpointError, match="checkpoint 5"):
    ckpt.restore(5, target)
  step, _ = ckpt.restore_latest(target, None, cfg, META_FP)
  assert step == 3
  ckpt.close()


def test_data_state_from_another_process_count_is_refused(tmp_path):
  os.makedirs(tmp_path / "7" / "data")
  (tmp_path / "7" / "data" / "process_0-of-2.json").write_text("{}")
  with pytest.raises(checkpoint.CheckpointMismatch, match="saved by 2 processes"):
    checkpoint._check_process_count(str(tmp_path), 7, data_iter=object())


def test_a_checkpoint_written_before_the_family_registry_still_restores():
  """tests/testdata/layout1_checkpoint was written by commit 70aefaa (config groups in
  zoo/config, `model.param_dtype`): it restores, passes the compatibility check and gives
  the same validation loss."""
  root = os.path.join(os.path.dirname(__file__), "testdata", "layout1_checkpoint")
  with open(os.path.join(root, "expected.json")) as f:
    expected = json.load(f)
  cfg = config.from_saved(expected["config"])
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  trainer, state, shardings = step_lib.create(cfg, mesh)
  ckpt = checkpoint.Checkpointer(os.path.join(root, "checkpoints"), keep=1)
  try:
    checkpoint.check_compatible(ckpt.read_meta(3), cfg, "no-tokenizer", "layout 1")
    state = ckpt.restore(3, state)
  finally:
    ckpt.close()
  _, eval_fn = step_lib.jit_steps(trainer, shardings, mesh)
  batch = dict(np.load(os.path.join(root, "batch.npz")))
  with sharding.activate(mesh):
    sums, counts = eval_fn(state, sharding.global_batch(batch, mesh))  # per sequence
  assert float(np.sum(counts)) == expected["eval_tokens"]
  np.testing.assert_allclose(float(np.sum(sums)), expected["eval_loss_sum"], rtol=1e-6)


def test_eval_restores_parameters_without_the_optimizer_state(saved):
  """eval.py's restore (skip=("opt_state",)) reads the same parameters and no moments."""
  directory, cfg = saved
  mesh = sharding.make_mesh(MeshConfig(data=1), jax.devices()[:1])
  one = dataclasses.replace(cfg, mesh=MeshConfig(data=1))
  _, full, _ = step_lib.create(one, mesh)
  _, abstract, _ = step_lib.create_abstract(one, mesh)
  ckpt = checkpoint.Checkpointer(directory, keep=3, read_only=True)
  try:
    full = ckpt.restore(3, full)
    restored = ckpt.restore(3, dataclasses.replace(abstract, opt_state=None),
                            skip=("opt_state",))
  finally:
    ckpt.close()
  assert restored.opt_state is None
  chex.assert_trees_all_equal(jax.device_get(restored.params), jax.device_get(full.params))
  chex.assert_trees_all_equal(jax.device_get(restored.rest), jax.device_get(full.rest))
