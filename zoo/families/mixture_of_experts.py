"""Mixture-of-Experts: a pre-norm block whose MLP is E expert MLPs chosen per token.

Block "moe": x <- x + Attn(Norm(x)), then with h = Norm(x)

    x <- x + sum_{e in experts(t)} g_{t,e} * MLP_e(h_t)  (+ r_t * h_t for BASE)

where a router (zoo/models/routers.py) picks the experts and gates: Switch top-1 (Fedus et
al. 2021), top-k token choice, expert choice (Zhou et al. 2022), BASE (Lewis et al. 2021,
r = 1 - g), Hash (Roller et al. 2021), and fine-grained MoE (Krajewski et al. 2024,
arXiv:2402.07871): granularity G makes each of the G x E experts d_ff / G wide and routes a
token to G of them (expert choice with k = G, or top-G token choice), so the active
parameters stay those of one dense MLP. A pattern such as ("dense", "moe") places the MoE
layers. Routing groups are sequences (rows of the batch).

Dispatch goes through `pallas_kernels`: with a capacity, `expert_dispatch.dispatch` /
`expert_choice_dispatch` gather each group's tokens into [E, C] slots (all groups in one call,
expert e of group b being "virtual expert" b * E + e), the experts run as one batched matmul,
and `combine` scatters the gated outputs back (an overflowing token passes through on the
residual); dropless (capacity_factor 0) uses `dropless.dropless_moe` (sort by expert, grouped
matmul, unsort). Backend `model.moe.backend` ('' : XLA reference off TPU). On a mesh the
dispatch, the experts and the combine run per shard under `jax.shard_map`
(`zoo.sharding.per_shard`; `partition="gspmd"` leaves them to XLA instead): each chip routes
its own sequences, and with an `expert` mesh axis of n chips, each holding E / n experts
(logical axes ("expert", "embed", "mlp")), the slots go to their experts and back by one
all-to-all each way; dropless layers all-gather the expert axis's tokens and reduce-scatter
the outputs instead (the slot counts are not fixed).

Statistics per layer (aux, not losses): "moe/dropped" (fraction of the choices of a real
expert that found no slot; for expert choice, of tokens no expert took), "moe/load_max" and
"moe/load_min" (most and least loaded expert, as a multiple of the mean load; 1 = even),
"moe/expert_load" (every expert's load, [E]: the load histogram), "moe/router_entropy" (mean
entropy of the router's softmax, nats), "moe/noop_fraction" (integrated MoDE: choices of a
no-op expert). Losses: "aux_loss/...".

Accounting: routing FLOPs as Krajewski et al. count them, c_r = 14 FLOPs per token per
d_model per expert in training (router logits forward and backward 2 + 4, dispatch and
combine forward and backward 2 + 2 + 2 + 2), 6 of them in the forward pass; Hash layers have
no router logits (8 and 4).
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
from flax import nnx

from pallas_kernels import dropless, expert_dispatch
from zoo import plotting, registry, sharding
from zoo.config import ConfigError, ModelConfig, one_of, positive
from zoo.data import token_counts
from zoo.models import flops
from zoo.models.parts import ACTIVATIONS, Attention, Context, Norm, dropout, param
from zoo.models.routers import ROUTERS, Routing, make_router

HASH_KINDS = ("random", "balanced", "bigram", "previous", "position", "oracle")
BACKENDS = ("", "xla", "pallas_tpu", "pallas_interpret")


@dataclasses.dataclass(frozen=True)
class MoeConfig:
  """Options of block "moe" (`model.moe`); staged MoDE's inner block uses them too."""

  router: str = "switch"  # "switch", "topk", "expert_choice", "base" or "hash"
  num_experts: int = 8  # E per MoE layer (fine-grained: granularity x expansion rate)
  top_k: int = 1  # experts per token (token choice), or per token on average (expert choice)
  capacity_factor: float = 1.25  # slots per expert = cf x top_k x L / E; 0: dropless
  granularity: int = 1  # G: each expert is d_ff / G wide (Krajewski et al. 2024)
  aux_loss_weight: float = 0.01  # alpha of the load-balance loss alpha E sum_i f_i P_i
  z_loss_weight: float = 0.0  # the router z-loss (0: off)
  hash_kind: str = "random"  # "random", "balanced", "bigram", "previous", "position", "oracle"
  hash_frequencies: str = ""  # .npy of token counts for "balanced" ('': the training corpus)
  hash_seed: int = 0  # seeds the random hash map
  noop_experts: int = 0  # N no-op experts among the router's choices (integrated MoDE)
  output_norm: bool = False  # a norm on the MoE output before the residual add (G > 1)
  backend: str = ""  # kernels: '' by platform, "xla", "pallas_tpu", "pallas_interpret"

  @property
  def num_choices(self) -> int:
    """What the router chooses among: the experts and the no-op experts."""
    return self.num_experts + self.noop_experts

  @property
  def expansion(self) -> float:
    """Krajewski et al.'s expansion rate E: total expert parameters / dense MLP parameters."""
    return self.num_experts / self.granularity


def expert_hidden(cfg: ModelConfig) -> int:
  """Width of one expert: the dense MLP's hidden size over the granularity."""
  return cfg.hidden_size // cfg.moe.granularity


def experts_per_token(cfg: ModelConfig) -> float:
  """Experts a token uses: k for token choice, k x capacity_factor on average for expert
  choice (every slot is filled), 1 for Switch, BASE and Hash. With N no-op experts
  (integrated MoDE) the k choices are spread evenly over E + N at balance, so k E / (E + N)
  of them are real experts."""
  mo = cfg.moe
  if mo.router == "expert_choice":
    return mo.top_k * mo.capacity_factor
  k = mo.top_k if mo.router == "topk" else 1
  return k * mo.num_experts / mo.num_choices


class Experts(nnx.Module):
  """E independent MLPs, stacked on a leading `expert` axis."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    e, d, f = cfg.moe.num_experts, cfg.d_model, expert_hidden(cfg)
    self.activation = cfg.activation
    self.gated = cfg.activation in ("swiglu", "geglu")
    self.in_EDF = param(rngs, (e, d, f), ("expert", "embed", "mlp"), cfg.init_std)
    if self.gated:
      self.gate_EDF = param(rngs, (e, d, f), ("expert", "embed", "mlp"), cfg.init_std)
    out_std = cfg.init_std / (2 * cfg.num_layers) ** 0.5
    self.out_EFD = param(rngs, (e, f, d), ("expert", "mlp", "embed"), out_std)

  def weights(self, dtype) -> tuple[jax.Array, ...]:
    """(w_in, w_out), or (w_in, w_out, w_gate) for a gated activation, in `dtype`."""
    w = (self.in_EDF[...], self.out_EFD[...]) + ((self.gate_EDF[...],) if self.gated else ())
    return tuple(a.astype(dtype) for a in w)


def expert_mlps(x_BECD, activation: str, w_in, w_out, w_gate=None):
  """Every expert on its slots: [B, E, C, D] -> [B, E, C, D]."""
  act = ACTIVATIONS[activation]
  h = jnp.einsum("becd,edf->becf", x_BECD, w_in)
  h = act(jnp.einsum("becd,edf->becf", x_BECD, w_gate)) * h if w_gate is not None else act(h)
  return jnp.einsum("becf,efd->becd", h, w_out)


def run_experts(x_BECD, activation: str, *weights):
  """The experts on their slots. Under expert parallelism (inside `sharding.per_shard`, the
  weights being this chip's E / n experts) every chip sends each expert's slots to the chip
  that holds it and gets the outputs back: one all-to-all each way over the expert axis, as
  GShard (Lepikhin et al. 2020) and MaxText do."""
  n = sharding.expert_shards()
  if n > 1:  # [B, E, C, D] -> [n B, E / n, C, D]: every shard's slots of my experts
    x_BECD = sharding.all_to_all_experts(x_BECD, split_axis=1, concat_axis=0)
  y_BECD = expert_mlps(x_BECD, activation, *weights)
  if n > 1:
    y_BECD = sharding.all_to_all_experts(y_BECD, split_axis=0, concat_axis=1)
  return y_BECD


# Logical axes inside the per-shard functions: tokens split over the batch axes, each chip's
# experts whole (their width gathered at the boundary, as FSDP gathers any weight).
_BATCH3 = ("batch", None, None)
_EXPERTS = ("expert", None, None)


class MoeMLP(nnx.Module):
  """Router + experts + dispatch; returns the MoE output (residual not included) and aux.

  The router runs on the whole batch (XLA partitions it over the batch); dispatch, experts
  and combine run per shard (`sharding.per_shard`): each chip routes its own sequences into
  slots with the kernels, and the slots travel to their experts by all-to-all.
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.num_experts = cfg.moe.num_experts
    self.backend = cfg.moe.backend or None
    self.activation = cfg.activation
    self.router = make_router(cfg, cfg.moe, rngs=rngs)
    self.experts = Experts(cfg, rngs=rngs)

  def __call__(self, h_BLD, ctx: Context):
    routing = self.router(h_BLD, ctx)
    weight_BL = (ctx.segment_ids_BL > 0).astype(jnp.float32)
    if routing.expert_idx_BLR is not None:  # padding (and tokens MoD routes around) takes
      routing.expert_idx_BLR = jnp.where(  # no slot and costs no expert compute
          weight_BL[..., None] > 0, routing.expert_idx_BLR, -1)
    if routing.token_idx_BEC is not None:
      y_BLD, stats = self._expert_choice(h_BLD, routing, weight_BL)
    elif routing.capacity:
      y_BLD, stats = self._capacity(h_BLD, routing, weight_BL)
    else:
      y_BLD, stats = self._dropless(h_BLD, routing, weight_BL)
    if routing.passthrough_BL is not None:
      y_BLD = y_BLD + (routing.passthrough_BL[..., None] * h_BLD).astype(y_BLD.dtype)
    if routing.probs_BLE is not None:
      p = routing.probs_BLE
      entropy_BL = -jnp.sum(p * jnp.log(jnp.maximum(p, 1e-30)), axis=-1)
      stats["moe/router_entropy"] = _mean(entropy_BL, weight_BL)
    return y_BLD, {**routing.aux, **stats}

  def _weights(self, dtype):
    weights = self.experts.weights(dtype)
    return weights, (_EXPERTS,) * len(weights)

  def _capacity(self, h_BLD, routing: Routing, weight_BL):
    b, l, _ = h_BLD.shape
    e, c, k = self.num_experts, routing.capacity, routing.expert_idx_BLR.shape[-1]

    def local(h_BLD, expert_idx_BLR, gate_BLR, *weights):
      b, l, d = h_BLD.shape
      # One dispatch over the shard's B x L tokens with B x E "virtual experts" (expert e of
      # group b is b * E + e): slots still go first come, first served in (rank, token)
      # order within each group, exactly as routing each group alone, without a vmap.
      offset_BLR = (jnp.arange(b) * e)[:, None, None]
      virtual_BLR = jnp.where(expert_idx_BLR >= 0, expert_idx_BLR + offset_BLR, -1)
      x_GCD, info = expert_dispatch.dispatch(
          h_BLD.reshape(b * l, d), virtual_BLR.reshape(b * l, k),
          gate_BLR.reshape(b * l, k).astype(h_BLD.dtype), b * e, c, backend=self.backend)
      y_BECD = run_experts(x_GCD.reshape(b, e, c, d), self.activation, *weights)
      y_TD = expert_dispatch.combine(y_BECD.reshape(b * e, c, d), info, None,
                                     backend=self.backend)
      return y_TD.reshape(b, l, d), info.slot_TR.reshape(b, l, k)

    weights, weight_axes = self._weights(h_BLD.dtype)
    y_BLD, slot_BLR = sharding.per_shard(
        local, (_BATCH3,) * 3 + weight_axes, (_BATCH3, _BATCH3))(
            h_BLD, routing.expert_idx_BLR, routing.gate_BLR, *weights)
    # Dropped: choices of a real expert that found it full (a no-op choice is not a drop).
    chosen_BLR = (routing.expert_idx_BLR >= 0).astype(jnp.float32) * weight_BL[..., None]
    dropped_BLR = (slot_BLR < 0) * chosen_BLR
    stats = {"moe/dropped": jnp.sum(dropped_BLR) / jnp.maximum(jnp.sum(chosen_BLR), 1.0)}
    return y_BLD, {**stats, **_load_stats(routing.expert_idx_BLR, weight_BL, e)}

  def _dropless(self, h_BLD, routing: Routing, weight_BL):
    e = self.num_experts

    def local(h_BLD, expert_idx_BLR, gate_BLR, *weights):
      # Without a capacity the grouping does not matter: route the shard's tokens at once.
      b, l, d = h_BLD.shape
      k = expert_idx_BLR.shape[-1]
      x_TD = h_BLD.reshape(b * l, d)
      idx_TR, gate_TR = expert_idx_BLR.reshape(b * l, k), gate_BLR.reshape(b * l, k)
      n = sharding.expert_shards()
      if n > 1:  # the expert axis's tokens meet this chip's E / n experts; every token's
        # outputs are summed back onto its own chip (all-gather, then reduce-scatter)
        x_TD, idx_TR, gate_TR = (sharding.all_gather_experts(a) for a in (x_TD, idx_TR, gate_TR))
        first = sharding.expert_shard_index() * (e // n)
        mine_TR = (idx_TR >= first) & (idx_TR < first + e // n)
        idx_TR = jnp.where(mine_TR, idx_TR - first, -1)
      w_in, w_out, *w_gate = weights
      y_TD = dropless.dropless_moe(
          x_TD, idx_TR, gate_TR.astype(h_BLD.dtype), w_in, w_out,
          activation=ACTIVATIONS[self.activation], w_gate_EDF=w_gate[0] if w_gate else None,
          backend=self.backend)
      if n > 1:
        y_TD = sharding.reduce_scatter_experts(y_TD)
      return y_TD.reshape(b, l, d)

    weights, weight_axes = self._weights(h_BLD.dtype)
    # megablox's gmm does not declare how its output varies over the mesh: no vma check.
    y_BLD = sharding.per_shard(local, (_BATCH3,) * 3 + weight_axes, _BATCH3, check_vma=False)(
        h_BLD, routing.expert_idx_BLR, routing.gate_BLR, *weights)
    stats = {"moe/dropped": jnp.zeros((), jnp.float32)}
    return y_BLD, {**stats, **_load_stats(routing.expert_idx_BLR, weight_BL, e)}

  def _expert_choice(self, h_BLD, routing: Routing, weight_BL):
    b, l, _ = h_BLD.shape
    e, c = routing.token_idx_BEC.shape[1:]

    def local(h_BLD, token_idx_BEC, gate_BEC, *weights):
      b, l, d = h_BLD.shape
      # Groups flattened as in `_capacity`: expert e of group b picks tokens b * L + t.
      token_GC = (token_idx_BEC + (jnp.arange(b) * l)[:, None, None]).reshape(b * e, c)
      x_GCD, info = expert_dispatch.expert_choice_dispatch(
          h_BLD.reshape(b * l, d), token_GC, gate_BEC.reshape(b * e, c).astype(h_BLD.dtype),
          backend=self.backend)
      y_BECD = run_experts(x_GCD.reshape(b, e, c, d), self.activation, *weights)
      return expert_dispatch.combine(y_BECD.reshape(b * e, c, d), info, None,
                                     backend=self.backend).reshape(b, l, d)

    weights, weight_axes = self._weights(h_BLD.dtype)
    y_BLD = sharding.per_shard(local, (_BATCH3,) * 3 + weight_axes, _BATCH3)(
        h_BLD, routing.token_idx_BEC, routing.gate_BEC, *weights)
    taken_BL = jnp.zeros((b, l), jnp.float32).at[
        jnp.arange(b)[:, None, None], routing.token_idx_BEC].add(1.0)
    stats = {"moe/dropped": _mean((taken_BL == 0).astype(jnp.float32), weight_BL),
             "moe/load_max": jnp.ones((), jnp.float32),  # every expert fills its C slots
             "moe/load_min": jnp.ones((), jnp.float32),
             "moe/expert_load": jnp.ones((e,), jnp.float32)}
    return y_BLD, stats


def _mean(x_BL, weight_BL):
  return jnp.sum(x_BL * weight_BL) / jnp.maximum(jnp.sum(weight_BL), 1.0)


def _load_stats(expert_idx_BLR, weight_BL, num_experts: int) -> dict:
  """Every expert's load (its routed assignments of real tokens, before any capacity drop)
  as a multiple of the mean load, [E] ("moe/expert_load", the load histogram), and its
  extremes. Choices of no expert (index -1, MoDE's no-op experts) count for none."""
  counts_E = jnp.sum(jax.nn.one_hot(expert_idx_BLR, num_experts) * weight_BL[..., None, None],
                     axis=(0, 1, 2))
  load_E = counts_E * num_experts / jnp.maximum(jnp.sum(counts_E), 1.0)
  return {"moe/load_max": jnp.max(load_E), "moe/load_min": jnp.min(load_E),
          "moe/expert_load": load_E}


class MoeBlock(nnx.Module):
  """x + Attn(Norm(x)), then x + MoE(Norm(x)); aux: the router's losses and statistics.

  With `moe.output_norm` the MoE output is normalised before the add (x + Norm(MoE(...))),
  the extra norm Krajewski et al. 2024 found to matter for granularity > 1.
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.rate = cfg.dropout
    self.attn_norm, self.attn = Norm(cfg, rngs=rngs), Attention(cfg, rngs=rngs)
    self.mlp_norm, self.moe = Norm(cfg, rngs=rngs), MoeMLP(cfg, rngs=rngs)
    self.output_norm = Norm(cfg, rngs=rngs) if cfg.moe.output_norm else None

  def __call__(self, x_BLD, ctx: Context):
    x_BLD = x_BLD + dropout(self.attn(self.attn_norm(x_BLD), ctx), self.rate, ctx.rng, 0)
    y_BLD, aux = self.moe(self.mlp_norm(x_BLD), ctx)
    if self.output_norm is not None:
      y_BLD = self.output_norm(y_BLD)
    x_BLD = x_BLD + dropout(y_BLD, self.rate, ctx.rng, 1)
    return sharding.constrain(x_BLD, ("batch", "length", "act_embed")), aux


# ---- accounting ---------------------------------------------------------------------------


def routing_flops(cfg: ModelConfig, *, train: bool) -> float:
  """Krajewski et al.'s routing cost per token: c_r x d x (number of experts), c_r = 14 in
  training and 6 forward; Hash layers have no router logits (8 and 4)."""
  learned = cfg.moe.router != "hash"
  per = (14 if learned else 8) if train else (6 if learned else 4)
  return per * cfg.d_model * cfg.moe.num_choices  # no-op experts are router columns too


def _expert_flops(cfg: ModelConfig) -> float:
  return experts_per_token(cfg) * flops.mlp_flops(cfg, expert_hidden(cfg))


def moe_block_flops(cfg: ModelConfig, seq_len: int) -> float:
  return (flops.attention_flops(cfg, seq_len) + _expert_flops(cfg)
          + routing_flops(cfg, train=False))


def moe_block_train_flops(cfg: ModelConfig, seq_len: int) -> float:
  return (3 * (flops.attention_flops(cfg, seq_len) + _expert_flops(cfg))
          + routing_flops(cfg, train=True))


def moe_inactive_params(cfg: ModelConfig) -> float:
  """Expert parameters a token does not use: (E - experts per token) experts."""
  per_expert = flops.mlp_matrices(cfg) * cfg.d_model * expert_hidden(cfg)
  return (cfg.moe.num_experts - experts_per_token(cfg)) * per_expert


# ---- options, preparation ------------------------------------------------------------------


def validate(cfg) -> None:
  """Router kind, expert counts, capacity, hash map; BASE's equal split of each group."""
  mo, p = cfg.model.moe, "model.moe."
  one_of(p + "router", mo.router, tuple(ROUTERS))
  positive(p + "num_experts", mo.num_experts)
  if mo.router in ("switch", "base", "hash") and mo.top_k != 1:
    raise ConfigError(p + "top_k", mo.top_k, f"1 with {p}router={mo.router!r}")
  if mo.router == "topk" and not 2 <= mo.top_k <= mo.num_experts:
    raise ConfigError(p + "top_k", mo.top_k,
                      f"2 <= top_k <= {p}num_experts={mo.num_experts} with router 'topk'")
  if mo.router == "expert_choice" and mo.top_k < 1:
    raise ConfigError(p + "top_k", mo.top_k, ">= 1")
  positive(p + "capacity_factor", mo.capacity_factor, allow_zero=True)
  if mo.capacity_factor == 0 and mo.router == "expert_choice":
    raise ConfigError(p + "capacity_factor", 0.0,
                      "> 0 with router 'expert_choice' (0, dropless, is for token choice)")
  positive(p + "granularity", mo.granularity)
  if cfg.model.hidden_size % mo.granularity:
    raise ConfigError(p + "granularity", mo.granularity,
                      f"a divisor of the MLP hidden size {cfg.model.hidden_size}")
  positive(p + "aux_loss_weight", mo.aux_loss_weight, allow_zero=True)
  positive(p + "z_loss_weight", mo.z_loss_weight, allow_zero=True)
  positive(p + "noop_experts", mo.noop_experts, allow_zero=True)
  if mo.noop_experts and mo.router not in ("switch", "topk"):
    raise ConfigError(p + "noop_experts", mo.noop_experts,
                      f"0 with {p}router={mo.router!r} (no-op experts need 'switch' or 'topk')")
  if mo.router == "topk" and mo.top_k > mo.num_choices:
    raise ConfigError(p + "top_k", mo.top_k, f"<= {p}num_experts + {p}noop_experts")
  one_of(p + "hash_kind", mo.hash_kind, HASH_KINDS)
  if mo.hash_frequencies and not os.path.isfile(mo.hash_frequencies):
    raise ConfigError(p + "hash_frequencies", mo.hash_frequencies, "an existing .npy file, or ''")
  one_of(p + "backend", mo.backend, BACKENDS)
  shards = cfg.mesh.expert
  if shards > 1 and routes_experts(cfg.model) and mo.num_experts % shards:
    raise ConfigError(p + "num_experts", mo.num_experts,
                      f"a multiple of mesh.expert={shards} (each chip of the expert axis "
                      "holds num_experts / mesh.expert experts)")
  if mo.router == "base" and "moe" in cfg.model.pattern and cfg.seq_len % mo.num_experts:
    raise ConfigError(p + "num_experts", mo.num_experts,
                      f"a divisor of the seq_len={cfg.seq_len} tokens a block 'moe' routes "
                      "with router 'base' (BASE gives each expert an equal share)")


def routes_experts(model_cfg: ModelConfig) -> bool:
  """Some block of the pattern reads the `moe` options (an MoE layer, or one inside MoDE)."""
  return any("moe" in registry.block(kind).uses for kind in set(model_cfg.pattern))


def prepare(cfg, tokenizer, echo):
  """A balanced Hash layer without a counts file gets the training corpus's token counts
  (Roller et al. 2021 balance by training-data frequency); config.json records the file."""
  mo = cfg.model.moe
  if not (routes_experts(cfg.model) and mo.router == "hash" and mo.hash_kind == "balanced"
          and not mo.hash_frequencies):
    return cfg
  path = token_counts.train_token_counts(cfg.data, tokenizer)
  echo(f"balanced hash: token counts of the training corpus in {path}")
  moe = dataclasses.replace(mo, hash_frequencies=path)
  return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, moe=moe))


def figures(run, directory: str) -> list[str]:
  """Each MoE layer's expert loads over training, from the run's metrics.jsonl."""
  path = os.path.join(run.workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    return []
  loads: dict[str, list] = {}
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      for key, value in record.items():
        if key.endswith("/moe/expert_load"):
          loads.setdefault(key.split("/")[0], []).append((record["step"], value))
  paths = []
  for layer, series in sorted(loads.items()):
    out = os.path.join(directory, f"expert_load_{layer}.png")
    plotting.expert_loads([s for s, _ in series], [v for _, v in series], out,
                          title=f"{layer} expert load, {os.path.basename(run.workdir)}")
    paths.append(out)
  return paths


FAMILY = registry.register(registry.Family(
    name="mixture_of_experts",
    options={"moe": MoeConfig},
    blocks=(registry.BlockKind(
        "moe", MoeBlock, moe_block_flops, moe_block_train_flops,
        inactive_params=moe_inactive_params, uses=("moe",), flops_rtol=0.03,
        example={"pattern": ("dense", "moe"), "moe": {"num_experts": 4, "capacity_factor": 1.0}},
        decode_example={"moe": {"capacity_factor": 0.0}}),),
    validate=validate,
    prepare=prepare,
    figures=figures,
    local_fields=("moe.hash_frequencies",),
))
