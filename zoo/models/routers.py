"""Routers of the MoE block: which experts each token uses, and with what gate.

Routing groups are sequences: a router sees `h_BLD` (B groups of L tokens, already normed)
and returns a `Routing`, either token choice (`expert_idx_BLR`, `gate_BLR`) or expert
choice (`token_idx_BEC`, `gate_BEC`), plus its auxiliary losses and statistics. Learned
routers compute in float32 (Fedus et al. 2021). Axis letters (zoo/__init__.py): E experts,
R routes per token (the experts a token is sent to), C tokens per expert (capacity).

* `SwitchRouter` — Switch Transformer top-1 (Fedus et al. 2021, arXiv:2101.03961).
* `TopKRouter` — token choice top-k, k >= 2, gates renormalised over the k chosen
  (GShard, Lepikhin et al. 2020; as flaxformer's `TokensChooseMaskedRouter`).
* `ExpertChoiceRouter` — each expert takes its top tokens (Zhou et al. 2022,
  arXiv:2202.09368); the fine-grained MoE of Krajewski et al. 2024 (arXiv:2402.07871) is
  this router over G x E narrow experts with k = G.
* `BaseRouter` — BASE layers (Lewis et al. 2021, arXiv:2103.16716), `zoo.models.assignment`.
* `HashRouter` — Hash layers (Roller et al. 2021, arXiv:2106.04426), `zoo.models.hashing`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.config import ModelConfig
from zoo.models import hashing
from zoo.models.assignment import balanced_assignment
from zoo.models.parts import Context, param


def capacity_per_expert(num_tokens: int, num_experts: int, capacity_factor: float,
                        k: int = 1) -> int:
  """Slots per expert in a routing group of T tokens: ceil(capacity_factor k T / E), >= 1."""
  return max(1, math.ceil(capacity_factor * k * num_tokens / num_experts))


@dataclasses.dataclass
class Routing:
  """A router's decision for B groups of L tokens.

  Token choice: `expert_idx_BLR` and `gate_BLR`; `capacity` slots per expert (0: dropless).
  Expert choice: `token_idx_BEC` and `gate_BEC`. `passthrough_BL`, if set, scales the MoE
  input added to the output (BASE's (1 - sigma) h). `probs_BLE` (learned routers) feed the
  router-entropy statistic; `aux` holds "aux_loss/<name>" losses and statistics.
  """

  expert_idx_BLR: jax.Array | None = None
  gate_BLR: jax.Array | None = None
  capacity: int = 0
  token_idx_BEC: jax.Array | None = None
  gate_BEC: jax.Array | None = None
  passthrough_BL: jax.Array | None = None
  probs_BLE: jax.Array | None = None
  aux: dict = dataclasses.field(default_factory=dict)


def load_balance_loss(probs_BLE, expert_idx_BLR, weight_BL) -> jax.Array:
  """Switch's E * sum_i f_i P_i (Fedus et al. 2021, eq. 4-6), over real (weighted) tokens.

  f_i is the fraction of tokens routed to expert i (any of their k choices, as flaxformer)
  and P_i the mean router probability of expert i. For top-1 it is 1 when both are uniform
  and grows as routing concentrates (E * sum_i p_i^2 >= 1 when f = P, by Cauchy-Schwarz).
  """
  num_experts = probs_BLE.shape[-1]
  w = weight_BL[..., None]
  total = jnp.maximum(jnp.sum(weight_BL), 1.0)
  chosen_BLE = jnp.max(jax.nn.one_hot(expert_idx_BLR, num_experts), axis=-2)
  f_E = jnp.sum(chosen_BLE * w, axis=(0, 1)) / total
  p_E = jnp.sum(probs_BLE * w, axis=(0, 1)) / total
  return num_experts * jnp.sum(f_E * p_E)


def z_loss(logits_BLE, weight_BL) -> jax.Array:
  """Router z-loss (Zoph et al. 2022, ST-MoE): mean squared log-partition function."""
  lse = jax.nn.logsumexp(logits_BLE, axis=-1)
  return jnp.sum(lse * lse * weight_BL) / jnp.maximum(jnp.sum(weight_BL), 1.0)


class _Learned(nnx.Module):
  """A linear router w_DE ~ normal(0, init_std), applied in float32.

  Its E columns are the experts, then `noop_experts` more for integrated MoDE.
  """

  def __init__(self, cfg: ModelConfig, options, *, rngs: nnx.Rngs):
    mo = options
    self.num_experts, self.top_k = mo.num_experts, mo.top_k
    self.num_choices = mo.num_choices
    self.capacity_factor = mo.capacity_factor
    self.alpha, self.z_weight = mo.aux_loss_weight, mo.z_loss_weight
    self.w_DE = param(rngs, (cfg.d_model, mo.num_choices), ("embed", None), cfg.init_std)

  def logits(self, h_BLD):
    return jnp.einsum("bld,de->ble", h_BLD.astype(jnp.float32), self.w_DE[...])

  def losses(self, logits_BLE, probs_BLE, expert_idx_BLR, weight_BL) -> dict:
    aux = {}
    if self.alpha:
      aux["aux_loss/load_balance"] = self.alpha * load_balance_loss(
          probs_BLE, expert_idx_BLR, weight_BL)
    if self.z_weight:
      aux["aux_loss/router_z"] = self.z_weight * z_loss(logits_BLE, weight_BL)
    return aux


class TopKRouter(_Learned):
  """Token choice top-k (k >= 2): gates are the k probabilities renormalised to sum to 1.

  With a capacity (slots = capacity_factor * k * L / E per expert) a choice that finds its
  expert full is dropped; because every token's first choice is placed before any second
  choice, a later token can displace an earlier token's second choice, so top-k with a
  capacity is not causal; dropless (capacity_factor 0) is.

  Integrated MoDE (Raposo et al. 2024, section 4.3; `noop_experts` N > 0): the softmax and
  the load-balance loss run over E + N choices; a token whose choice is a no-op expert gets
  expert index -1 and gate 0 for it (no slot, nothing added: its residual passes), so tokens
  learn to take the residual path instead of being dropped by a full expert.
  """

  normalize = True

  def __call__(self, h_BLD, ctx: Context) -> Routing:
    weight_BL = (ctx.segment_ids_BL > 0).astype(jnp.float32)
    logits_BLE = self.logits(h_BLD)
    probs_BLE = jax.nn.softmax(logits_BLE, axis=-1)
    gate_BLR, expert_idx_BLR = jax.lax.top_k(probs_BLE, self.top_k)
    if self.normalize:
      gate_BLR = gate_BLR / jnp.sum(gate_BLR, axis=-1, keepdims=True)
    capacity = 0
    if self.capacity_factor:  # no-op experts take their share: slots for L k / (E + N)
      capacity = capacity_per_expert(h_BLD.shape[1], self.num_choices, self.capacity_factor,
                                     self.top_k)
    aux = self.losses(logits_BLE, probs_BLE, expert_idx_BLR, weight_BL)
    if self.num_choices > self.num_experts:  # integrated MoDE: a no-op choice is "no expert"
      noop_BLR = expert_idx_BLR >= self.num_experts
      aux["moe/noop_fraction"] = jnp.sum(jnp.mean(noop_BLR, -1) * weight_BL) / jnp.maximum(
          jnp.sum(weight_BL), 1.0)
      expert_idx_BLR = jnp.where(noop_BLR, -1, expert_idx_BLR)
      gate_BLR = jnp.where(noop_BLR, 0.0, gate_BLR)
    return Routing(expert_idx_BLR=expert_idx_BLR, gate_BLR=gate_BLR, capacity=capacity,
                   probs_BLE=probs_BLE, aux=aux)


class SwitchRouter(TopKRouter):
  """Switch top-1 (Fedus et al. 2021): softmax router in float32, gate = p_{e*}(x).

  Load-balance loss alpha * E * sum_i f_i P_i (alpha = 0.01); optional z-loss. Capacity
  L / E x capacity_factor per expert; an overflowing token gets no expert output and passes
  through on the residual. Slots go first come, first served in token order, so whether a
  token is kept depends only on earlier tokens: top-1 routing is causal.
  """

  normalize = False


class ExpertChoiceRouter(_Learned):
  """Expert choice (Zhou et al. 2022): S = softmax(X W_g); each expert takes the top
  C = capacity_factor * k * L / E tokens by S[:, e], gate S[t, e]. No balance loss.

  Not causal in a decoder: whether an expert takes token t depends on the scores of later
  tokens of the sequence (flaxformer warns the same), so it trains a model that cannot be
  sampled from exactly; it is here for comparison. Fine-grained MoE (Krajewski et al.
  2024) is this router over G * E experts of width d_ff / G with k = G, so a token uses on
  average G experts and the active parameters are those of one dense MLP.
  """

  def __call__(self, h_BLD, ctx: Context) -> Routing:
    weight_BL = (ctx.segment_ids_BL > 0).astype(jnp.float32)
    logits_BLE = self.logits(h_BLD)
    probs_BLE = jax.nn.softmax(logits_BLE, axis=-1)
    capacity = capacity_per_expert(h_BLD.shape[1], self.num_experts, self.capacity_factor,
                                   self.top_k)
    capacity = min(capacity, h_BLD.shape[1])
    # Padding scores -1 so that experts take real tokens first.
    score_BEL = jnp.where(weight_BL[:, None, :] > 0, jnp.swapaxes(probs_BLE, 1, 2), -1.0)
    _, token_idx_BEC = jax.lax.top_k(jax.lax.stop_gradient(score_BEL), capacity)
    gate_BEC = jnp.take_along_axis(jnp.swapaxes(probs_BLE, 1, 2), token_idx_BEC, axis=-1)
    aux = {}
    if self.z_weight:
      aux["aux_loss/router_z"] = self.z_weight * z_loss(logits_BLE, weight_BL)
    return Routing(token_idx_BEC=token_idx_BEC, gate_BEC=gate_BEC, probs_BLE=probs_BLE,
                   aux=aux)


class BaseRouter(nnx.Module):
  """BASE layers (Lewis et al. 2021): expert embeddings c_e, affinity a = h . c_e.

  Training: a balanced assignment (each expert exactly L / E tokens of the sequence,
  maximal total affinity; `zoo.models.assignment`, an auction). Inference
  (`deterministic=True`, e.g. `model.eval()`): greedy top-1, no capacity. Output
  sigma(a_{t,e}) * Expert_e(h_t) + (1 - sigma(a_{t,e})) * h_t, which puts the expert
  embedding on the gradient path. No auxiliary loss. The balanced assignment looks at the
  whole sequence, so training-time routing is not causal; inference routing is.
  """

  def __init__(self, cfg: ModelConfig, options, *, rngs: nnx.Rngs):
    self.num_experts = options.num_experts
    self.deterministic = False
    self.centroids_ED = param(rngs, (options.num_experts, cfg.d_model), (None, "embed"),
                              cfg.init_std)

  def __call__(self, h_BLD, ctx: Context) -> Routing:
    del ctx
    b, l, _ = h_BLD.shape
    affinity_BLE = jnp.einsum("bld,ed->ble", h_BLD.astype(jnp.float32), self.centroids_ED[...])
    aux = {}
    if self.deterministic:
      expert_BL = jnp.argmax(affinity_BLE, axis=-1)
      capacity = 0  # greedy top-1 and dropless
    else:
      expert_BL, complete_B = jax.vmap(balanced_assignment)(affinity_BLE)
      capacity = l // self.num_experts  # exactly what the assignment gives each expert
      aux["moe/auction_complete"] = jnp.mean(complete_B.astype(jnp.float32))
    expert_idx_BLR = expert_BL[..., None].astype(jnp.int32)
    sigma_BLR = jax.nn.sigmoid(jnp.take_along_axis(affinity_BLE, expert_idx_BLR, axis=-1))
    return Routing(expert_idx_BLR=expert_idx_BLR, gate_BLR=sigma_BLR, capacity=capacity,
                   passthrough_BL=1.0 - sigma_BLR[..., 0], aux=aux)


class HashTable(nnx.Variable):
  """A fixed routing map (Hash layers): checkpointed with the model, never trained."""


class HashRouter(nnx.Module):
  """Hash layers (Roller et al. 2021): the expert is a fixed function of the input token id.

  No router parameters and no auxiliary loss; the gate is 1. Kinds (`zoo.models.hashing`):
  random (a seeded random token -> expert map, as the paper's code), balanced (greedy by
  token frequency so expert loads are even), bigram (hash of the previous and current
  token), previous (the previous token's map), position (hash of the position), oracle (the
  *next* token's map: it leaks the target, a check that the model exploits leaked
  information; never use it for results). Top-1 and dropless.
  """

  def __init__(self, cfg: ModelConfig, options, *, rngs: nnx.Rngs):
    del rngs
    mo = options
    self.kind, self.num_experts, self.seed = mo.hash_kind, mo.num_experts, mo.hash_seed
    table_V = hashing.token_table(mo.hash_kind, mo.hash_frequencies, mo.num_experts,
                                  mo.hash_seed, cfg.vocab_size)
    self.table_V = HashTable(jnp.asarray(table_V), out_sharding=(None,), eager_sharding=False)

  def __call__(self, h_BLD, ctx: Context) -> Routing:
    if ctx.tokens_BL is None:
      raise ValueError("Hash routing needs the input token ids in Context.tokens_BL")
    expert_BL = hashing.route(self.kind, self.table_V[...], ctx.tokens_BL, ctx.positions_BL,
                              self.num_experts, self.seed)
    expert_idx_BLR = expert_BL[..., None].astype(jnp.int32)
    return Routing(expert_idx_BLR=expert_idx_BLR,
                   gate_BLR=jnp.ones(expert_idx_BLR.shape, jnp.float32), capacity=0)


ROUTERS = {"switch": SwitchRouter, "topk": TopKRouter, "expert_choice": ExpertChoiceRouter,
           "base": BaseRouter, "hash": HashRouter}


def make_router(cfg: ModelConfig, options, *, rngs: nnx.Rngs) -> nnx.Module:
  """The router `options.router` names; `options` are the MoE block's options (its
  `MoeConfig`: experts, top-k, capacity factor, loss weights, hash map)."""
  return ROUTERS[options.router](cfg, options, rngs=rngs)
