"""Ladder and Staircase: one transformer applied repeatedly, more compute at equal parameters.

Ju et al. 2021, "Staircase Attention for Recurrent Processing of Sequences"
(arXiv:2106.04279); official code: facebookresearch/transformer-sequential,
models/staircase.py. Ladder also with Hash layers in Roller et al. 2021 (arXiv:2106.04426).

Ladder (stack "ladder"): the whole N-layer stack T applied k = `model.ladder.ladder_size`
times to the full sequence with the same weights, h <- T(h) k times. Parameters stay
those of T; FLOPs grow k-fold. Any block pattern works (the plain stack is reused).

Staircase (stack "staircase"): the sequence is cut into chunks of F = `forward_size` tokens;
K = S / F with S = `staircase_size`. At step t one shared N-layer transformer runs on the
S tokens in flight,

    h_0 = [top-layer outputs of step t-1 for chunks t-K+1 .. t-1 ; embeddings of chunk t],

layer 1 attending over [cache_1 ; h_0] and layer l+1 over [cache_{l+1} ; h_l]. A chunk enters
as embeddings and leaves after K passes: the oldest chunk's top-layer output at step t is
the output for chunk t-K+1. When it leaves, its keys and values at every layer join that
layer's cache, which keeps the last `memory` tokens (Transformer-XL style; 0: attention only
among the chunks in flight). Attention is causal by position, respects packed segments,
and reaches at most `attention_span` positions back (0: no limit beyond the cache). The
official code caches a layer's outputs as that layer's keys; here a layer's cache holds
what that layer attended to (its inputs, as keys and values), so the attention pattern of
every layer is the same, and keys are not projected again.

Training runs the whole schedule over the training sequence inside one forward (a
`lax.scan` over the n + K - 1 steps), returning each chunk's logits from the step that
emits it. Every output depends only on tokens at or before it, so autoregressive evaluation
is the same forward on the prefix (`next_token_logits`). Cost: every token is processed K
times (plus K - 1 partly empty steps at the end), each time against up to memory + S keys.
"""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from zoo import registry, sharding
from zoo.config import ConfigError, ModelConfig, one_of, positive
from zoo.models import flops
from zoo.models.parts import Attention, Context, attention_mask, dot_attention, dropout, rotary
from zoo.models.transformer import REMAT_POLICIES, DenseBlock, Stack

@dataclasses.dataclass(frozen=True)
class LadderConfig:
  """Options of stack "ladder" (`model.ladder`)."""

  ladder_size: int = 2  # times the whole stack is applied


@dataclasses.dataclass(frozen=True)
class StaircaseConfig:
  """Options of stack "staircase" (`model.staircase`); defaults: the paper's algorithmic
  setting."""

  forward_size: int = 64  # F: new tokens per step
  staircase_size: int = 128  # S: tokens per pass (S / F passes per chunk)
  memory: int = 128  # cached tokens per layer from chunks already emitted (0: none)
  attention_span: int = 128  # how far back (positions) a query may attend (0: no limit)


# `lax.scan` unroll of the staircase steps. XLA's cost analysis counts a loop body once, so
# `every_step_unrolled` sets True for a FLOP count that sees every step.
SCAN_UNROLL: int | bool = 1


@contextlib.contextmanager
def every_step_unrolled():
  global SCAN_UNROLL
  saved, SCAN_UNROLL = SCAN_UNROLL, True
  try:
    yield
  finally:
    SCAN_UNROLL = saved


def _refuse_decoding_cache(stack: nnx.Module) -> None:
  """A KV cache holds one set of keys per attention layer, but these stacks run each layer
  more than once per token: decode by recomputing the prefix instead."""
  for _, module in nnx.iter_modules(stack):
    if isinstance(module, Attention) and getattr(module, "cache_k", None) is not None:
      raise ValueError(
          f"{type(stack).__name__} stack: KV-cache decoding is not supported; use "
          "zoo.families.recurrent.next_token_logits (recomputes the prefix)")


class Ladder(nnx.Module):
  """The plain stack applied `ladder_size` times with shared weights."""


  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.passes = cfg.ladder.ladder_size
    self.depth = cfg.num_layers
    self.stack = Stack(cfg, rngs=rngs)

  def __call__(self, x_BLD, ctx: Context):
    _refuse_decoding_cache(self)
    aux = {}
    # Unrolled: ladder sizes are small, and XLA's cost analysis then sees every pass.
    for p in range(self.passes):
      x_BLD, pass_aux = self.stack(x_BLD, ctx.for_layer(p))
      for key, value in pass_aux.items():  # pass p's layer i is layer p * N + i
        layer, name = key.split("/", 1)
        aux[f"layer_{p * self.depth + int(layer.removeprefix('layer_'))}/{name}"] = value
    return x_BLD, aux


def ladder_flops(cfg: ModelConfig, seq_len: int, block_flops) -> float:
  return cfg.ladder.ladder_size * flops.plain_stack_flops(cfg, seq_len, block_flops)


# ----------------------------------------------------------------------------------------
# Staircase


def _layer_with_memory(block: DenseBlock, cfg: ModelConfig, x_BSD, pos_BS, seg_BS, mem, rng):
  """A dense block whose attention also sees cached keys/values `mem` (k, v, pos, seg).

  Returns the block output and this layer's keys and values of `x_BSD`.
  """
  dtype = x_BSD.dtype
  attn = block.attn
  qkv = jnp.einsum("bsd,dthk->tbshk", block.attn_norm(x_BSD), attn.qkv_D3HK[...].astype(dtype))
  q = rotary(qkv[0], pos_BS, cfg.rope_base)
  k = rotary(qkv[1], pos_BS, cfg.rope_base)
  v = qkv[2]
  mem_k, mem_v, mem_pos, mem_seg = mem
  key_pos = jnp.concatenate([mem_pos, pos_BS], axis=1)
  mask = attention_mask(pos_BS, seg_BS, key_pos, jnp.concatenate([mem_seg, seg_BS], axis=1))
  span = cfg.staircase.attention_span
  if span:
    mask &= (pos_BS[:, :, None] - key_pos[:, None, :] < span)[:, None]
  out = dot_attention(q, jnp.concatenate([mem_k, k], axis=1),
                      jnp.concatenate([mem_v, v], axis=1), mask)
  out = jnp.einsum("bshk,hkd->bsd", out, attn.out_HKD[...].astype(dtype))
  x_BSD = x_BSD + dropout(out, cfg.dropout, rng, 0)
  x_BSD = x_BSD + dropout(block.mlp(block.mlp_norm(x_BSD)), cfg.dropout, rng, 1)
  return sharding.constrain(x_BSD, ("batch", "length", "act_embed")), (k, v)


def _chunks(x, n_steps: int, forward: int):
  """[B, n*F, ...] -> [n_steps, B, F, ...], padding steps past the end with zeros."""
  b, length = x.shape[:2]
  chunks = jnp.swapaxes(x.reshape(b, length // forward, forward, *x.shape[2:]), 0, 1)
  extra = n_steps - chunks.shape[0]
  return jnp.pad(chunks, [(0, extra)] + [(0, 0)] * (chunks.ndim - 1))


def _empty_carry(cfg: ModelConfig, b: int, d: int, dtype):
  """(in-flight x, pos, seg; cached k, v per layer; cached pos, seg), all empty (segment 0)."""
  sc = cfg.staircase
  flight = sc.staircase_size - sc.forward_size  # tokens staying in flight after a step
  memory, h, k = sc.memory, cfg.num_heads, cfg.head_size
  return (jnp.zeros((b, flight, d), dtype), jnp.zeros((b, flight), jnp.int32),
          jnp.zeros((b, flight), jnp.int32),
          jnp.zeros((cfg.num_layers, b, memory, h, k), dtype),
          jnp.zeros((cfg.num_layers, b, memory, h, k), dtype),
          jnp.zeros((b, memory), jnp.int32), jnp.zeros((b, memory), jnp.int32))


def _step(blocks, cfg: ModelConfig, carry, inputs, rng):
  """One staircase step: every layer on [in flight ; new chunk]; the oldest chunk leaves."""
  f, memory = cfg.staircase.forward_size, cfg.staircase.memory
  fx, fpos, fseg, mem_k, mem_v, mem_pos, mem_seg = carry
  new_x, new_pos, new_seg, t = inputs
  x_BSD = jnp.concatenate([fx, new_x], axis=1)
  pos_BS = jnp.concatenate([fpos, new_pos], axis=1)
  seg_BS = jnp.concatenate([fseg, new_seg], axis=1)
  rng = None if rng is None else jax.random.fold_in(rng, t)
  leaving_k, leaving_v = [], []
  for i, block in enumerate(blocks):
    layer_rng = None if rng is None else jax.random.fold_in(rng, i)
    mem = (mem_k[i], mem_v[i], mem_pos, mem_seg)
    x_BSD, (k, v) = _layer_with_memory(block, cfg, x_BSD, pos_BS, seg_BS, mem, layer_rng)
    leaving_k.append(k[:, :f])
    leaving_v.append(v[:, :f])
  if memory:  # the leaving chunk's keys and values join each layer's cache
    mem_k = jnp.concatenate([mem_k[:, :, f:], jnp.stack(leaving_k)], axis=2)
    mem_v = jnp.concatenate([mem_v[:, :, f:], jnp.stack(leaving_v)], axis=2)
    mem_pos = jnp.concatenate([mem_pos[:, f:], pos_BS[:, :f]], axis=1)
    mem_seg = jnp.concatenate([mem_seg[:, f:], seg_BS[:, :f]], axis=1)
  carry = (x_BSD[:, f:], pos_BS[:, f:], seg_BS[:, f:], mem_k, mem_v, mem_pos, mem_seg)
  return carry, x_BSD[:, :f]  # the oldest chunk, after its last pass


class Staircase(nnx.Module):
  """N dense layers (the same parameters as the plain stack) run on a staircase schedule."""


  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.blocks = nnx.List([DenseBlock(cfg, rngs=rngs) for _ in range(cfg.num_layers)])

  def __call__(self, x_BLD, ctx: Context):
    _refuse_decoding_cache(self)
    cfg = self.cfg
    f = cfg.staircase.forward_size
    passes = cfg.staircase.staircase_size // f
    b, length, d = x_BLD.shape
    n = -(-length // f)
    pad = ((0, 0), (0, n * f - length))  # padding tokens are segment 0: never attended to
    steps = n + passes - 1  # the last chunk enters at step n - 1 and leaves K - 1 steps later
    xs = (_chunks(jnp.pad(x_BLD, pad + ((0, 0),)), steps, f),
          _chunks(jnp.pad(ctx.positions_BL, pad).astype(jnp.int32), steps, f),
          _chunks(jnp.pad(ctx.segment_ids_BL, pad).astype(jnp.int32), steps, f),
          jnp.arange(steps))
    graphdef, state = nnx.split(self.blocks)

    def step(carry, inputs):
      return _step(nnx.merge(graphdef, state), cfg, carry, inputs, ctx.rng)

    if cfg.remat != "none":
      step = jax.checkpoint(step, policy=REMAT_POLICIES[cfg.remat])
    carry = _empty_carry(cfg, b, d, x_BLD.dtype)
    _, out = jax.lax.scan(step, carry, xs, unroll=SCAN_UNROLL)
    # Chunk j leaves at step j + K - 1.
    out_BLD = jnp.swapaxes(out[passes - 1:], 0, 1).reshape(b, n * f, d)[:, :length]
    return out_BLD, {}


def staircase_flops(cfg: ModelConfig, seq_len: int, block_flops) -> float:
  """(n + K - 1) steps of S queries over memory + S keys, per token of the sequence."""
  sc = cfg.staircase
  passes = sc.staircase_size // sc.forward_size
  n = -(-seq_len // sc.forward_size)
  queries = (n + passes - 1) * sc.staircase_size / seq_len
  keys = sc.memory + sc.staircase_size
  return queries * sum(block_flops(kind, keys) for kind in cfg.layer_kinds)


def next_token_logits(model, tokens_BL, positions_BL=None, segment_ids_BL=None):
  """Logits [B, V] for the token after `tokens_BL`, computed causally from the prefix alone.

  Works for any stack: outputs depend only on earlier tokens, so running the decoder on the
  prefix and reading its last position is exact (for Staircase, the chunk schedule of a
  partial last chunk pads it with segment-0 tokens nobody attends to).
  """
  logits, _ = model(tokens_BL, positions_BL, segment_ids_BL)
  return logits[:, -1]


def validate(cfg) -> None:
  m = cfg.model
  positive("model.ladder.ladder_size", m.ladder.ladder_size)
  sc, scp = m.staircase, "model.staircase."
  positive(scp + "forward_size", sc.forward_size)
  positive(scp + "staircase_size", sc.staircase_size)
  if sc.staircase_size % sc.forward_size:
    raise ConfigError(scp + "staircase_size", sc.staircase_size,
                      f"a multiple of {scp}forward_size={sc.forward_size}")
  positive(scp + "memory", sc.memory, allow_zero=True)
  if sc.memory % sc.forward_size:
    raise ConfigError(scp + "memory", sc.memory,
                      f"a multiple of {scp}forward_size={sc.forward_size} (0: no memory)")
  positive(scp + "attention_span", sc.attention_span, allow_zero=True)
  if m.stack == "staircase":
    for kind in m.pattern:
      one_of("model.pattern", kind, ("dense",))  # layers attend over a cached memory
    if m.scan_layers:
      raise ConfigError("model.scan_layers", True, "False with model.stack='staircase'")


FAMILY = registry.register(registry.Family(
    name="recurrent",
    options={"ladder": LadderConfig, "staircase": StaircaseConfig},
    stacks=(
        registry.StackKind("ladder", Ladder, ladder_flops, kv_cache=False,
                           example={"stack": "ladder", "pattern": ("dense",)}),
        registry.StackKind("staircase", Staircase, staircase_flops, kv_cache=False,
                           cost_analysis_context=every_step_unrolled,
                           example={"stack": "staircase", "pattern": ("dense",),
                                    "staircase": {"forward_size": 4, "staircase_size": 8,
                                                  "memory": 4, "attention_span": 8}}),
    ),
    validate=validate,
))
