"""Shared transformer parts: norms, rotary positions, causal attention, MLP, embeddings.

Axis letters (zoo/__init__.py): B batch, L query length, S key length, D model width, H heads,
K head size, F MLP hidden, V vocabulary, T tokens (leading axes flattened). Parameters are
created with logical sharding names (`embed`, `heads`, `kv`, `mlp`, `vocab`); `zoo/sharding.py` maps them
to the mesh.
Rotary embeddings: Su et al. 2021, "RoFormer" (arXiv:2104.09864).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.config import ModelConfig

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Context:
  """What every block receives beside the residual stream `x_BLD`.

  positions_BL and segment_ids_BL describe packed sequences (segment 0 is padding);
  `rng` is the dropout key of this layer, None when deterministic. `tokens_BL` are the
  input token ids (Hash layers route on them), None where a caller has none.
  """

  positions_BL: jax.Array
  segment_ids_BL: jax.Array
  rng: jax.Array | None = None
  tokens_BL: jax.Array | None = None

  def for_layer(self, index) -> "Context":
    rng = None if self.rng is None else jax.random.fold_in(self.rng, index)
    return dataclasses.replace(self, rng=rng)


class Frozen(nnx.Variable):
  """A weight that is part of the model but never trained (no gradient, no optimizer state)."""


class StructuredParam(nnx.Param):
  """A trainable parameter of a structured layer that stands in for a dense matrix
  (accounting reports these, and the dense parameters they emulate, separately)."""


def annotated(value, logical, kind=nnx.Param) -> nnx.Variable:
  """A variable with logical sharding names; `zoo.sharding` places it on the mesh."""
  return kind(value, out_sharding=logical, eager_sharding=False)


def param(rngs: nnx.Rngs, shape, logical, std: float, kind=nnx.Param) -> nnx.Variable:
  """A normal(0, std) float32 parameter annotated with logical sharding names."""
  return annotated(std * jax.random.normal(rngs.params(), shape, jnp.float32), logical, kind)


def freeze(module: nnx.Module) -> nnx.Module:
  """Turns every `nnx.Param` directly held by `module` into `Frozen`, keeping its value
  and logical sharding names."""
  for name, value in list(vars(module).items()):
    if isinstance(value, nnx.Param):
      setattr(module, name, annotated(value.get_value(), value.out_sharding, kind=Frozen))
  return module


def dropout(x, rate: float, rng: jax.Array | None, salt: int):
  if rng is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(jax.random.fold_in(rng, salt), 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


class Norm(nnx.Module):
  """RMSNorm (Zhang & Sennrich 2019) or LayerNorm, computed in float32."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    del rngs
    self.kind = cfg.norm
    self.scale = annotated(jnp.ones((cfg.d_model,), jnp.float32), ("embed",))
    if cfg.norm == "layernorm":
      self.bias = annotated(jnp.zeros((cfg.d_model,), jnp.float32), ("embed",))

  def __call__(self, x_BLD):
    x = x_BLD.astype(jnp.float32)
    if self.kind == "layernorm":
      x = x - jnp.mean(x, axis=-1, keepdims=True)
    y = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6) * self.scale[...]
    if self.kind == "layernorm":
      y = y + self.bias[...]
    return y.astype(x_BLD.dtype)


def rotary(x_BLHK, positions_BL, base: float):
  """Rotates feature pairs (i, i + K/2) by position-dependent angles (RoFormer)."""
  half = x_BLHK.shape[-1] // 2
  freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle_BLK = positions_BL[..., None].astype(jnp.float32) * freq
  sin, cos = jnp.sin(angle_BLK)[:, :, None, :], jnp.cos(angle_BLK)[:, :, None, :]
  x1, x2 = jnp.split(x_BLHK.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BLHK.dtype)


def attention_mask(q_pos_BL, q_seg_BL, k_pos_BS, k_seg_BS):
  """[B, 1, L, S] True where query may attend to key: same segment and not in the future.

  Causality is by position, so the mask is right for packed sequences, for a subset of
  tokens (MoD keeps tokens in order with their original positions) and for a KV cache.
  """
  same = (q_seg_BL[:, :, None] == k_seg_BS[:, None, :]) & (k_seg_BS[:, None, :] > 0)
  past = k_pos_BS[:, None, :] <= q_pos_BL[:, :, None]
  return (same & past)[:, None]


def dot_attention(q_BLHK, k_BSHK, v_BSHK, mask_B1LS):
  """Softmax attention in float32 logits; fully masked rows (padding) give zeros."""
  scale = q_BLHK.shape[-1] ** -0.5
  logits = jnp.einsum("blhk,bshk->bhls", q_BLHK, k_BSHK).astype(jnp.float32) * scale
  logits = jnp.where(mask_B1LS, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  probs = jnp.where(mask_B1LS.any(-1, keepdims=True), probs, 0.0).astype(v_BSHK.dtype)
  return jnp.einsum("bhls,bshk->blhk", probs, v_BSHK)


class KVCache(nnx.Variable):
  """Keys and values of earlier tokens, for decoding; never trained and never checkpointed."""


class Attention(nnx.Module):
  """Multi-head causal self-attention with rotary positions and packed-segment masking."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    d, h, k = cfg.d_model, cfg.num_heads, cfg.head_size
    self.cfg = cfg
    self.qkv_D3HK = param(rngs, (d, 3, h, k), ("embed", None, "heads", "kv"), cfg.init_std)
    out_std = cfg.init_std / (2 * cfg.num_layers) ** 0.5
    self.out_HKD = param(rngs, (h, k, d), ("heads", "kv", "embed"), out_std)

  def init_cache(self, batch: int, max_len: int, dtype, lead: tuple[int, ...] = ()):
    """Empty key/value cache for decoding; `lead` is the stacked-layers axis under scan."""
    h, k = self.cfg.num_heads, self.cfg.head_size
    self.cache_k = KVCache(jnp.zeros((*lead, batch, max_len, h, k), dtype))
    self.cache_v = KVCache(jnp.zeros((*lead, batch, max_len, h, k), dtype))
    self.cache_pos = KVCache(jnp.zeros((*lead, batch, max_len), jnp.int32))
    self.cache_seg = KVCache(jnp.zeros((*lead, batch, max_len), jnp.int32))  # 0: empty slot
    self.cache_end = KVCache(jnp.zeros(lead, jnp.int32))

  def __call__(self, x_BLD, ctx: Context):
    dtype = x_BLD.dtype
    qkv = jnp.einsum("bld,dthk->tblhk", x_BLD, self.qkv_D3HK[...].astype(dtype))
    q, k, v = (rotary(qkv[0], ctx.positions_BL, self.cfg.rope_base),
               rotary(qkv[1], ctx.positions_BL, self.cfg.rope_base), qkv[2])
    k_pos, k_seg = ctx.positions_BL, ctx.segment_ids_BL
    if getattr(self, "cache_k", None) is not None:
      k, v, k_pos, k_seg = self._extend_cache(k, v, k_pos, k_seg)
    mask = attention_mask(ctx.positions_BL, ctx.segment_ids_BL, k_pos, k_seg)
    out_BLHK = dot_attention(q, k, v, mask)
    return jnp.einsum("blhk,hkd->bld", out_BLHK, self.out_HKD[...].astype(dtype))

  def _extend_cache(self, k_BLHK, v_BLHK, pos_BL, seg_BL):
    """Writes the new keys at the cache end; returns the whole cache to attend over."""
    end = self.cache_end[...]
    update = lambda cache, new: jax.lax.dynamic_update_slice_in_dim(  # noqa: E731
        cache[...], new.astype(cache.dtype), end, axis=1)
    self.cache_k[...] = update(self.cache_k, k_BLHK)
    self.cache_v[...] = update(self.cache_v, v_BLHK)
    self.cache_pos[...] = update(self.cache_pos, pos_BL)
    self.cache_seg[...] = update(self.cache_seg, seg_BL)
    self.cache_end[...] = end + k_BLHK.shape[1]
    return self.cache_k[...], self.cache_v[...], self.cache_pos[...], self.cache_seg[...]


ACTIVATIONS = {"gelu": jax.nn.gelu, "relu": jax.nn.relu, "silu": jax.nn.silu,
               "swiglu": jax.nn.silu, "geglu": jax.nn.gelu}


class MLP(nnx.Module):
  """Two-layer MLP; gated (GLU) variants have a second input projection."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, hidden: int | None = None):
    d, f = cfg.d_model, hidden or cfg.hidden_size
    self.activation = cfg.activation
    self.gated = cfg.activation in ("swiglu", "geglu")
    self.in_DF = param(rngs, (d, f), ("embed", "mlp"), cfg.init_std)
    if self.gated:
      self.gate_DF = param(rngs, (d, f), ("embed", "mlp"), cfg.init_std)
    self.out_FD = param(rngs, (f, d), ("mlp", "embed"), cfg.init_std / (2 * cfg.num_layers) ** 0.5)

  def __call__(self, x_BLD):
    dtype = x_BLD.dtype
    # Leading axes flattened into N tokens: the weight gradients then contract one axis,
    # where with [B, L] XLA:CPU recomputes the activation's gradient transposed (about
    # 10% of the dense CPU train step; benchmarks/cpu_peer.py). Same arithmetic.
    x_TD = x_BLD.reshape(-1, x_BLD.shape[-1])
    h = jnp.einsum("nd,df->nf", x_TD, self.in_DF[...].astype(dtype))
    act = ACTIVATIONS[self.activation]
    if self.gated:
      h = act(jnp.einsum("nd,df->nf", x_TD, self.gate_DF[...].astype(dtype))) * h
    else:
      h = act(h)
    out_TD = jnp.einsum("nf,fd->nd", h, self.out_FD[...].astype(dtype))
    return out_TD.reshape(*x_BLD.shape[:-1], out_TD.shape[-1])


class Embed(nnx.Module):
  """Token embedding; `attend` gives logits against the same table (tied embeddings)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.table_VD = param(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"),
                          cfg.init_std)

  def __call__(self, tokens_BL, dtype):
    return jnp.take(self.table_VD[...], tokens_BL, axis=0).astype(dtype)

  def attend(self, x_BLD):
    return jnp.einsum("bld,vd->blv", x_BLD, self.table_VD[...].astype(x_BLD.dtype))


class Unembed(nnx.Module):
  """Untied output projection."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.out_DV = param(rngs, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), cfg.init_std)

  def __call__(self, x_BLD):
    return jnp.einsum("bld,dv->blv", x_BLD, self.out_DV[...].astype(x_BLD.dtype))
