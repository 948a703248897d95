"""The decoder: causality, packed-segment isolation, scan and remat equivalence."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.models import Decoder
from zoo.testing import tiny_model


def _logits(model, tokens, positions=None, segments=None):
  return np.asarray(model(jnp.asarray(tokens), positions, segments)[0])


@pytest.mark.parametrize("tie", [True, False])
def test_causal_outputs_at_t_ignore_tokens_after_t(tie):
  model = Decoder(tiny_model(tie_embeddings=tie), rngs=nnx.Rngs(0))
  rng = np.random.default_rng(1)
  tokens = rng.integers(0, 64, (2, 12))
  base = _logits(model, tokens)
  for t in (0, 5, 10):
    changed = tokens.copy()
    changed[:, t + 1:] = rng.integers(0, 64, changed[:, t + 1:].shape)
    out = _logits(model, changed)
    np.testing.assert_array_equal(out[:, : t + 1], base[:, : t + 1])
    assert not np.allclose(out[:, t + 1:], base[:, t + 1:])


def test_causal_through_gradients():
  """d logits[t] / d embedding rows of tokens after t is zero (nanodo's check).

  Untied embeddings, so the table is only the input embedding.
  """
  model = Decoder(tiny_model(tie_embeddings=False), rngs=nnx.Rngs(0))
  tokens = jnp.arange(10)[None]  # distinct tokens: one table row per position
  t = 4
  grads = nnx.grad(lambda m: m(tokens)[0][0, t].sum())(model)
  rows = np.abs(np.asarray(grads["embed"]["table_VD"][...])).sum(-1)
  assert np.all(rows[t + 1:10] == 0)
  assert np.all(rows[: t + 1] > 0)


def test_packed_segments_do_not_see_each_other():
  model = Decoder(tiny_model(), rngs=nnx.Rngs(0))
  rng = np.random.default_rng(2)
  tokens = rng.integers(0, 64, (1, 12))
  segments = jnp.asarray([[1] * 5 + [2] * 7])
  positions = jnp.asarray([list(range(5)) + list(range(7))])
  packed = _logits(model, tokens, positions, segments)
  alone = _logits(model, tokens[:, 5:])
  np.testing.assert_allclose(packed[:, 5:], alone, rtol=1e-5, atol=1e-5)
  changed = tokens.copy()
  changed[:, :5] = rng.integers(0, 64, (1, 5))
  np.testing.assert_array_equal(_logits(model, changed, positions, segments)[:, 5:], packed[:, 5:])


def _stacked_copy(unrolled: Decoder, cfg):
  """A scanned model holding the same weights as an unrolled one."""
  scanned = Decoder(cfg, rngs=nnx.Rngs(1))
  units = [nnx.state(u) for u in unrolled.stack.units]
  nnx.update(scanned.stack.units, jax.tree.map(lambda *xs: jnp.stack(xs), *units))
  for name in ("embed", "final_norm"):
    nnx.update(getattr(scanned, name), nnx.state(getattr(unrolled, name)))
  return scanned


@pytest.mark.parametrize("remat", ["none", "full", "dots"])
def test_scan_and_remat_match_unrolled(remat):
  cfg = tiny_model(num_layers=4, pattern=("dense", "dense"))
  unrolled = Decoder(cfg, rngs=nnx.Rngs(0))
  scanned = _stacked_copy(unrolled, dataclasses.replace(cfg, scan_layers=True, remat=remat))
  tokens = jnp.asarray(np.random.default_rng(3).integers(0, 64, (2, 8)))

  def loss(model):
    return jnp.mean(model(tokens)[0] ** 2)

  np.testing.assert_allclose(loss(unrolled), loss(scanned), rtol=1e-6)
  g_unrolled = nnx.grad(loss)(unrolled)
  g_scanned = nnx.grad(loss)(scanned)
  np.testing.assert_allclose(
      np.asarray(g_scanned["stack"]["units"]["blocks"][1]["mlp"]["in_DF"][...][1]),
      np.asarray(g_unrolled["stack"]["units"][1]["blocks"][1]["mlp"]["in_DF"][...]),
      rtol=1e-5, atol=1e-7)


def test_depth_not_a_multiple_of_the_pattern():
  cfg = tiny_model(num_layers=3, pattern=("dense", "dense"))
  model = Decoder(cfg, rngs=nnx.Rngs(0))
  assert len(model.stack.units) == 1 and len(model.stack.tail_blocks) == 1
  assert model(jnp.zeros((1, 4), jnp.int32))[0].shape == (1, 4, 64)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = Decoder(tiny_model(compute_dtype="bfloat16"), rngs=nnx.Rngs(0))
  logits, _ = model(jnp.zeros((1, 4), jnp.int32))
  assert logits.dtype == jnp.float32
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("scan", [False, True])
def test_incremental_decoding_matches_the_full_forward(scan):
  """Prefill 4 tokens, then one token per call with the KV cache: the same logits."""
  model = Decoder(tiny_model(num_layers=2, scan_layers=scan), rngs=nnx.Rngs(0))
  tokens = jnp.asarray(np.random.default_rng(4).integers(0, 64, (2, 10)))
  full = np.asarray(model(tokens)[0])
  model.init_cache(batch=2, max_len=16)
  steps = [model(tokens[:, :4], jnp.broadcast_to(jnp.arange(4), (2, 4)))[0]]
  for t in range(4, 10):
    steps.append(model(tokens[:, t:t + 1], jnp.full((2, 1), t))[0])
  np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-6)
