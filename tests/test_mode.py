"""MoDE (Raposo et al. 2024, section 4.3): staged and integrated, each against a plain
reference; causality of their sampling paths; training; accounting; configs."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import mode as mode_configs
from zoo.models.routers import capacity_per_expert
from tests import families
from tests.families import call, decode_logits
from zoo import accounting, config, registry
from zoo.config import ConfigError
from zoo.families.mixture_of_depths import ModConfig
from zoo.families.mixture_of_experts import MoeConfig
from zoo.models import Decoder, aux_loss, flops
from zoo.families.mixture_of_depths import capacity_tokens
from zoo.families.depths_and_experts import StagedMoDEBlock
from zoo.families.mixture_of_experts import MoeMLP
from zoo.models.parts import Context
from zoo.testing import random_batch, tiny_config, tiny_model

SWITCH = MoeConfig(router="switch", num_experts=4, capacity_factor=1.0)


def _staged(capacity=0.25, moe=SWITCH, **overrides):
  return tiny_model(pattern=("dense", "mode_staged"), mod=ModConfig(capacity=capacity), moe=moe,
                    **overrides)


def _integrated(init_std=0.02, **moe):
  """Switch over 4 experts and 4 no-op experts unless `moe` says otherwise."""
  return tiny_model(pattern=("dense", "moe"), init_std=init_std,
                    moe=MoeConfig(**{"router": "switch", "num_experts": 4, "noop_experts": 4,
                                     **moe}))


def _context(tokens_BL):
  b, l = tokens_BL.shape
  return Context(jnp.broadcast_to(jnp.arange(l), (b, l)), jnp.ones((b, l), jnp.int32),
                 tokens_BL=tokens_BL)


# ---- staged ------------------------------------------------------------------------------


def test_staged_is_the_moe_block_on_the_kept_tokens():
  """Kept tokens (the top k of r per row): x + r (MoeBlock(kept tokens) - x); the others pass
  through bit for bit; the MoE's losses and statistics come out beside the MoD ones."""
  cfg = _staged(capacity=0.5)
  block = StagedMoDEBlock(cfg, rngs=nnx.Rngs(0))
  b, l, k = 2, 16, capacity_tokens(0.5, 16)
  x = jax.random.normal(jax.random.key(1), (b, l, cfg.d_model))
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, (b, l)), jnp.int32)
  out, aux = call(block, x, _context(tokens))

  r = np.asarray(x @ block.router_D[...])
  idx = np.sort(np.argsort(-r, axis=1, kind="stable")[:, :k], axis=1)
  kept_x = np.take_along_axis(np.asarray(x), idx[..., None], axis=1)
  kept_ctx = Context(jnp.asarray(idx), jnp.ones((b, k), jnp.int32),
                     tokens_BL=jnp.asarray(np.take_along_axis(np.asarray(tokens), idx, 1)))
  inner, inner_aux = call(block.block, jnp.asarray(kept_x), kept_ctx)
  want = np.asarray(x).copy()
  rows = np.arange(b)[:, None]
  want[rows, idx] = kept_x + np.take_along_axis(r, idx, 1)[..., None] * (np.asarray(inner)
                                                                           - kept_x)
  np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-6)
  kept = np.zeros((b, l), bool)
  kept[rows, idx] = True
  np.testing.assert_array_equal(np.asarray(out)[~kept], np.asarray(x)[~kept])
  for name, value in inner_aux.items():
    np.testing.assert_allclose(np.asarray(aux[name]), np.asarray(value), rtol=1e-6)
  assert {"aux_loss/load_balance", "aux_loss/router_bce", "routed_fraction",
          "moe/dropped"} <= set(aux)


def test_staged_sampling_path_is_causal_and_training_routing_is_not():
  """Sampling (KV cache): each token decides from itself (the MoD predictor), and the MoE
  inside routes top-1 first come, first served, so logits at t ignore later tokens. Training
  routing (top-k over the row) looks ahead by design: a later token changes an earlier one."""
  model = Decoder(_staged(capacity=0.25), rngs=nnx.Rngs(0))
  rng = np.random.default_rng(1)
  tokens = jnp.asarray(rng.integers(1, 64, (2, 12)))
  base = decode_logits(model, tokens)
  for t in (0, 5, 10):
    changed = np.asarray(tokens).copy()
    changed[:, t + 1:] = rng.integers(1, 64, changed[:, t + 1:].shape)
    np.testing.assert_array_equal(decode_logits(model, jnp.asarray(changed))[:, :t + 1],
                                  base[:, :t + 1])
  # One token per call equals a prefill when the experts drop nothing (with a capacity, the
  # prefill's L / E slots per expert can overflow where a one-token call's cannot).
  dropless = Decoder(_staged(capacity=0.25, moe=dataclasses.replace(SWITCH, capacity_factor=0.0)),
                     rngs=nnx.Rngs(0))
  np.testing.assert_allclose(decode_logits(dropless, tokens, incremental=True),
                             decode_logits(dropless, tokens), rtol=1e-5, atol=1e-6)

  train_model = Decoder(_staged(capacity=0.25), rngs=nnx.Rngs(0))
  forward = families.jitted_logits(train_model)
  tokens = rng.integers(1, 64, (4, 16))
  changed = tokens.copy()
  changed[:, 8:] = rng.integers(1, 64, (4, 8))
  assert not np.allclose(forward(tokens)[:, :8], forward(changed)[:, :8])


def test_staged_flops_are_the_moe_block_on_k_tokens():
  cfg = _staged(capacity=0.25)
  seq = 64
  k = capacity_tokens(0.25, seq)
  router_and_predictor = (registry.block("mod").forward_flops(cfg, seq)
                          - k / seq * registry.block("dense").forward_flops(cfg, k))
  np.testing.assert_allclose(registry.block("mode_staged").forward_flops(cfg, seq),
                             k / seq * registry.block("moe").forward_flops(cfg, k)
                             + router_and_predictor, rtol=1e-12)
  assert (registry.block("mode_staged").train(cfg, seq)
          < registry.block("moe").train(cfg, seq))


# ---- integrated --------------------------------------------------------------------------


def _integrated_reference(moe: MoeMLP, h_BLD, capacity):
  """Top-1 over E + N by a loop: a no-op choice, or a full expert, adds nothing; otherwise
  p_e x Expert_e(h), slots first come, first served along the sequence."""
  e = moe.num_experts
  h = np.asarray(h_BLD, np.float64)
  w = np.asarray(moe.router.w_DE[...], np.float64)
  w_in = np.asarray(moe.experts.in_EDF[...], np.float64)
  w_out = np.asarray(moe.experts.out_EFD[...], np.float64)
  logits = h @ w
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  out = np.zeros_like(h)
  for b in range(h.shape[0]):
    fill = [0] * e
    for t in range(h.shape[1]):
      choice = int(np.argmax(probs[b, t]))
      if choice >= e or fill[choice] >= capacity:
        continue
      fill[choice] += 1
      hidden = np.asarray(jax.nn.gelu(jnp.asarray(h[b, t] @ w_in[choice])), np.float64)
      out[b, t] = probs[b, t, choice] * (hidden @ w_out[choice])
  return out


@pytest.mark.parametrize("capacity_factor", [1.0, 0.0], ids=["capacity", "dropless"])
def test_integrated_matches_a_loop_reference(capacity_factor):
  cfg = _integrated(init_std=0.5, capacity_factor=capacity_factor)  # a decisive router
  moe = MoeMLP(cfg, rngs=nnx.Rngs(0))
  b, l = 2, 16
  h = jax.random.normal(jax.random.key(2), (b, l, cfg.d_model))
  tokens = jnp.ones((b, l), jnp.int32)
  y, aux = call(moe, h, _context(tokens))
  capacity = capacity_per_expert(l, 8, capacity_factor) if capacity_factor else l
  want = _integrated_reference(moe, h, capacity)
  np.testing.assert_allclose(np.asarray(y), want, rtol=2e-5, atol=2e-6)
  choices = np.argmax(np.asarray(h) @ np.asarray(moe.router.w_DE[...]), -1)
  noop = np.mean(choices >= 4)
  assert 0 < noop < 1  # both paths taken: the test means something
  np.testing.assert_allclose(float(aux["moe/noop_fraction"]), noop, rtol=1e-6)
  assert aux["moe/expert_load"].shape == (4,)


def test_integrated_balance_loss_runs_over_experts_and_noops():
  """alpha E' sum_i f_i P_i with E' = E + N: alpha exactly at uniform routing over all
  E + N choices, more when the router prefers the residual path."""
  cfg = _integrated(capacity_factor=0.0)
  moe = MoeMLP(cfg, rngs=nnx.Rngs(0))
  h = jax.random.normal(jax.random.key(3), (2, 64, cfg.d_model))
  ctx = _context(jnp.ones((2, 64), jnp.int32))
  moe.router.w_DE[...] = jnp.zeros_like(moe.router.w_DE[...])
  _, aux = call(moe, h, ctx)
  # All logits 0: top-1 takes expert 0 for every token, probabilities uniform: f P = 1/8.
  np.testing.assert_allclose(float(aux["aux_loss/load_balance"]), 0.01, rtol=1e-6)
  w = np.zeros((cfg.d_model, 8), np.float32)
  w[0, 5] = 5.0  # a pull towards one no-op expert
  moe.router.w_DE[...] = jnp.asarray(w)
  _, skewed = call(moe, jnp.abs(h), ctx)
  assert float(skewed["aux_loss/load_balance"]) > 0.01
  assert float(skewed["moe/noop_fraction"]) > 0.9


def test_integrated_is_causal():
  model = Decoder(_integrated(capacity_factor=1.0), rngs=nnx.Rngs(0))
  forward = families.jitted_logits(model)
  rng = np.random.default_rng(4)
  tokens = rng.integers(1, 64, (2, 16))
  changed = tokens.copy()
  changed[:, 10:] = rng.integers(1, 64, (2, 6))
  np.testing.assert_array_equal(forward(tokens)[:, :10], forward(changed)[:, :10])


def test_integrated_accounting_counts_real_experts_at_balance():
  cfg = _integrated(capacity_factor=1.0)  # E = N = 4, top-1: half a real expert per token
  plain = dataclasses.replace(cfg, moe=dataclasses.replace(cfg.moe, noop_experts=0))
  seq = 16
  mlp = flops.mlp_flops(cfg)
  diff = registry.block("moe").forward_flops(plain, seq) - registry.block("moe").forward_flops(cfg, seq)
  np.testing.assert_allclose(diff, 0.5 * mlp - 6 * cfg.d_model * 4, rtol=1e-12)
  p, q = accounting.count_params(cfg), accounting.count_params(plain)
  assert p.total - q.total == cfg.d_model * 4  # four more router columns
  assert p.active_per_token < q.active_per_token


# ---- both ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model_cfg", [_staged(capacity=0.5), _integrated()],
                         ids=["staged", "integrated"])
def test_mode_learns_with_its_losses_in_the_objective(model_cfg):
  losses = families.learns_on_a_repeated_batch(model_cfg)
  assert np.all(np.isfinite(losses))


def test_aux_losses_of_both_routers_enter_the_objective():
  model = Decoder(_staged(capacity=0.5), rngs=nnx.Rngs(0))
  cfg = tiny_config(model=model.cfg)
  batch = random_batch(cfg)
  _, aux = call(model, jnp.asarray(batch["inputs"]))
  names = {k.split("/", 1)[1] for k in aux if "/aux_loss/" in k}
  assert names == {"aux_loss/load_balance", "aux_loss/router_bce", "aux_loss/predictor_bce"}
  np.testing.assert_allclose(float(aux_loss(aux)),
                             sum(float(v) for k, v in aux.items() if "/aux_loss/" in k),
                             rtol=1e-6)


@pytest.mark.parametrize("variant", mode_configs.VARIANTS)
def test_configs_build_at_tiny_and_table1_sizes(variant):
  for size in ("tiny", "small"):
    cfg = config.from_configdict(mode_configs.get_config(f"{variant}_{size}"))
    config.validate(cfg, 1)
    params = accounting.count_params(cfg.model)
    assert params.active_per_token < params.total
    assert accounting.against(cfg, ("dense",))["train_ratio"] < 1.0
    nnx.eval_shape(lambda c=cfg: Decoder(c.model, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("model_cfg,field", [
    (_integrated(router="expert_choice", capacity_factor=2.0), "model.moe.noop_experts"),
    (_integrated(noop_experts=-1), "model.moe.noop_experts"),
    (_staged(capacity=0.25, moe=MoeConfig(router="base", num_experts=8)),
     "model.moe.num_experts"),
])
def test_bad_mode_values_name_the_field(model_cfg, field):
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    config.validate(tiny_config(model=model_cfg, seq_len=16), 1)
