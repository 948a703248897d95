"""Helpers shared by the family tests: training, XLA FLOP counts, jitted calls, decoding."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo import sharding
from zoo.models import Decoder
from zoo.testing import random_batch, tiny_config
from zoo.training import step as step_lib


def train(cfg, batches):
  """Runs the shared jitted train step; returns the final state, losses and the trainer."""
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  trainer, state, shardings = step_lib.create(cfg, mesh)
  step, _ = step_lib.jit_steps(trainer, shardings, mesh)
  losses = []
  with sharding.activate(mesh):
    for batch in batches:
      state, metrics = step(state, sharding.global_batch(batch, mesh))
      losses.append(float(metrics["loss"]))
  return state, losses, trainer


def loss_and_grads_on(cfg, devices):
  """LM loss and gradients of one fixed batch, with the state sharded over `devices`."""
  mesh = sharding.make_mesh(cfg.mesh, devices)
  trainer, state, shardings = step_lib.create(cfg, mesh)
  batch = sharding.global_batch(random_batch(cfg, seed=7), mesh)
  with sharding.activate(mesh):
    fn = jax.jit(lambda s, b: step_lib.loss_and_grads(trainer, s, b)[:2],
                 in_shardings=(shardings, sharding.batch_sharding(mesh)))
    loss, grads = fn(state, batch)
  return state, jax.device_get(loss), jax.device_get(nnx.to_pure_dict(grads))


def learns_on_a_repeated_batch(model_cfg, steps: int = 30):
  cfg = tiny_config(model=model_cfg, steps=steps)
  _, losses, _ = train(cfg, [random_batch(cfg)] * steps)
  assert losses[-1] < 0.8 * losses[0], losses  # memorising random tokens
  return losses


def xla_flops(model_cfg, batch: int, seq_len: int, *, train: bool = False) -> float:
  """XLA's FLOP count of the forward, or of the gradient of the trainable parameters."""
  model_cfg = dataclasses.replace(model_cfg, compute_dtype="float32", scan_layers=False)
  abstract = nnx.eval_shape(lambda: Decoder(model_cfg, rngs=nnx.Rngs(0)))
  graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
  tokens = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32)

  def forward(p, r, t):
    return nnx.merge(graphdef, p, r)(t)[0]

  fn = jax.grad(lambda p, r, t: forward(p, r, t).sum()) if train else forward
  return jax.jit(fn).lower(params, rest, tokens).compile().cost_analysis()["flops"]


def jitted_logits(model):
  """fn(tokens[, positions, segment_ids]) -> float32 logits, one compile per shape."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def forward(tokens, positions=None, segment_ids=None):
    return nnx.merge(graphdef, state)(tokens, positions, segment_ids)[0]

  return lambda *args: jax.device_get(forward(*(jnp.asarray(a) for a in args)))


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, *args):
  module = nnx.merge(graphdef, state)
  return module(*args), nnx.state(module)


def call(module, *args):
  """module(*args), jitted (one compile per graph and shapes); keeps cache updates."""
  out, state = _apply(*nnx.split(module), *args)
  nnx.update(module, state)
  return out


def decode_logits(model, tokens, *, incremental=False):
  """Logits of the sampling path (KV cache): a prefill, or one token per call."""
  b, l = tokens.shape
  model.init_cache(b, l)
  if not incremental:
    return np.asarray(call(model, tokens, jnp.broadcast_to(jnp.arange(l), (b, l)))[0])
  steps = [call(model, tokens[:, t:t + 1], jnp.full((b, 1), t))[0] for t in range(l)]
  return np.asarray(jnp.concatenate(steps, axis=1))
