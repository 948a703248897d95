"""Ladder and Staircase: shared weights applied repeatedly, causal, counted as they run."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import ladder as ladder_configs
from configs import staircase as staircase_configs
from tests.families import jitted_logits, xla_flops
from zoo import accounting, evaluation
from zoo import config as config_lib
from zoo.config import ConfigError
from zoo.families.recurrent import LadderConfig
from zoo.families.recurrent import StaircaseConfig
from zoo.families import recurrent
from zoo.models import Decoder
from zoo.models.parts import Context
from zoo.testing import tiny_config, tiny_model


def _ladder(k, **kw):
  return tiny_model(stack="ladder", ladder=LadderConfig(k), **kw)


def _staircase(f, s, memory, span=0, **kw):
  return tiny_model(stack="staircase", staircase=StaircaseConfig(f, s, memory, span), **kw)


def _tokens(length=16, seed=0, batch=2):
  return np.random.default_rng(seed).integers(0, 64, (batch, length))


# ----------------------------------------------------------------------------------------
# Ladder


def test_ladder_applies_the_plain_stack_k_times_with_shared_weights():
  plain = Decoder(tiny_model(), rngs=nnx.Rngs(0))
  tokens = jnp.asarray(_tokens())
  # Built from the same seed in the same order, the Ladder holds the plain model's weights.
  np.testing.assert_array_equal(jitted_logits(Decoder(_ladder(1), rngs=nnx.Rngs(0)))(tokens),
                                jitted_logits(plain)(tokens))

  @jax.jit
  def twice(tokens):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    ctx = Context(positions, jnp.ones_like(tokens))
    x = plain.embed(tokens, jnp.float32)
    for _ in range(2):
      x, _ = plain.stack(x, ctx)
    return plain.embed.attend(plain.final_norm(x))

  ladder2 = jitted_logits(Decoder(_ladder(2), rngs=nnx.Rngs(0)))
  np.testing.assert_allclose(ladder2(tokens), twice(tokens), rtol=1e-5, atol=1e-6)


def test_ladder_has_the_parameters_of_its_stack_and_k_times_its_flops():
  plain, ladder3 = tiny_model(), _ladder(3)
  assert accounting.count_params(ladder3) == accounting.count_params(plain)
  unembed = 2 * plain.d_model * plain.vocab_size
  for count in (accounting.forward_flops_per_token, accounting.train_flops_per_token):
    head = unembed * (3 if count is accounting.train_flops_per_token else 1)
    assert count(ladder3, 16) - head == pytest.approx(3 * (count(plain, 16) - head))


# ----------------------------------------------------------------------------------------
# Staircase


def _assert_causal(logits, length=16):
  rng = np.random.default_rng(1)
  tokens = _tokens(length)
  base = logits(tokens)
  for t in (0, 5, 10):
    changed = tokens.copy()
    changed[:, t + 1:] = rng.integers(0, 64, changed[:, t + 1:].shape)
    out = logits(changed)
    np.testing.assert_array_equal(out[:, : t + 1], base[:, : t + 1])
    assert not np.allclose(out[:, t + 1:], base[:, t + 1:])


def _input_gradient_rows(cfg, t, length=16):
  """|d logits[t] / d embedding row of each position|, distinct tokens, untied embeddings."""
  model = Decoder(dataclasses.replace(cfg, tie_embeddings=False), rngs=nnx.Rngs(0))
  tokens = jnp.arange(length)[None]
  grads = nnx.grad(lambda m: m(tokens)[0][0, t].sum())(model)
  return np.abs(np.asarray(grads["embed"]["table_VD"][...])).sum(-1)[:length]


def test_staircase_is_causal_through_gradients_and_recurrence_reaches_back():
  rows = _input_gradient_rows(_staircase(4, 8, 0), t=9)
  assert np.all(rows[10:] == 0)
  # No cache, yet every earlier token reaches position 9 through the recurrent passes.
  assert np.all(rows[:10] > 0)


def test_one_pass_with_full_memory_is_the_plain_transformer():
  """S = F and a cache covering the sequence: chunked attention over cached keys is exact."""
  tokens = _tokens()
  plain = jitted_logits(Decoder(tiny_model(), rngs=nnx.Rngs(0)))(tokens)
  chunked = jitted_logits(Decoder(_staircase(4, 4, 16), rngs=nnx.Rngs(0)))(tokens)
  np.testing.assert_allclose(chunked, plain, rtol=1e-5, atol=1e-5)


def test_memory_holds_the_last_chunks_only():
  # One layer, one pass per chunk, memory of one chunk: position 9 (chunk 2) sees chunks 1, 2.
  rows = _input_gradient_rows(_staircase(4, 4, 4, num_layers=1), t=9)
  assert np.all(rows[:4] == 0) and np.all(rows[4:10] > 0) and np.all(rows[10:] == 0)


def test_attention_span_limits_how_far_back():
  rows = _input_gradient_rows(_staircase(4, 4, 16, span=3, num_layers=1), t=9)
  assert np.all(rows[:7] == 0) and np.all(rows[7:10] > 0) and np.all(rows[10:] == 0)


def test_next_token_logits_are_the_training_forward_on_the_prefix():
  model = Decoder(_staircase(4, 8, 8), rngs=nnx.Rngs(0))
  tokens = _tokens(13)  # not a multiple of F: the last chunk is padded
  full = jitted_logits(model)(tokens)
  step = jax.jit(lambda t: recurrent.next_token_logits(model, t))
  for p in (3, 8):
    np.testing.assert_allclose(step(jnp.asarray(tokens[:, :p])), full[:, p - 1],
                               rtol=1e-5, atol=1e-5)


def test_packed_documents_do_not_see_each_other():
  logits = jitted_logits(Decoder(_staircase(4, 8, 8), rngs=nnx.Rngs(0)))
  tokens = _tokens(12, batch=1)
  segments = np.asarray([[1] * 5 + [2] * 7])
  positions = np.asarray([list(range(5)) + list(range(7))])
  base = logits(tokens, positions, segments)
  changed = tokens.copy()
  changed[:, :5] = (changed[:, :5] + 1) % 64
  np.testing.assert_array_equal(logits(changed, positions, segments)[:, 5:], base[:, 5:])


def test_staircase_flops_count_every_pass_and_match_xla(monkeypatch):
  monkeypatch.setattr(recurrent, "SCAN_UNROLL", True)  # XLA counts a loop body once
  cfg = _staircase(32, 64, 64, vocab_size=1024, d_model=256, num_heads=4, d_ff=0)
  batch, seq = 2, 128
  analytic = accounting.forward_flops_per_token(cfg, seq) * batch * seq
  xla = xla_flops(cfg, batch, seq)
  print(f"staircase: analytic/xla {analytic / xla:.3f}")
  assert abs(analytic / xla - 1) < 0.10
  # 4 chunks + 1 step to drain the staircase, 64 queries each, 128 keys: ~2.5x the layers.
  dense = accounting.forward_flops_per_token(dataclasses.replace(cfg, stack="plain"), 128)
  unembed = 2 * 256 * 1024
  assert (analytic / (batch * seq) - unembed) / (dense - unembed) == pytest.approx(2.5)


@pytest.mark.parametrize("change, field", [
    (dict(staircase=StaircaseConfig(4, 6, 8, 0)), "model.staircase.staircase_size"),
    (dict(staircase=StaircaseConfig(4, 8, 6, 0)), "model.staircase.memory"),
    (dict(staircase=StaircaseConfig(0, 8, 8, 0)), "model.staircase.forward_size"),
    (dict(pattern=("dense", "frozen_mlp")), "model.pattern"),
    (dict(scan_layers=True), "model.scan_layers"),
])
def test_bad_staircase_options_name_the_field(change, field):
  cfg = tiny_config(model=dataclasses.replace(_staircase(4, 8, 8), **change))
  with pytest.raises(ConfigError) as err:
    config_lib.validate(cfg, 1)
  assert err.value.field == field


def test_bad_ladder_size_names_the_field():
  with pytest.raises(ConfigError) as err:
    config_lib.validate(tiny_config(model=_ladder(0)), 1)
  assert err.value.field == "model.ladder.ladder_size"


@pytest.mark.parametrize("module", [ladder_configs, staircase_configs])
def test_presets_parse_validate_and_build(module):
  for size in module.SIZES:
    cfg = config_lib.from_configdict(module.get_config(size))
    config_lib.validate(cfg, num_devices=1)
    nnx.eval_shape(lambda cfg=cfg: Decoder(cfg.model, rngs=nnx.Rngs(0)))


def test_staircase_algorithmic_preset_matches_the_paper():
  cfg = config_lib.from_configdict(staircase_configs.get_config("algorithmic"))
  m = cfg.model
  assert (m.num_layers, m.d_model, m.hidden_size, m.num_heads) == (4, 256, 1024, 4)
  assert m.staircase == StaircaseConfig(forward_size=64, staircase_size=128, memory=128,
                                        attention_span=128)
  assert cfg.optimizer.lr == 1e-4


class _IdTokenizer:
  """Token ids as text: "3 17 5" <-> [3, 17, 5]; bos 1, eos 2."""

  bos_id, eos_id = 1, 2

  def encode(self, text):
    return [int(t) for t in text.split()]

  def decode(self, ids):
    return " ".join(map(str, ids))


def test_sampling_recomputes_for_stacks_without_a_cache():
  """eval.py --sample on a Ladder or Staircase run: greedy tokens are the argmax of the
  training forward on the prefix, step after step."""
  for cfg in (_staircase(4, 8, 8), _ladder(2)):
    model = Decoder(cfg, rngs=nnx.Rngs(0))
    got = evaluation.sample(model, _IdTokenizer(), "5 9 12", max_new_tokens=6)
    ids = [1, 5, 9, 12]
    logits = jitted_logits(model)
    want = []
    for _ in range(6):
      token = int(np.argmax(logits(np.asarray([ids]))[0, -1]))
      if token == 2:
        break
      ids.append(token)
      want.append(token)
    assert got == " ".join(map(str, want)), (got, want)
