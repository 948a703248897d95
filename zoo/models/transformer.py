"""The decoder backbone every family plugs into: the plain stack, the decoder, the dense block.

Block and stack kinds are looked up in zoo/registry.py (the families register them). The stack
tiles `model.pattern` (block kinds from `registry`) over the depth. One
repetition of the pattern is a `Unit`; with `model.scan_layers` the units are stacked
(leading `layers` axis) and applied with `jax.lax.scan`, so compile time does not grow
with depth. `model.remat` rematerialises each unit in the backward pass.
Dense block: pre-norm GPT (Radford et al. 2019) with rotary attention (Su et al. 2021).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo import registry, sharding
from zoo.config import ModelConfig
from zoo.models.parts import (DTYPES, MLP, Attention, Context, Embed, KVCache, Norm, Unembed,
                              dropout)


class DenseBlock(nnx.Module):
  """x + Attn(Norm(x)), then x + MLP(Norm(x))."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.rate = cfg.dropout
    self.attn_norm, self.attn = Norm(cfg, rngs=rngs), Attention(cfg, rngs=rngs)
    self.mlp_norm, self.mlp = Norm(cfg, rngs=rngs), MLP(cfg, rngs=rngs)

  def __call__(self, x_BLD, ctx: Context):
    x_BLD = x_BLD + dropout(self.attn(self.attn_norm(x_BLD), ctx), self.rate, ctx.rng, 0)
    x_BLD = x_BLD + dropout(self.mlp(self.mlp_norm(x_BLD)), self.rate, ctx.rng, 1)
    return sharding.constrain(x_BLD, ("batch", "length", "act_embed")), {}


class Unit(nnx.Module):
  """One repetition of the block pattern."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.blocks = nnx.List([registry.block(k).build(cfg, rngs=rngs) for k in cfg.pattern])

  def __call__(self, x_BLD, ctx: Context):
    aux = {}
    for pos, block in enumerate(self.blocks):
      x_BLD, block_aux = block(x_BLD, ctx.for_layer(pos))
      aux.update({f"{pos}/{name}": value for name, value in block_aux.items()})
    return x_BLD, aux


REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def _unit_fn(graphdef, remat: str):
  """A pure function (unit_state, x, ctx) -> (x, aux, kv caches), rematerialised if asked.

  The updated decoding caches are returned because the unit is rebuilt from its state
  here; outside decoding they are empty.
  """

  def apply(state, x_BLD, ctx):
    unit = nnx.merge(graphdef, state)
    x_BLD, aux = unit(x_BLD, ctx)
    return x_BLD, aux, nnx.state(unit, KVCache)

  if remat == "none":
    return apply
  return jax.checkpoint(apply, policy=REMAT_POLICIES[remat], static_argnums=())


class Stack(nnx.Module):
  """`num_layers / len(pattern)` units, unrolled or scanned, applied once."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.period = len(cfg.pattern)
    self.repeats, self.tail = divmod(cfg.num_layers, self.period)
    if cfg.scan_layers:
      @nnx.split_rngs(splits=self.repeats)
      @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
      def stacked(rngs):
        return Unit(cfg, rngs=rngs)
      self.units = stacked(rngs)
    else:
      self.units = nnx.List([Unit(cfg, rngs=rngs) for _ in range(self.repeats)])
    # Layers left over when the depth is not a multiple of the pattern length.
    self.tail_blocks = nnx.List(
        [registry.block(k).build(cfg, rngs=rngs) for k in cfg.pattern[: self.tail]])

  def __call__(self, x_BLD, ctx: Context):
    per_unit = []
    if self.cfg.scan_layers:
      graphdef, state = nnx.split(self.units)
      fn = _unit_fn(graphdef, self.cfg.remat)

      def body(x, inputs):
        unit_state, r = inputs
        x, aux, caches = fn(unit_state, x, ctx.for_layer(r))
        return x, (aux, caches)

      x_BLD, (stacked_aux, caches) = jax.lax.scan(
          body, x_BLD, (state, jnp.arange(self.repeats)))
      nnx.update(self.units, caches)
      per_unit = [jax.tree.map(lambda a, r=r: a[r], stacked_aux) for r in range(self.repeats)]
    else:
      for r, unit in enumerate(self.units):
        graphdef, state = nnx.split(unit)
        x_BLD, aux, caches = _unit_fn(graphdef, self.cfg.remat)(state, x_BLD, ctx.for_layer(r))
        nnx.update(unit, caches)
        per_unit.append(aux)
    tail_ctx = ctx.for_layer(self.repeats)
    tail_aux = {}
    for pos, block in enumerate(self.tail_blocks):
      x_BLD, block_aux = block(x_BLD, tail_ctx.for_layer(pos))
      tail_aux.update({f"{pos}/{name}": v for name, v in block_aux.items()})
    per_unit.append(tail_aux)
    return x_BLD, _per_layer(per_unit, self.period)


def _per_layer(per_unit: list[dict], period: int) -> dict:
  """{"<pos>/<name>"} of each unit -> {"layer_<i>/<name>"} with i the layer index."""
  out = {}
  for r, aux in enumerate(per_unit):
    for key, value in aux.items():
      pos, name = key.split("/", 1)
      out[f"layer_{r * period + int(pos)}/{name}"] = value
  return out


class Decoder(nnx.Module):
  """Embeddings, the block stack, a final norm and the output projection."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = Embed(cfg, rngs=rngs)
    self.stack = registry.stack(cfg.stack).build(cfg, rngs=rngs)
    self.final_norm = Norm(cfg, rngs=rngs)
    if not cfg.tie_embeddings:
      self.unembed = Unembed(cfg, rngs=rngs)

  def init_cache(self, batch: int, max_len: int) -> None:
    """Gives every attention layer an empty KV cache: later calls extend it (decoding)."""
    dtype = DTYPES[self.cfg.compute_dtype]
    for path, module in nnx.iter_modules(self):
      if isinstance(module, Attention):
        stacked = self.cfg.scan_layers and tuple(path[:2]) == ("stack", "units")
        module.init_cache(batch, max_len, dtype, (self.stack.repeats,) if stacked else ())

  def __call__(self, tokens_BL, positions_BL=None, segment_ids_BL=None, *, rng=None):
    """Returns float32 logits [B, L, V] and the blocks' aux dict (per layer).

    After `init_cache`, each call appends its tokens to the cache and attends over all
    cached tokens: pass the positions of the new tokens.
    """
    b, l = tokens_BL.shape
    if positions_BL is None:
      positions_BL = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l))
    if segment_ids_BL is None:
      segment_ids_BL = jnp.ones((b, l), jnp.int32)
    ctx = Context(positions_BL, segment_ids_BL, rng, tokens_BL=tokens_BL)
    x_BLD = self.embed(tokens_BL, DTYPES[self.cfg.compute_dtype])
    x_BLD = sharding.constrain(x_BLD, ("batch", "length", "act_embed"))
    x_BLD, aux = self.stack(x_BLD, ctx)
    x_BLD = self.final_norm(x_BLD)
    if self.cfg.tie_embeddings:
      logits = self.embed.attend(x_BLD)
    else:
      logits = self.unembed(x_BLD)
    return logits.astype(jnp.float32), aux


def aux_loss(aux: dict) -> jax.Array:
  """The sum of every block's auxiliary losses (keys containing 'aux_loss/')."""
  losses = [v for k, v in aux.items() if "/aux_loss/" in k]
  return sum(losses, jnp.zeros((), jnp.float32))
