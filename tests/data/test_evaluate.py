"""zoo.evaluation.evaluate: the standard error, and one result for any device layout."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from zoo import evaluation, sharding
from zoo.config import MeshConfig
from zoo.data import make_eval_set

SEQ = 64


def test_standard_error_matches_the_spread_of_the_loss_over_samples():
  rng = np.random.default_rng(0)
  losses, errors = [], []
  for _ in range(400):  # 400 validation samples of 50 sequences with varying lengths
    counts = rng.integers(10, 64, 50).astype(float)
    level = rng.gamma(4.0, 1.0, 50)  # some sequences are much harder than others
    sums = level * counts + rng.normal(0, 1, 50) * np.sqrt(counts)
    result = evaluation.statistics(np.r_[sums, 0.0], np.r_[counts, 0.0])  # a padding row
    assert result["sequences"] == 50 and result["tokens"] == counts.sum()
    losses.append(result["loss"])
    errors.append(result["loss_stderr"])
  assert math.isclose(np.mean(errors), np.std(losses), rel_tol=0.1)
  assert math.isclose(evaluation.statistics(np.ones(3), np.ones(3))["loss_stderr"], 0.0)
  assert math.isnan(evaluation.statistics(np.ones(1), np.ones(1))["loss_stderr"])


def _evaluate(tokenizer, eval_set, devices, batch):
  """evaluate with a unigram model standing in for a decoder (it has eval_step's contract:
  per-sequence sums and counts, replicated), on a mesh of `devices` data shards."""
  mesh = sharding.make_mesh(MeshConfig(data=devices), jax.devices()[:devices])
  logp_V = jax.nn.log_softmax(jnp.sin(jnp.arange(tokenizer.vocab_size, dtype=jnp.float32)))

  @functools.partial(jax.jit, in_shardings=(None, sharding.batch_sharding(mesh)),
                     out_shardings=NamedSharding(mesh, PartitionSpec()))
  def eval_fn(state, batch):
    weights = (batch["segment_ids"] > 0).astype(jnp.float32)
    return jnp.sum(-state[batch["targets"]] * weights, axis=1), jnp.sum(weights, axis=1)

  return evaluation.evaluate(eval_fn, logp_V, eval_set, mesh, tokenizer,
                             global_batch_size=batch)


def test_one_result_for_one_and_eight_devices(local_cfg, tokenizer):
  cfg = dataclasses.replace(local_cfg, eval_split="train")
  eval_set = make_eval_set(cfg, tokenizer, seq_len=SEQ, eval_tokens=20 * SEQ)
  one = _evaluate(tokenizer, eval_set, 1, 4)
  eight = _evaluate(tokenizer, eval_set, 8, 8)
  assert one["sequences"] == eight["sequences"] == 20
  assert one["tokens"] == eight["tokens"] == int((eval_set.rows()["segment_ids"] > 0).sum())
  for key in ("loss", "loss_stderr", "perplexity", "bits_per_byte"):
    assert math.isclose(one[key], eight[key], rel_tol=1e-6), key
  assert 0 < one["loss_stderr"] < 0.2 * one["loss"] and one["bits_per_byte"] > 0
