"""Mixture-of-Depths: the routed block against a masked dense reference, gradients to the
router, causality of the sampling path (and non-causality of top-k), training, stochastic
routing, accounting, configs and the routing map."""

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests import families
from tests.families import call, decode_logits
from zoo import accounting, config, plotting, sharding
from zoo.families import mixture_of_depths
from zoo.families.mixture_of_depths import ModConfig
from zoo.models import Decoder, flops
from zoo.families.mixture_of_depths import MoDBlock, capacity_tokens, mod_block_flops
from zoo.models.parts import Context
from zoo.testing import random_batch, tiny_config, tiny_model
from zoo.training import metrics, step as step_lib


def _mod_model(capacity=0.25, **overrides):
  return tiny_model(pattern=("dense", "mod"), mod=ModConfig(capacity=capacity), **overrides)


def _packed_context(b, l):
  """Two documents per row and two padding tokens at the end, as the data pipeline packs."""
  batch = random_batch(tiny_config(batch_size=b, seq_len=l))
  return Context(jnp.asarray(batch["positions"]), jnp.asarray(batch["segment_ids"]))


def test_capacity_tokens():
  assert capacity_tokens(0.125, 256) == 32
  assert capacity_tokens(0.125, 10) == 2  # ceil
  assert capacity_tokens(0.1, 30) == 3  # not 4 from 0.1 * 30 = 3.0000000000000004
  assert capacity_tokens(0.01, 8) == 1


def test_wrapper_matches_a_masked_dense_reference():
  """Kept tokens: x + r * (block(x) - x) where the dense block sees only the kept tokens
  (non-kept masked out as padding); every other token passes through bit for bit."""
  cfg = _mod_model(capacity=0.3)
  block = MoDBlock(cfg, rngs=nnx.Rngs(0))
  b, l = 3, 16
  x = jax.random.normal(jax.random.key(1), (b, l, cfg.d_model))
  ctx = _packed_context(b, l)
  out, aux = call(block, x, ctx)

  r = np.asarray(x @ block.router_D[...])
  segments = np.asarray(ctx.segment_ids_BL)
  k = capacity_tokens(0.3, l)
  keep = np.zeros((b, l), bool)
  for i in range(b):
    ranked = np.where(segments[i] > 0, r[i], -np.inf)
    keep[i, np.argsort(-ranked, kind="stable")[:k]] = True
  masked = Context(ctx.positions_BL, jnp.asarray(np.where(keep, segments, 0)))
  dense, _ = call(block.block, x, masked)
  expected = np.asarray(x) + r[..., None] * (np.asarray(dense) - np.asarray(x))
  np.testing.assert_allclose(np.asarray(out)[keep], expected[keep], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out)[~keep], np.asarray(x)[~keep])
  assert not keep[segments == 0].any()  # padding never preferred over real tokens
  real = segments > 0
  np.testing.assert_allclose(float(aux["routed_fraction"]), keep[real].mean(), rtol=1e-6)


def test_gradients_reach_the_router_but_not_the_predictor_from_the_lm():
  """The router weight multiplies the block output; the predictor reads stop_gradient(x)."""
  model = Decoder(_mod_model(), rngs=nnx.Rngs(0))
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 16)))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def losses(p):
    logits, aux = nnx.merge(graphdef, p, rest)(tokens)
    return jnp.mean(logits ** 2), aux["layer_1/aux_loss/predictor_bce"]

  lm_grads, aux_grads = jax.jit(jax.jacrev(losses))(params)  # LM alone; predictor loss
  block = lm_grads["stack"]["units"][0]["blocks"][1]
  assert np.abs(np.asarray(block["router_D"][...])).sum() > 0
  assert np.abs(np.asarray(block["predictor"]["in_DH"][...])).sum() == 0
  predictor = aux_grads["stack"]["units"][0]["blocks"][1]["predictor"]
  assert np.abs(np.asarray(predictor["in_DH"][...])).sum() > 0


@pytest.mark.parametrize("decode", ["predictor", "router"])
def test_sampling_path_is_causal(decode):
  """With a KV cache each token decides from itself (predictor, or router > threshold), so
  outputs at t do not change when tokens after t change; one-token steps equal a prefill."""
  cfg = tiny_model(pattern=("dense", "mod"), mod=ModConfig(capacity=0.25, decode=decode,
                                                           decode_threshold=0.0))
  model = Decoder(cfg, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(1)
  tokens = jnp.asarray(rng.integers(0, 64, (2, 12)))
  base = decode_logits(model, tokens)
  model.init_cache(2, 12)
  fraction = float(call(model, tokens)[1]["layer_1/routed_fraction"])
  assert 0.0 < fraction < 1.0, fraction  # some tokens in, some around: a real test
  for t in (0, 5, 10):
    changed = np.asarray(tokens).copy()
    changed[:, t + 1:] = rng.integers(0, 64, changed[:, t + 1:].shape)
    out = decode_logits(model, jnp.asarray(changed))
    np.testing.assert_array_equal(out[:, :t + 1], base[:, :t + 1])
  np.testing.assert_allclose(decode_logits(model, tokens, incremental=True), base,
                             rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_learns_and_reports_routing_metrics():
  cfg = tiny_config(model=_mod_model(capacity=0.5), steps=30)
  batch = random_batch(cfg)
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  trainer, state, shardings = step_lib.create(cfg, mesh)
  step, _ = step_lib.jit_steps(trainer, shardings, mesh)
  losses = []
  with sharding.activate(mesh):
    for _ in range(30):
      state, metrics = step(state, sharding.global_batch(batch, mesh))
      losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.8 * losses[0], losses
  for name in ("aux_loss/router_bce", "aux_loss/predictor_bce", "routed_fraction",
               "router_mean", "router_std", "predictor_accuracy"):
    assert np.isfinite(float(metrics[f"layer_1/{name}"])), name
  np.testing.assert_allclose(float(metrics["layer_1/routed_fraction"]), 0.5, atol=0.1)


def test_stochastic_routing_picks_random_tokens():
  cfg = _mod_model(capacity=0.25)
  learned = MoDBlock(cfg, rngs=nnx.Rngs(0))
  noisy = MoDBlock(dataclasses.replace(cfg, mod=ModConfig(capacity=0.25,
                                                          routing="stochastic")),
                   rngs=nnx.Rngs(0))
  learned.record = noisy.record = True
  ctx = _packed_context(2, 16)
  x = jax.random.normal(jax.random.key(3), (2, 16, cfg.d_model))
  a, b = call(learned, x, ctx)[1]["routed_mask"], call(noisy, x, ctx)[1]["routed_mask"]
  c = call(noisy, x + 1.0, ctx)[1]["routed_mask"]
  assert float(b.sum()) == float(a.sum()) == 2 * capacity_tokens(0.25, 16)
  assert not np.array_equal(a, b) and not np.array_equal(b, c)  # new data, new choice


@pytest.mark.slow
def test_stochastic_routing_trains():
  model = _mod_model(capacity=0.25)
  model = dataclasses.replace(model, mod=ModConfig(capacity=0.25, routing="stochastic"))
  cfg = tiny_config(model=model, steps=2)
  _, losses, _ = families.train(cfg, [random_batch(cfg)] * 2)
  assert np.all(np.isfinite(losses))


def test_accounting_capacity_scaling():
  """Projections and MLP scale with c, attention scores with c^2; MoD < dense."""
  m = tiny_model(d_model=64, num_heads=4, d_ff=256)
  l = 64
  hk = m.num_heads * m.head_size
  scores = 4 * l * hk
  projections = flops.attention_flops(m, l) - scores
  extra = mod_block_flops(dataclasses.replace(m, mod=ModConfig(capacity=1.0)), l) - (
      projections + scores + flops.mlp_flops(m))  # router + predictor
  for c in (0.5, 0.25, 0.125):
    got = mod_block_flops(dataclasses.replace(m, mod=ModConfig(capacity=c)), l)
    np.testing.assert_allclose(got, c * (projections + flops.mlp_flops(m))
                               + c * c * scores + extra, rtol=1e-12)
  cfg = tiny_config(model=_mod_model(capacity=0.125), seq_len=64)
  ratio = accounting.against(cfg, ("dense",))
  assert 0.5 < ratio["forward_ratio"] < 1.0 and 0.5 < ratio["train_ratio"] < 1.0


def test_configs_build_at_full_size_and_validate():
  from configs import mod as mod_configs
  for size in mod_configs.SIZES:
    cfg = config.from_configdict(mod_configs.get_config(size))
    config.validate(cfg, 1)
    assert cfg.model.pattern == ("dense", "mod") and cfg.model.mod.capacity == 0.125
    nnx.eval_shape(lambda c=cfg: Decoder(c.model, rngs=nnx.Rngs(0)))
  bad = mod_configs.get_config("tiny")
  bad.model.mod.capacity = 0.0
  with pytest.raises(config.ConfigError, match="model.mod.capacity"):
    config.validate(config.from_configdict(bad), 1)


@pytest.mark.slow
def test_scanned_mod_stack_runs_and_decodes():
  model = Decoder(_mod_model(num_layers=4, scan_layers=True), rngs=nnx.Rngs(0))
  tokens = jnp.asarray(np.random.default_rng(5).integers(0, 64, (2, 8)))
  logits, aux = call(model, tokens)
  assert logits.shape == (2, 8, 64) and "layer_3/routed_fraction" in aux
  assert decode_logits(model, tokens).shape == (2, 8, 64)


class _FakeTokenizer:
  def decode(self, ids):
    return f"t{ids[0]}"


def test_routing_map_figure_shows_tokens_layers_and_a_legend(tmp_path):
  """eval.py --figures: matplotlib, token text on the x axis, one row per layer, a legend."""
  cfg = tiny_config(model=tiny_model(num_layers=4, pattern=("dense", "mod"),
                                     mod=ModConfig(capacity=0.5)), batch_size=2)
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  trainer, state, _ = step_lib.create(cfg, mesh)
  batch = random_batch(cfg)
  run = types.SimpleNamespace(cfg=cfg, mesh=mesh, step=7, workdir=str(tmp_path / "run"),
                              tokenizer=_FakeTokenizer(), model=lambda: trainer.model(state),
                              eval_batches=lambda n: [batch] * n)
  grid, tokens, _ = mixture_of_depths.routing_masks(run, 12)
  assert np.all(np.isnan(grid[[0, 2]])) and set(np.unique(grid[[1, 3]])) <= {0.0, 1.0}
  paths = mixture_of_depths.figures(run, str(tmp_path), num_tokens=12)
  assert paths == [str(tmp_path / "routing_map.png")]
  assert open(paths[0], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  metrics.add_images(str(tmp_path), 7, paths)  # eval.py --figures: TensorBoard gets it too
  assert any(p.name.endswith(".figures") for p in (tmp_path / "tensorboard").iterdir())
  fig = plotting.routing_map(grid, [f"t{t}" for t in tokens], np.ones(12, bool),
                             title="run step 7")
  ax = fig.axes[0]
  assert ax.get_ylabel() == "layer" and "token" in ax.get_xlabel()
  assert [t.get_text() for t in ax.get_xticklabels()] == [f"t{t}" for t in tokens]
  assert len(ax.get_legend().get_texts()) == 3 and ax.get_title() == "run step 7"
