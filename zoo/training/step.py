"""The train state and the one jitted train step shared by every family.

The model is split by filter into trainable parameters (`nnx.Param`) and everything else
(frozen weights, buffers). Gradients and optimizer state exist for the trainable part only,
so frozen variables never change. The step accumulates gradients over micro-batches,
normalising by the token count of the whole batch so accumulation is exact.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import zoo.families  # noqa: F401  (registers every family)
from zoo import sharding
from zoo.config import Config
from zoo.models import Decoder, aux_loss
from zoo.training.optimizer import make_optimizer, schedule


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
  step: jax.Array
  params: Any  # nnx.State of trainable nnx.Param
  rest: Any  # nnx.State of everything else (frozen weights included)
  opt_state: Any
  rng: jax.Array  # base key for dropout; folded with the step


@dataclasses.dataclass(frozen=True)
class Trainer:
  """Static pieces of training: the model graph, the optimizer, the config."""

  cfg: Config
  graphdef: Any
  tx: optax.GradientTransformation

  def model(self, state: TrainState) -> nnx.Module:
    return nnx.merge(self.graphdef, state.params, state.rest)


def build_model(cfg: Config, seed: int) -> nnx.Module:
  return Decoder(cfg.model, rngs=nnx.Rngs(params=seed))


def _init(cfg: Config, tx, key) -> TrainState:
  model = Decoder(cfg.model, rngs=nnx.Rngs(params=key))
  _, params, rest = nnx.split(model, nnx.Param, ...)
  return TrainState(jnp.zeros((), jnp.int32), params, rest, tx.init(params),
                    jax.random.key_data(jax.random.fold_in(key, 1)))


def create_abstract(cfg: Config, mesh) -> tuple[Trainer, TrainState, Any]:
  """(trainer, abstract state, shardings) for `mesh`: shapes only, nothing allocated; the
  state's leaves are ShapeDtypeStructs carrying their shardings (an ahead-of-time target)."""
  tx = make_optimizer(cfg.optimizer, cfg.steps)
  with sharding.activate(mesh):
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: build_model(cfg, 0)))
    abstract = jax.eval_shape(lambda: _init(cfg, tx, jax.random.key(cfg.seed)))
    shardings = sharding.state_shardings(abstract, mesh)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
  return Trainer(cfg, graphdef, tx), abstract, shardings


def create(cfg: Config, mesh) -> tuple[Trainer, TrainState, Any]:
  """Builds the train state directly sharded on `mesh`; returns (trainer, state, shardings)."""
  trainer, _, shardings = create_abstract(cfg, mesh)
  with sharding.activate(mesh):
    init = lambda key: _init(cfg, trainer.tx, key)  # noqa: E731
    state = jax.jit(init, out_shardings=shardings)(jax.random.key(cfg.seed))
  return trainer, state, shardings


def lm_loss(logits_BLV, targets_BL, weights_BL):
  """Summed token cross-entropy (float32) and the number of weighted tokens."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, targets_BL)
  return jnp.sum(ce * weights_BL), jnp.sum(weights_BL)


def _forward(trainer: Trainer, params, rest, batch, rng):
  model = nnx.merge(trainer.graphdef, params, rest)
  return model(batch["inputs"], batch["positions"], batch["segment_ids"], rng=rng)


def _microbatches(batch: dict, n: int) -> dict:
  """[B, L] -> [n, B/n, L], each micro-batch spread over every batch shard."""
  def split(x):
    b = x.shape[0]
    x = x.reshape(b // n, n, *x.shape[1:]).swapaxes(0, 1)
    return sharding.constrain(x, (None, "batch", "length"))
  return jax.tree.map(split, batch)


def loss_and_grads(trainer: Trainer, state: TrainState, batch: dict):
  """LM loss, gradients of the objective (LM + auxiliary losses) and the blocks' aux."""
  cfg = trainer.cfg
  n_micro = cfg.grad_accum_steps
  total_tokens = jnp.maximum(jnp.sum(batch["segment_ids"] > 0), 1).astype(jnp.float32)
  dropout_rng = None
  if cfg.model.dropout > 0:
    dropout_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def objective(params, micro, index):
    rng = None if dropout_rng is None else jax.random.fold_in(dropout_rng, index)
    logits, aux = _forward(trainer, params, state.rest, micro, rng)
    weights = (micro["segment_ids"] > 0).astype(jnp.float32)
    lm_sum, _ = lm_loss(logits, micro["targets"], weights)
    return lm_sum / total_tokens + aux_loss(aux) / n_micro, (lm_sum, aux)

  grad_fn = jax.value_and_grad(objective, has_aux=True)

  def accumulate(carry, inputs):
    grads, lm_sum = carry
    micro, index = inputs
    (_, (micro_lm, aux)), g = grad_fn(state.params, micro, index)
    return (jax.tree.map(jnp.add, grads, g), lm_sum + micro_lm), aux

  zeros = jax.tree.map(jnp.zeros_like, state.params)
  (grads, lm_sum), aux = jax.lax.scan(
      accumulate, (zeros, jnp.zeros((), jnp.float32)),
      (_microbatches(batch, n_micro), jnp.arange(n_micro)))
  # Aux over micro-batches: the mean of each statistic (a scalar, or a vector such as an
  # MoE layer's per-expert load).
  return lm_sum / total_tokens, grads, jax.tree.map(lambda a: jnp.mean(a, axis=0), aux)


def train_step(trainer: Trainer, state: TrainState, batch: dict):
  """One optimizer update; returns the new state and a dict of metrics (scalars, and the
  blocks' vector statistics such as "layer_<i>/moe/expert_load").

  An update whose loss or gradient norm is not finite is not applied (the step counter
  still advances) and `metrics["finite"]` is False: the state held is always finite, and
  the loop decides whether to stop or go on (config `nonfinite`).
  """
  loss, grads, aux = loss_and_grads(trainer, state, batch)
  updates, opt_state = trainer.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
  metrics = {
      "loss": loss,
      "lr": schedule(trainer.cfg.optimizer, trainer.cfg.steps)(state.step),
      "grad_norm": grad_norm,
      "finite": finite,
      **aux,
  }
  new_state = dataclasses.replace(state, step=state.step + 1, params=keep(params, state.params),
                                  opt_state=keep(opt_state, state.opt_state))
  return new_state, metrics


def all_finite(tree) -> jax.Array:
  """True when every floating-point leaf of `tree` is finite (checked before each save)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def eval_step(trainer: Trainer, state: TrainState, batch: dict):
  """Per-sequence summed validation cross-entropy and target token counts, [B] each (no
  dropout): the standard error of the loss is over sequences."""
  logits, _ = _forward(trainer, state.params, state.rest, batch, None)
  weights = (batch["segment_ids"] > 0).astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
  return jnp.sum(ce * weights, axis=1), jnp.sum(weights, axis=1)


def jit_steps(trainer: Trainer, shardings, mesh):
  """Jitted (train_step, eval_step) with the state donated and kept on its shardings; the
  eval step's per-sequence outputs are replicated, so every process can read them all."""
  batch_sharding = sharding.batch_sharding(mesh)

  def step(s, b):
    with sharding.partition(trainer.cfg.partition):
      return train_step(trainer, s, b)

  train = jax.jit(
      step,
      in_shardings=(shardings, batch_sharding), out_shardings=(shardings, None),
      donate_argnums=0)
  return train, jit_eval(trainer, shardings, mesh)


def jit_eval(trainer: Trainer, shardings, mesh):
  """The jitted eval step alone (a state without optimizer state will do)."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def step(s, b):
    with sharding.partition(trainer.cfg.partition):
      return eval_step(trainer, s, b)

  return jax.jit(step,
                 in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=replicated)
