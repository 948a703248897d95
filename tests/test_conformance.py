"""The conformance suite: every registered block and stack kind passes the same checks.

A family added tomorrow is checked here the moment it registers (zoo/registry.py), with no
new test code: its kinds' `example` configs are built, run and compared. Checks: the sampling
path is causal (and training-time look-ahead is shown where a kind declares it); one-token
decoding with a cache equals the prefill (and the training forward, without look-ahead), or
cached decoding is refused; the loss falls on a tiny run; analytic forward and training
FLOPs match XLA's cost analysis within the kind's `flops_rtol`; parameter counts by kind
equal the model's variables; a checkpoint round-trip is bitwise; and a mesh of 8 fake CPU
devices (fsdp, tensor and expert axes) gives one device's loss and gradients. The rows go
to the table printed at the end of the run (tests/conftest.py).
"""

import contextlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.families import (decode_logits, jitted_logits, learns_on_a_repeated_batch,
                            loss_and_grads_on, xla_flops)
from zoo import accounting, checkpoint, registry, sharding
from zoo.config import MeshConfig
from zoo.models import Decoder
from zoo.models.parts import Frozen, StructuredParam
from zoo.testing import example_model, kinds, tiny_config
from zoo.training import step as step_lib

KINDS = kinds()
IDS = [k.name for k in KINDS]
# Big enough that the matmuls dominate, as the analytic count assumes; lowered, never run.
FLOPS_BASE = dict(d_model=128, num_heads=4, d_ff=512, vocab_size=512, num_layers=2)
FLOPS_BATCH, FLOPS_SEQ = 2, 64


def _caches(model_cfg) -> bool:
  """One-token decoding with a KV cache is supported by the stack and every block used."""
  blocks = all(registry.block(k).kv_cache for k in set(model_cfg.pattern))
  return registry.stack(model_cfg.stack).kv_cache and blocks


def _tokens(length: int, seed: int = 0, batch: int = 2) -> np.ndarray:
  return np.random.default_rng(seed).integers(1, 64, (batch, length)).astype(np.int32)


def _sampling_logits(model, tokens):
  """The logits sampling uses: a cached prefill, or the forward where there is no cache."""
  if _caches(model.cfg):
    return decode_logits(model, tokens)
  return jitted_logits(model)(tokens)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_sampling_path_is_causal(kind, record_property):
  model = Decoder(example_model(kind, decoding=True), rngs=nnx.Rngs(0))
  tokens = _tokens(12)
  base = _sampling_logits(model, tokens)
  for t in (2, 6, 9):
    changed = tokens.copy()
    changed[:, t + 1:] = _tokens(12, seed=t)[:, t + 1:]
    np.testing.assert_allclose(_sampling_logits(model, changed)[:, :t + 1], base[:, :t + 1],
                               rtol=1e-6, atol=1e-6)
  record_property("conformance", (kind.name, "sampling causal", "yes"))


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_training_forward_lookahead_is_declared(kind, record_property):
  """Causal in training too, unless the kind declares look-ahead; then the test shows it."""
  forward = jitted_logits(Decoder(example_model(kind), rngs=nnx.Rngs(0)))
  tokens = _tokens(16)
  base = forward(tokens)
  differs = False
  for t in (3, 7, 11):
    changed = tokens.copy()
    changed[:, t + 1:] = _tokens(16, seed=t + 1)[:, t + 1:]
    out = forward(changed)[:, :t + 1]
    if kind.lookahead:
      differs |= not np.allclose(out, base[:, :t + 1], rtol=1e-6, atol=1e-6)
    else:
      np.testing.assert_allclose(out, base[:, :t + 1], rtol=1e-6, atol=1e-6)
  if kind.lookahead:
    assert differs, f"{kind.name} declares look-ahead but training outputs never looked ahead"
  record_property("conformance", (kind.name, "training", "look-ahead (declared)"
                                  if kind.lookahead else "causal"))


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_decoding_equals_the_forward_or_is_refused(kind, record_property):
  model_cfg = example_model(kind, decoding=True)
  model = Decoder(model_cfg, rngs=nnx.Rngs(0))
  tokens = _tokens(10)
  if not _caches(model_cfg):
    model.init_cache(2, 10)
    with pytest.raises(ValueError):
      model(jnp.asarray(tokens))
    record_property("conformance", (kind.name, "decode", "not supported (refused)"))
    return
  forward = jitted_logits(Decoder(model_cfg, rngs=nnx.Rngs(0)))(tokens)  # no cache
  prefill = decode_logits(model, tokens)
  steps = decode_logits(model, tokens, incremental=True)
  np.testing.assert_allclose(steps, prefill, rtol=1e-5, atol=1e-5)
  if not kind.lookahead:
    np.testing.assert_allclose(prefill, forward, rtol=1e-5, atol=1e-5)
  record_property("conformance", (kind.name, "decode", "= prefill" if kind.lookahead
                                  else "= forward"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_loss_falls_on_a_tiny_run(kind, record_property):
  losses = learns_on_a_repeated_batch(example_model(kind))
  record_property("conformance", (kind.name, "learns", f"{losses[0]:.2f} -> {losses[-1]:.2f}"))


@pytest.mark.parametrize("train", [False, True], ids=["forward", "train"])
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_analytic_flops_match_xla(kind, train, record_property):
  model_cfg = example_model(kind, **FLOPS_BASE)
  per_token = (accounting.train_flops_per_token if train
               else accounting.forward_flops_per_token)(model_cfg, FLOPS_SEQ)
  context = getattr(kind, "cost_analysis_context", None) or contextlib.nullcontext
  with context():
    xla = xla_flops(model_cfg, FLOPS_BATCH, FLOPS_SEQ, train=train)
  ratio = per_token * FLOPS_BATCH * FLOPS_SEQ / xla
  print(f"{kind.name} {'train' if train else 'forward'}: analytic / XLA = {ratio:.4f}")
  record_property("conformance", (kind.name, "flops " + ("train" if train else "forward"),
                                  f"{ratio:.3f}"))
  assert abs(ratio - 1) <= kind.flops_rtol, (kind.name, ratio, kind.flops_rtol)


def _size(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_parameter_counts_equal_the_variables(kind):
  model_cfg = example_model(kind, tie_embeddings=False)
  model = nnx.eval_shape(lambda: Decoder(model_cfg, rngs=nnx.Rngs(0)))
  counts = accounting.count_params(model_cfg)
  trainable, frozen = _size(nnx.state(model, nnx.Param)), _size(nnx.state(model, Frozen))
  embedding = _size(model.embed) + _size(model.unembed)
  assert counts.embedding == embedding
  assert counts.trainable_non_embedding == trainable - embedding
  assert counts.frozen == frozen
  assert counts.total == trainable + frozen
  assert counts.structured_params == _size(nnx.state(model, StructuredParam))
  if any(registry.block(k).inactive_params for k in model_cfg.layer_kinds):
    assert 0 < counts.active_per_token < counts.total
  else:
    assert counts.active_per_token == counts.total


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_checkpoint_round_trip_is_bitwise(kind, tmp_path):
  cfg = tiny_config(model=example_model(kind))
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  _, state, _ = step_lib.create(cfg, mesh)
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=1, async_save=False)
  ckpt.save(1, state, None, checkpoint.metadata(cfg, "none"))
  restored = ckpt.restore(1, state)
  ckpt.close()
  chex.assert_trees_all_equal(jax.device_get(restored), jax.device_get(state))


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_eight_devices_give_the_loss_and_gradients_of_one(kind, record_property):
  assert jax.device_count() == 8
  model_cfg = example_model(kind, tie_embeddings=False)
  _, *one = loss_and_grads_on(tiny_config(model=model_cfg), jax.devices()[:1])
  mesh = MeshConfig(data=1, fsdp=2, tensor=2, expert=2)
  _, *eight = loss_and_grads_on(tiny_config(model=model_cfg, mesh=mesh), jax.devices())
  np.testing.assert_allclose(eight[0], one[0], rtol=1e-6)
  chex.assert_trees_all_close(eight[1], one[1], rtol=1e-5, atol=1e-7)
  record_property("conformance", (kind.name, "8 devices", "= 1 device"))
