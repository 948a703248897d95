"""Mixture-of-Depths: a dense block that processes only the top-k tokens of each sequence.

Raposo et al. 2024, "Mixture-of-Depths: Dynamically allocating compute in transformer-based
language models" (arXiv:2404.02258). A scalar router per token, in float32,

    r_i = w . x_i,

picks by expert choice the k = ceil(c L) tokens of each sequence (batch row) with the largest
r; only they enter the block (as queries *and* keys/values), in their original order, with
their original rotary positions and segment ids, and the block's update is scaled by the
router weight so that the router is on the gradient path:

    x_i <- x_i + r_i f_i(X~)   if r_i is among the top k of its row,
    x_i <- x_i                 otherwise,

where X~ are the kept tokens and f the dense block's residual update (attention then MLP).
Padding tokens (segment 0) are ranked below every real token. Expert choice needs no balance
loss, but top-k over the row looks at future tokens, so it cannot be used when sampling. The
two causal substitutes of the paper are both trained: (a) a BCE loss on the router logits
against the top-k decisions, `BCE(sigmoid(r_i), 1[i kept])`, and (b) a small MLP predictor on
`stop_gradient(x_i)` trained with the same BCE (so it does not change the LM). With a KV
cache (decoding) each token decides alone: predictor logit > 0, or r_i > threshold; this
path is exact but does not yet skip compute or cache slots for tokens routed around.
The multiplier is the raw r_i, as in the paper (no sigmoid): the kept tokens are those with
the largest r_i, and training is free to scale them.

`model.mod.routing = "stochastic"` is the paper's ablation: the top-k is taken over Gaussian
noise instead of r (r still scales the kept updates), which the paper finds much worse.
Best setting in the paper: capacity 12.5%, every other block, i.e. pattern ("dense", "mod").
FLOPs of a routed block per sequence token: attention projections and MLP scale with
c = k / L, attention scores with c^2 (kept queries times kept keys).

Kernels: the gather of the kept tokens and the weighted scatter back are
`pallas_kernels.route_gather` / `route_scatter` (`model.mod.backend`), run per shard of the
batch under `jax.shard_map` on a mesh (`row_kernels`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from pallas_kernels.route_gather import route_gather
from pallas_kernels.route_scatter import route_scatter
from zoo import plotting, registry, sharding
from zoo.config import ConfigError, ModelConfig, one_of, positive
from zoo.models.parts import Context, param


@dataclasses.dataclass(frozen=True)
class ModConfig:
  """Options of block "mod" (`model.mod`); staged MoDE uses them too."""

  capacity: float = 0.125  # c: fraction of each sequence's tokens a routed block processes
  routing: str = "learned"  # "learned": top-k of r = w.x; "stochastic": of Gaussian noise
  router_loss_weight: float = 0.01  # BCE of the router logits vs the top-k (method a)
  predictor_loss_weight: float = 0.1  # BCE of the causal MLP predictor (method b)
  predictor_hidden: int = 0  # the predictor's hidden width (0: d_model // 4)
  decode: str = "predictor"  # what decides causally when sampling: "predictor" or "router"
  decode_threshold: float = 0.0  # decode="router": r > threshold processes the token
  backend: str = ""  # row kernels: '' by platform, "xla", "pallas_tpu", "pallas_interpret"


ROUTING = ("learned", "stochastic")
DECODE = ("predictor", "router")
BACKENDS = ("", "xla", "pallas_tpu", "pallas_interpret")


def capacity_tokens(capacity: float, length: int) -> int:
  """k = ceil(c L), at least 1; the epsilon keeps 0.1 * 30 from rounding up to 4."""
  return min(length, max(1, math.ceil(capacity * length - 1e-9)))


def predictor_hidden(cfg: ModelConfig) -> int:
  return cfg.mod.predictor_hidden or max(cfg.d_model // 4, 1)


def top_k_positions(scores_BL, segment_ids_BL, k: int):
  """Sorted positions of the k largest scores of each row; padding ranks below real tokens."""
  ranked_BL = jnp.where(segment_ids_BL > 0, scores_BL, -jnp.inf)
  _, idx_BC = jax.lax.top_k(jax.lax.stop_gradient(ranked_BL), k)
  return jnp.sort(idx_BC, axis=-1)  # original order: causality by position stays right


def positions_to_mask(idx_BC, length: int):
  """[B, C] kept positions -> [B, L] booleans."""
  rows = jnp.arange(idx_BC.shape[0])[:, None]
  return jnp.zeros((idx_BC.shape[0], length), bool).at[rows, idx_BC].set(True)


def gather_context(ctx: Context, idx_BC) -> Context:
  """The kept tokens' context: every per-token field (positions, segment ids, token ids…)."""
  kept = {f.name: jnp.take_along_axis(getattr(ctx, f.name), idx_BC, axis=1)
          for f in dataclasses.fields(ctx)
          if f.name.endswith("_BL") and getattr(ctx, f.name) is not None}
  return dataclasses.replace(ctx, **kept)


def routing_noise(x_BLD, ctx: Context):
  """Gaussian scores for stochastic routing.

  The train step passes a key only when dropout is on; without one the key is hashed from
  the input's bits, so the choice still changes with every batch and every step.
  """
  if ctx.rng is not None:
    key = jax.random.fold_in(ctx.rng, 0x30D)
  else:
    bits = jax.lax.bitcast_convert_type(
        jax.lax.stop_gradient(x_BLD[..., 0]).astype(jnp.float32), jnp.uint32)
    key = jax.random.key(jnp.sum(bits, dtype=jnp.uint32))
  return jax.random.normal(key, x_BLD.shape[:2], jnp.float32)


def row_kernels(backend: str | None):
  """(gather, scatter) run per shard of the batch (`sharding.per_shard`: under
  jax.shard_map on a mesh, since XLA cannot partition a Mosaic kernel): each chip gathers
  and scatters its own rows' tokens."""
  rows3, rows2 = ("batch", None, None), ("batch", None)
  gather = sharding.per_shard(functools.partial(route_gather, backend=backend),
                              (rows3, rows2), rows3)
  scatter = sharding.per_shard(functools.partial(route_scatter, backend=backend),
                               (rows3, rows3, rows2, rows2), rows3)
  return gather, scatter


class Predictor(nnx.Module):
  """Method (b): a two-layer MLP giving a causal routing logit from stop-gradient inputs."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    d, h = cfg.d_model, predictor_hidden(cfg)
    # Inputs are RMS-normalised here, so unit-variance initialisation suits them.
    self.in_DH = param(rngs, (d, h), ("embed", "mlp"), d ** -0.5)
    self.bias_H = param(rngs, (h,), ("mlp",), 0.0)
    self.out_H = param(rngs, (h,), ("mlp",), h ** -0.5)
    self.bias_1 = param(rngs, (1,), (None,), 0.0)

  def __call__(self, x_BLD):
    x = jax.lax.stop_gradient(x_BLD).astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6)
    h_BLH = jax.nn.relu(jnp.einsum("bld,dh->blh", x, self.in_DH[...]) + self.bias_H[...])
    return jnp.einsum("blh,h->bl", h_BLH, self.out_H[...]) + self.bias_1[0]


def _masked_mean(v_BL, real_BL):
  return jnp.sum(v_BL * real_BL) / jnp.maximum(jnp.sum(real_BL), 1.0)


class MoDBlock(nnx.Module):
  """A block around which tokens are routed by capacity (see the module docstring).

  The routed block is `inner_kind` (a registered block kind; staged MoDE routes around an
  MoE block the same way), and its aux (an MoE router's losses) is passed on. Set `record
  = True` (the statistics and figures below do) to also return the [B, L] routing decisions as aux
  "routed_mask", for routing maps; training leaves it off.
  """

  inner_kind = "dense"

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.mod = cfg.mod
    self.block = registry.block(self.inner_kind).build(cfg, rngs=rngs)
    self.router_D = param(rngs, (cfg.d_model,), ("embed",), cfg.init_std)
    self.predictor = Predictor(cfg, rngs=rngs)
    self.record = False

  def __call__(self, x_BLD, ctx: Context):
    r_BL = jnp.einsum("bld,d->bl", x_BLD.astype(jnp.float32), self.router_D[...])
    # A KV cache means decoding: the routing decision must then be causal.
    if getattr(self.block.attn, "cache_k", None) is not None:
      return self._decode(x_BLD, r_BL, ctx)
    return self._route(x_BLD, r_BL, ctx)

  def _route(self, x_BLD, r_BL, ctx: Context):
    """Training and evaluation: expert-choice top-k over each row (not causal).

    The capacity is per batch row: a row packing several documents shares its k tokens
    among them, as the paper's sequences do. Compute is saved for real: the inner block
    runs on [B, k, D].
    """
    k = capacity_tokens(self.mod.capacity, x_BLD.shape[1])
    scores_BL = r_BL if self.mod.routing == "learned" else routing_noise(x_BLD, ctx)
    idx_BC = top_k_positions(scores_BL, ctx.segment_ids_BL, k)
    gather, scatter = row_kernels(self.mod.backend or None)
    x_BCD = gather(x_BLD, idx_BC)
    y_BCD, inner_aux = self.block(x_BCD, gather_context(ctx, idx_BC))
    w_BC = jnp.take_along_axis(r_BL, idx_BC, axis=1)
    out_BLD = scatter(x_BLD, y_BCD - x_BCD, w_BC, idx_BC)
    kept_BL = positions_to_mask(idx_BC, x_BLD.shape[1])
    return out_BLD, {**inner_aux, **self._aux(x_BLD, r_BL, kept_BL, ctx.segment_ids_BL)}

  def _aux(self, x_BLD, r_BL, kept_BL, segment_ids_BL) -> dict:
    """The two causal-routing losses (methods a and b) and routing statistics."""
    real_BL = (segment_ids_BL > 0).astype(jnp.float32)
    target_BL = kept_BL.astype(jnp.float32) * real_BL
    p_BL = self.predictor(x_BLD)
    router_bce = _masked_mean(optax.sigmoid_binary_cross_entropy(r_BL, target_BL), real_BL)
    predictor_bce = _masked_mean(
        optax.sigmoid_binary_cross_entropy(p_BL, target_BL), real_BL)
    mean = _masked_mean(r_BL, real_BL)
    aux = {
        "aux_loss/router_bce": self.mod.router_loss_weight * router_bce,
        "aux_loss/predictor_bce": self.mod.predictor_loss_weight * predictor_bce,
        "routed_fraction": _masked_mean(target_BL, real_BL),
        "router_mean": mean,
        "router_std": jnp.sqrt(_masked_mean((r_BL - mean) ** 2, real_BL)),
        "router_kept_mean": jnp.sum(r_BL * target_BL) / jnp.maximum(jnp.sum(target_BL), 1.0),
        "predictor_accuracy": _masked_mean(((p_BL > 0) == (target_BL > 0)).astype(
            jnp.float32), real_BL),
        "router_accuracy": _masked_mean(((r_BL > self.mod.decode_threshold) == (
            target_BL > 0)).astype(jnp.float32), real_BL),
    }
    if self.record:
      aux["routed_mask"] = target_BL
    return aux

  def _decode(self, x_BLD, r_BL, ctx: Context):
    """Sampling: each token decides from itself alone, so outputs at t ignore tokens after t.

    Skipping tokens get segment 0, so their keys, written to this block's cache, are never
    attended to (their slots stay empty); their own outputs are discarded. The cache layout
    thus stays one slot per token, shared by batch rows that route differently.
    """
    if self.mod.decode == "predictor":
      in_BL = self.predictor(x_BLD) > 0.0
    else:
      in_BL = r_BL > self.mod.decode_threshold
    in_BL = in_BL & (ctx.segment_ids_BL > 0)
    segments_BL = jnp.where(in_BL, ctx.segment_ids_BL, 0)
    y_BLD, inner_aux = self.block(x_BLD, dataclasses.replace(ctx, segment_ids_BL=segments_BL))
    update_BLD = r_BL[..., None] * (y_BLD - x_BLD).astype(jnp.float32)
    out_BLD = x_BLD.astype(jnp.float32) + jnp.where(in_BL[..., None], update_BLD, 0.0)
    real_BL = (ctx.segment_ids_BL > 0).astype(jnp.float32)
    aux = {**inner_aux, "routed_fraction": _masked_mean(in_BL.astype(jnp.float32), real_BL)}
    if self.record:
      aux["routed_mask"] = in_BL.astype(jnp.float32)
    return out_BLD.astype(x_BLD.dtype), aux


def routed_block_flops(cfg: ModelConfig, seq_len: int, inner_kind: str, *,
                       train: bool) -> float:
  """FLOPs per sequence token of a block routed around at capacity c = k / L.

  The inner block runs on a sequence of k tokens, so its attention projections and MLP
  cost c times theirs per sequence token and its scores c^2 times; then the router and
  the predictor (whose input is stop-gradient: no input gradient in training).
  """
  k = capacity_tokens(cfg.mod.capacity, seq_len)
  if train:
    inner = registry.block(inner_kind).train(cfg, k)
    return k / seq_len * inner + 3 * _router_flops(cfg) + 2 * predictor_flops(cfg)
  inner = registry.block(inner_kind).forward_flops(cfg, k)
  return k / seq_len * inner + _router_flops(cfg) + predictor_flops(cfg)


def mod_block_flops(cfg: ModelConfig, seq_len: int) -> float:
  """Forward FLOPs per sequence token: c (projections + MLP) + c^2 scores + router + predictor."""
  return routed_block_flops(cfg, seq_len, "dense", train=False)


def _router_flops(cfg: ModelConfig) -> float:
  return 2 * cfg.d_model


def predictor_flops(cfg: ModelConfig) -> float:
  h = predictor_hidden(cfg)
  return 2 * cfg.d_model * h + 2 * h


def mod_block_train_flops(cfg: ModelConfig, seq_len: int) -> float:
  """3 x forward, except the predictor: its input is stop-gradient, so no input gradient."""
  return routed_block_flops(cfg, seq_len, "dense", train=True)


def validate(cfg) -> None:
  mod, p = cfg.model.mod, "model.mod."
  if not 0.0 < mod.capacity <= 1.0:
    raise ConfigError(p + "capacity", mod.capacity, "0 < capacity <= 1")
  one_of(p + "routing", mod.routing, ROUTING)
  one_of(p + "decode", mod.decode, DECODE)
  positive(p + "router_loss_weight", mod.router_loss_weight, allow_zero=True)
  positive(p + "predictor_loss_weight", mod.predictor_loss_weight, allow_zero=True)
  positive(p + "predictor_hidden", mod.predictor_hidden, allow_zero=True)
  one_of(p + "backend", mod.backend, BACKENDS)


# ---- what eval.py reports and draws for a run with routed blocks ---------------------------

STATISTICS = ("routed_fraction", "predictor_accuracy", "router_accuracy", "router_mean",
              "router_std", "router_kept_mean")


def routed_blocks(model: nnx.Module) -> list[MoDBlock]:
  return [m for _, m in nnx.iter_modules(model) if isinstance(m, MoDBlock)]


def recorded_forward(model: nnx.Module):
  """A jitted `fn(batch) -> aux` whose routed layers also return their [B, L] "routed_mask"."""
  blocks = routed_blocks(model)
  for block in blocks:
    block.record = True
  graphdef, state = nnx.split(model)  # the graph keeps record=True; the model does not
  for block in blocks:
    block.record = False

  @jax.jit
  def forward(state, inputs, positions, segment_ids):
    return nnx.merge(graphdef, state)(inputs, positions, segment_ids)[1]

  return lambda b: forward(state, b["inputs"], b["positions"], b["segment_ids"])


def statistics(run, num_batches: int | None) -> dict:
  """Mean routing statistics over validation batches, overall ("mod_*") and per layer:
  the fraction of tokens processed, and how often the causal substitutes used for sampling
  (the predictor, the router logit against its threshold) agree with the top-k decisions."""
  model = run.model()
  if not routed_blocks(model):
    return {}
  forward = recorded_forward(model)
  sums, count = collections.defaultdict(float), 0
  with sharding.activate(run.mesh):
    for batch in run.eval_batches(num_batches):
      aux = jax.device_get(forward(sharding.global_batch(batch, run.mesh)))
      for key, value in aux.items():
        layer, name = key.split("/", 1)
        if name in STATISTICS:
          sums[(layer, name)] += float(value)
      count += 1
  layers = collections.defaultdict(dict)
  for (layer, name), total in sums.items():
    layers[layer][name] = total / max(count, 1)
  result = {f"mod_{name}": float(np.mean([s[name] for s in layers.values()]))
            for name in ("predictor_accuracy", "router_accuracy", "routed_fraction")}
  return {**result, "mod_layers": dict(layers)}


def routing_masks(run, num_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Top-k routing decisions (as in training) over the first validation sequence:
  ([layers, T] 1 processed / 0 routed around / nan a layer that processes every token,
  token ids [T], segment ids [T])."""
  forward = recorded_forward(run.model())
  batch = next(iter(run.eval_batches(1)))
  with sharding.activate(run.mesh):
    aux = jax.device_get(forward(sharding.global_batch(batch, run.mesh)))
  grid = np.full((run.cfg.model.num_layers, num_tokens), np.nan)
  for key, value in aux.items():
    if key.endswith("/routed_mask"):
      grid[int(key.split("/")[0][len("layer_"):])] = np.asarray(value)[0, :num_tokens]
  return grid, np.asarray(batch["inputs"])[0, :num_tokens], np.asarray(
      batch["segment_ids"])[0, :num_tokens]


def figures(run, directory: str, *, num_tokens: int = 64) -> list[str]:
  """The routing map (Raposo et al. 2024, figure 5): which tokens each layer processed."""
  model = run.model()
  if not routed_blocks(model):
    return []
  grid, tokens, segments = routing_masks(run, num_tokens)
  labels = [run.tokenizer.decode([int(t)]) for t in tokens]
  path = os.path.join(directory, "routing_map.png")
  plotting.routing_map(grid, labels, segments > 0, path,
                       title=f"Mixture-of-Depths routing, {os.path.basename(run.workdir)} "
                             f"step {run.step}")
  return [path]


FAMILY = registry.register(registry.Family(
    name="mixture_of_depths",
    options={"mod": ModConfig},
    blocks=(registry.BlockKind(
        "mod", MoDBlock, mod_block_flops, mod_block_train_flops, lookahead=True, uses=("mod",),
        flops_rtol=0.06,  # XLA drops part of the predictor (it only feeds an aux loss)
        example={"pattern": ("dense", "mod"), "mod": {"capacity": 0.5}}),),
    validate=validate,
    statistics=statistics,
    figures=figures,
))
