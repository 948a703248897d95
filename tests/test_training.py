"""The train step: it learns, accumulation is exact, dropout is seeded."""

import dataclasses

import jax
import numpy as np

from tests import families
from zoo import sharding
from zoo.config import MeshConfig
from zoo.training import step as step_lib
from zoo.testing import random_batch, tiny_config, tiny_model


def _run(cfg, batches):
  state, losses, _ = families.train(cfg, batches)
  return state, losses


def test_loss_falls_on_a_repeated_batch():
  cfg = tiny_config(steps=30)
  batch = random_batch(cfg)
  _, losses = _run(cfg, [batch] * 30)
  assert losses[-1] < 0.8 * losses[0], losses  # memorising random tokens


def test_gradient_accumulation_is_exact():
  cfg = tiny_config(model=tiny_model(), mesh=MeshConfig(data=1))
  batch = random_batch(cfg, seed=3)
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  results = []
  for accum in (1, 4):
    c = dataclasses.replace(cfg, grad_accum_steps=accum)
    trainer, state, _ = step_lib.create(c, mesh)
    with sharding.activate(mesh):
      loss, grads, _ = jax.jit(lambda s, b: step_lib.loss_and_grads(trainer, s, b))(
          state, sharding.global_batch(batch, mesh))
    results.append((float(loss), jax.device_get(grads)))
  np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8),
               results[0][1], results[1][1])


def test_dropout_changes_the_loss_and_is_reproducible():
  cfg = tiny_config(model=tiny_model(dropout=0.5))
  batch = random_batch(cfg)
  _, a = _run(cfg, [batch] * 2)
  _, b = _run(cfg, [batch] * 2)
  _, none = _run(dataclasses.replace(cfg, model=tiny_model(dropout=0.0)), [batch] * 2)
  assert a == b
  assert a[0] != none[0]
