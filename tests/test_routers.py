"""Each MoE router against a plain loop reference on random inputs; BASE's balanced
assignment against scipy's exact solver; the load-balance loss; hash maps."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.optimize import linear_sum_assignment

from zoo.families.mixture_of_experts import MoeConfig
from zoo.models import hashing
from zoo.models.assignment import balanced_assignment
from zoo.families.mixture_of_experts import MoeMLP
from zoo.models.parts import Context
from zoo.models.routers import capacity_per_expert, load_balance_loss
from zoo.testing import tiny_model

B, L, D = 2, 16, 32


def _mlp(**moe):
  cfg = tiny_model(d_model=D, d_ff=64, pattern=("moe",), moe=MoeConfig(**moe))
  return cfg, MoeMLP(cfg, rngs=nnx.Rngs(3))


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  h = rng.normal(size=(B, L, D)).astype(np.float32)
  tokens = rng.integers(1, 64, (B, L)).astype(np.int32)
  pos = np.tile(np.arange(L, dtype=np.int32), (B, 1))
  return h, Context(jnp.asarray(pos), jnp.ones((B, L), jnp.int32), None, jnp.asarray(tokens))


def _apply(mlp, h, ctx):
  graphdef, state = nnx.split(mlp)
  fn = jax.jit(lambda s, h, c: nnx.merge(graphdef, s)(h, c))
  y, aux = fn(state, jnp.asarray(h), ctx)
  return np.asarray(y), jax.device_get(aux)


def _expert(mlp, e, x_D):
  """One expert MLP (gelu), in numpy float64."""
  w_in = np.asarray(mlp.experts.in_EDF[...], np.float64)[e]
  w_out = np.asarray(mlp.experts.out_EFD[...], np.float64)[e]
  return np.asarray(jax.nn.gelu(jnp.asarray(x_D @ w_in))) @ w_out


def _probs(mlp, h_LD):
  logits = h_LD.astype(np.float64) @ np.asarray(mlp.router.w_DE[...], np.float64)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  return p / p.sum(-1, keepdims=True)


def _token_choice_reference(mlp, h, k, capacity, normalize):
  """First come, first served by (choice rank, token); a full expert drops the choice."""
  out = np.zeros(h.shape)
  kept_all = []
  for b in range(h.shape[0]):
    p = _probs(mlp, h[b])
    idx = np.argsort(-p, axis=-1, kind="stable")[:, :k]
    gate = np.take_along_axis(p, idx, -1)
    if normalize:
      gate = gate / gate.sum(-1, keepdims=True)
    counts = np.zeros(p.shape[1], int)
    kept = np.zeros(idx.shape, bool)
    for r in range(k):
      for t in range(h.shape[1]):
        e = idx[t, r]
        if capacity == 0 or counts[e] < capacity:
          counts[e] += 1
          kept[t, r] = True
          out[b, t] += gate[t, r] * _expert(mlp, e, h[b, t].astype(np.float64))
    kept_all.append(kept)
  return out, np.stack(kept_all)


@pytest.mark.parametrize("router,k,cf", [
    ("switch", 1, 1.0), ("switch", 1, 0.0), ("topk", 2, 1.0), ("topk", 3, 0.0)])
def test_token_choice_matches_reference(router, k, cf):
  _, mlp = _mlp(router=router, num_experts=4, top_k=k, capacity_factor=cf)
  h, ctx = _inputs()
  y, aux = _apply(mlp, h, ctx)
  capacity = 0 if cf == 0 else int(np.ceil(cf * k * L / 4))
  ref, kept = _token_choice_reference(mlp, h, k, capacity, normalize=router == "topk")
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
  dropped = 1 - kept.mean()
  np.testing.assert_allclose(aux["moe/dropped"], dropped, rtol=1e-6)
  if cf:
    assert dropped > 0  # the case where capacity matters is exercised
  assert aux["aux_loss/load_balance"] > 0 and aux["moe/router_entropy"] > 0


def test_expert_choice_matches_reference():
  _, mlp = _mlp(router="expert_choice", num_experts=4, top_k=1, capacity_factor=2.0)
  h, ctx = _inputs(1)
  y, aux = _apply(mlp, h, ctx)
  c = int(np.ceil(2.0 * L / 4))
  ref = np.zeros(h.shape)
  taken = np.zeros((B, L))
  for b in range(B):
    p = _probs(mlp, h[b])
    for e in range(4):
      for t in np.argsort(-p[:, e], kind="stable")[:c]:
        ref[b, t] += p[t, e] * _expert(mlp, e, h[b, t].astype(np.float64))
        taken[b, t] += 1
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(aux["moe/dropped"], (taken == 0).mean(), rtol=1e-6)


def test_fine_grained_experts_are_narrow_and_active_parameters_match_dense():
  from zoo import accounting
  cfg, mlp = _mlp(router="expert_choice", num_experts=16, top_k=4, granularity=4,
                  capacity_factor=1.0)
  assert mlp.experts.in_EDF.shape == (16, D, 64 // 4)
  dense = accounting.count_params(tiny_model(d_model=D, d_ff=64, pattern=("dense",)))
  moe = accounting.count_params(cfg)
  layers = cfg.num_layers  # every layer is an MoE layer
  router = layers * D * 16
  assert moe.active_per_token == dense.active_per_token + router
  assert moe.total == dense.total + router + layers * 3 * 2 * D * 64  # expansion E = 4


def test_base_output_and_balance():
  _, mlp = _mlp(router="base", num_experts=4)
  h, ctx = _inputs(2)
  y, aux = _apply(mlp, h, ctx)
  assert aux["moe/load_max"] == 1.0 and aux["moe/load_min"] == 1.0
  assert aux["moe/auction_complete"] == 1.0
  c = np.asarray(mlp.router.centroids_ED[...], np.float64)
  for b in range(B):
    a = h[b].astype(np.float64) @ c.T
    expert = np.asarray(jax.jit(balanced_assignment)(jnp.asarray(a, jnp.float32))[0])
    assert np.bincount(expert, minlength=4).tolist() == [L // 4] * 4
    for t in range(L):
      s = 1 / (1 + np.exp(-a[t, expert[t]]))
      ref = s * _expert(mlp, expert[t], h[b, t].astype(np.float64)) + (1 - s) * h[b, t]
      np.testing.assert_allclose(y[b, t], ref, rtol=1e-5, atol=1e-6)
  # Inference (`eval()` sets `deterministic`): greedy top-1, no balance constraint.
  mlp.eval()
  assert mlp.router.deterministic
  y_greedy, _ = _apply(mlp, h, ctx)
  a = h[0].astype(np.float64) @ c.T
  e0 = int(np.argmax(a[0]))
  s = 1 / (1 + np.exp(-a[0, e0]))
  np.testing.assert_allclose(y_greedy[0, 0], s * _expert(mlp, e0, h[0, 0].astype(np.float64))
                             + (1 - s) * h[0, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tokens,experts,seed", [(16, 4, 0), (12, 3, 1), (32, 8, 2), (8, 2, 3)])
def test_balanced_assignment_is_exact_and_optimal(tokens, experts, seed):
  s = np.random.default_rng(seed).normal(size=(tokens, experts)).astype(np.float32)
  assign, complete = jax.jit(balanced_assignment)(jnp.asarray(s))
  assign = np.asarray(assign)
  cap = tokens // experts
  assert bool(complete)
  assert np.bincount(assign, minlength=experts).tolist() == [cap] * experts
  rows, cols = linear_sum_assignment(-np.repeat(s, cap, axis=1))
  optimum = s[rows, cols // cap].sum()
  eps = 1e-3 * (s.max() - s.min() + 1e-6) / tokens  # the solver's default
  assert s[np.arange(tokens), assign].sum() >= optimum - tokens * eps
  np.testing.assert_array_equal(assign[rows], cols // cap)  # random scores: unique optimum


def test_balanced_assignment_stays_balanced_when_the_auction_is_cut_short():
  s = np.random.default_rng(5).normal(size=(64, 8)).astype(np.float32)
  assign, complete = balanced_assignment(jnp.asarray(s), max_rounds=1)
  assert not bool(complete)
  assert np.bincount(np.asarray(assign), minlength=8).tolist() == [8] * 8


def test_load_balance_loss_is_minimal_for_uniform_routing():
  e, t = 8, 64
  w = jnp.ones((1, t))
  uniform = jnp.full((1, t, e), 1 / e)
  balanced_idx = (jnp.arange(t) % e)[None, :, None]
  at_min = load_balance_loss(uniform, balanced_idx, w)
  np.testing.assert_allclose(at_min, 1.0, rtol=1e-6)  # alpha x 1 after weighting
  rng = np.random.default_rng(0)
  for temperature in (0.5, 2.0, 8.0):
    logits = jnp.asarray(rng.normal(size=(1, t, e)) * temperature, jnp.float32)
    p = jax.nn.softmax(logits, -1)
    assert load_balance_loss(p, jnp.argmax(p, -1)[..., None], w) > at_min
  skewed = jax.nn.softmax(jnp.zeros((1, t, e)).at[..., 0].set(3.0), -1)
  assert load_balance_loss(skewed, jnp.zeros((1, t, 1), jnp.int32), w) > 4 * at_min


def test_hash_kinds():
  rng = np.random.default_rng(0)
  table = jnp.asarray(hashing.random_table(64, 8, 0))
  tokens = jnp.asarray(rng.integers(1, 64, (2, 10)), jnp.int32)
  pos = jnp.tile(jnp.arange(10), (2, 1)).at[:, 6:].add(-6)  # a second document at 6
  t, tab = np.asarray(tokens), np.asarray(table)
  np.testing.assert_array_equal(hashing.route("random", table, tokens, pos, 8), tab[t])
  prev = np.asarray(hashing.route("previous", table, tokens, pos, 8))
  np.testing.assert_array_equal(prev[:, 1:6], tab[t[:, :5]])
  np.testing.assert_array_equal(prev[:, [0, 6]], tab[[0, 0]][None].repeat(2, 0))
  oracle = np.asarray(hashing.route("oracle", table, tokens, pos, 8))
  np.testing.assert_array_equal(oracle[:, :-1], tab[t[:, 1:]])
  for kind in ("bigram", "position"):
    out = np.asarray(hashing.route(kind, table, tokens, pos, 8))
    assert out.min() >= 0 and out.max() < 8
  position = np.asarray(hashing.route("position", table, tokens, pos, 8))
  np.testing.assert_array_equal(position[:, 6:], position[:, :4])  # a function of position


def test_balanced_hash_evens_the_load():
  freq = np.random.default_rng(0).zipf(1.3, 4096).astype(np.float64)[:4096] % 10_000 + 1
  table = hashing.balanced_table(freq, 16)
  load = np.bincount(table, weights=freq, minlength=16)
  rand = np.bincount(hashing.random_table(4096, 16, 0), weights=freq, minlength=16)
  assert load.max() / load.mean() < 1.01 < rand.max() / rand.mean()


def test_hash_maps_are_deterministic_across_processes():
  code = ("import numpy as np; from zoo.models import hashing;"
          "print(hashing.token_table('{k}', '', 64, 0,"
          " 1000).tobytes().hex())")
  for kind in ("random", "balanced"):
    here = hashing.token_table(kind, "", 64, 0, 1000)
    out = subprocess.run([sys.executable, "-c", code.format(k=kind)], capture_output=True,
                         text=True, check=True, env={"JAX_PLATFORMS": "cpu"})
    assert bytes.fromhex(out.stdout.strip()) == here.tobytes()
  a = hashing.route("bigram", None, jnp.arange(20)[None], jnp.arange(20)[None], 64, seed=1)
  np.testing.assert_array_equal(a, hashing.route("bigram", None, jnp.arange(20)[None],
                                                 jnp.arange(20)[None], 64, seed=1))


@pytest.mark.slow
@pytest.mark.parametrize("moe", [
    dict(router="switch", capacity_factor=1.0), dict(router="topk", top_k=2, capacity_factor=0.0),
    dict(router="expert_choice", capacity_factor=2.0)],
    ids=["switch_capacity", "topk_dropless", "expert_choice"])
def test_pallas_kernels_match_xla(moe):
  """The MoE MLP through the Pallas kernels (TPU interpret mode) equals the XLA path,
  forward and gradients."""
  h, ctx = _inputs(4)
  results = []
  for backend in ("xla", "pallas_interpret"):
    _, mlp = _mlp(num_experts=4, backend=backend, **moe)
    graphdef, state = nnx.split(mlp)

    def loss(s, h):
      y, _ = nnx.merge(graphdef, s)(h, ctx)
      return jnp.sum(y * jnp.cos(y))

    results.append(jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(state, jnp.asarray(h)))
  (ref_val, ref_grads), (val, grads) = results
  np.testing.assert_allclose(val, ref_val, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               grads, ref_grads)


def test_capacity_rule():
  """ceil(capacity_factor k T / E) slots per expert, at least one."""
  assert capacity_per_expert(40, 4, 1.25, 2) == 25
  assert capacity_per_expert(3, 8, 1.0) == 1
