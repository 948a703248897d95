"""Structured layers: Adaptive FastFood, and block-diagonal matrices around a block-Hadamard.

Chatelain et al. 2021, "Is the Number of Trainable Parameters All That Actually Matters?"
(arXiv:2109.11928), section 4; Adaptive FastFood after Yang et al. 2015, "Deep Fried
Convnets" (arXiv:1412.7149), itself after Le et al. 2013, "Fastfood".

H_n is the n x n Walsh-Hadamard matrix (Sylvester order, entries +-1, H_n H_n = n I).
`fwht` applies it in O(n log n) additions (log2 n butterfly stages), never as an n x n
matmul.

Adaptive FastFood ("fastfood" block) replaces a dense D_in x D_out linear layer by

    y = S · H · G · Π · H · B · x  / n,

with B, G, S learned diagonals, Π a fixed random permutation, n = D_in rounded up to a power
of two (x is zero-padded to n; padding adds no information, so any width works). When
D_out > n, ceil(D_out / n) independent transforms are stacked and the outputs concatenated
(Yang et al. stack blocks the same way); outputs beyond D_out are dropped, and S has D_out
entries. The 1/n makes each H orthonormal (H/sqrt(n), as in Le et al.'s normalisation);
it is applied to S, a parameter, so it costs nothing per token. Initialisation: B +-1
(Rademacher), G ~ N(0, 1), S = sigma·sqrt(n), so each output has the variance of the
N(0, sigma^2) dense layer it emulates (Le et al. draw S from a chi distribution; the
adaptive version learns it). Which layers: the MLP's two (three when gated) matrices;
attention stays dense. The paper's FastFood model (Table 3: 12 layers, width 1024) "performs
like an XSmall with a similar number of trainable parameters": its dense attention alone
holds 4·1024²·12 ≈ 50M, about XSmall's 42M, which only fits if attention is not replaced.

Block-Hadamard MLP ("block_hadamard" block), with b = `model.structured.num_blocks` (4 in
the paper) diagonal blocks:

    y = W_2 · (H_b ⊗ I_{F/b}) · act(W_1 · x) / sqrt(b),

W_1 (D x F) and W_2 (F x D) block-diagonal with b blocks, so the MLP holds 1/b of the dense
parameters. The block diagonals mix features within a block; H_b ⊗ I adds and subtracts
whole blocks, the long-range mixing ("block Hadamard matrix introduces long-range
correlations"). It sits after the activation so gated MLPs need one transform, not two;
1/sqrt(b) is folded into W_2. Block weights start at sigma·sqrt(b) so each hidden unit has
the variance of the dense layer (its fan-in is 1/b of the dense one).

Accounting: structured weights are `StructuredParam`, a trainable `nnx.Param`, counted as
`ParamCounts.structured_params` with the dense parameters they emulate (`emulated_dense`) beside
them. FLOPs count what runs: n·log2(n) per transform of width n, one per diagonal entry,
2·D·F/b per block-diagonal matrix; in training a transform costs 2 x forward (it has no
weight), the rest 3 x.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from zoo import registry
from zoo.config import ConfigError, ModelConfig
from zoo.models import flops
from zoo.models.parts import ACTIVATIONS, Attention, Norm, StructuredParam, annotated
from zoo.models.transformer import DenseBlock


@dataclasses.dataclass(frozen=True)
class StructuredConfig:
  """Options of block "block_hadamard" (`model.structured`)."""

  num_blocks: int = 4  # diagonal blocks of its two matrices (a power of two)


class Permutation(nnx.Variable):
  """Fixed random indices: part of the model and its checkpoints, but not a parameter."""


def fwht(x, axis: int = -1):
  """Unnormalised Walsh-Hadamard transform along `axis` (a power of two): H_n x.

  log2(n) stages; stage h pairs entries i and i + h within blocks of 2h and replaces them
  by (a + b, a - b), n additions per stage.
  """
  axis = axis % x.ndim
  n = x.shape[axis]
  if n & (n - 1):
    raise ValueError(f"fwht needs a power-of-two length, got {n}")
  lead, trail = x.shape[:axis], x.shape[axis + 1:]
  h = 1
  while h < n:
    pairs = x.reshape(*lead, n // (2 * h), 2, h, *trail)
    a = jax.lax.index_in_dim(pairs, 0, axis + 1, keepdims=False)
    b = jax.lax.index_in_dim(pairs, 1, axis + 1, keepdims=False)
    x = jnp.stack([a + b, a - b], axis=axis + 1).reshape(x.shape)
    h *= 2
  return x


def _pow2(n: int) -> int:
  return 1 << (n - 1).bit_length()


def _diag(value, kind=StructuredParam):
  return annotated(value, (None,) * value.ndim, kind=kind)  # O(n) numbers: replicated


class FastFoodLinear(nnx.Module):
  """y = S H G Π H B x / n, stacked ceil(d_out / n) times; see the module docstring.

  Shape letters here: I input width, O output width, T stacked transforms, N = n.
  """

  def __init__(self, d_in: int, d_out: int, std: float, *, rngs: nnx.Rngs):
    self.d_in, self.d_out = d_in, d_out
    self.n = n = _pow2(d_in)
    self.k = k = -(-d_out // n)
    self.b_TN = _diag(jax.random.rademacher(rngs.params(), (k, n), jnp.float32))
    self.g_TN = _diag(jax.random.normal(rngs.params(), (k, n), jnp.float32))
    self.s_O = _diag(jnp.full((d_out,), std * math.sqrt(n), jnp.float32))
    keys = jax.random.split(rngs.params(), k)
    perms = jnp.stack([jax.random.permutation(key, n) for key in keys])
    # Indices into the flattened [k * n] axis: each block permutes its own n entries.
    flat = (perms + n * jnp.arange(k)[:, None]).reshape(-1).astype(jnp.int32)
    self.perm = _diag(flat, kind=Permutation)

  def __call__(self, x_BLI):
    dtype = x_BLI.dtype
    # float32: log2(n) rounds of additions would lose bits in bfloat16.
    x = jnp.pad(x_BLI.astype(jnp.float32), [(0, 0)] * (x_BLI.ndim - 1) + [(0, self.n - self.d_in)])
    x_BLTN = fwht(x[..., None, :] * self.b_TN[...])
    lead = x_BLTN.shape[:-2]
    # In range by construction: skips take's bounds check (a select per element).
    x = x_BLTN.reshape(*lead, self.k * self.n).at[..., self.perm[...]].get(
        mode="promise_in_bounds")
    x_BLTN = fwht(x.reshape(*lead, self.k, self.n) * self.g_TN[...])
    y = x_BLTN.reshape(*lead, self.k * self.n)[..., : self.d_out]
    return (y * (self.s_O[...] / self.n)).astype(dtype)


def fastfood_flops(d_in: int, d_out: int) -> tuple[float, float]:
  """(diagonal multiplies, Walsh-Hadamard additions) per token of one FastFoodLinear."""
  n = _pow2(d_in)
  k = -(-d_out // n)
  return 2 * k * n + d_out, 2 * k * n * math.log2(n)


class FastFoodMLP(nnx.Module):
  """The MLP with each matrix replaced by an Adaptive FastFood transform."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    d, f = cfg.d_model, cfg.hidden_size
    self.activation = cfg.activation
    self.gated = cfg.activation in ("swiglu", "geglu")
    self.fc_in = FastFoodLinear(d, f, cfg.init_std, rngs=rngs)
    if self.gated:
      self.fc_gate = FastFoodLinear(d, f, cfg.init_std, rngs=rngs)
    self.fc_out = FastFoodLinear(f, d, cfg.init_std / (2 * cfg.num_layers) ** 0.5, rngs=rngs)

  def __call__(self, x_BLD):
    h_BLF = self.fc_in(x_BLD)
    act = ACTIVATIONS[self.activation]
    h_BLF = act(self.fc_gate(x_BLD)) * h_BLF if self.gated else act(h_BLF)
    return self.fc_out(h_BLF)


class BlockHadamardMLP(nnx.Module):
  """W_2 (H_b ⊗ I) act(W_1 x) / sqrt(b) with block-diagonal W_1, W_2.

  Shape letters here: N the b blocks; D and F a block's share of the width and hidden size.
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    b = self.blocks = cfg.structured.num_blocks
    d, f = cfg.d_model // b, cfg.hidden_size // b
    self.activation = cfg.activation
    self.gated = cfg.activation in ("swiglu", "geglu")
    std_in = cfg.init_std * math.sqrt(b)
    std_out = std_in / (2 * cfg.num_layers) ** 0.5

    def block_diag(shape, logical, std):
      value = std * jax.random.normal(rngs.params(), shape, jnp.float32)
      return annotated(value, logical, kind=StructuredParam)

    self.in_NDF = block_diag((b, d, f), (None, "embed", "mlp"), std_in)
    if self.gated:
      self.gate_NDF = block_diag((b, d, f), (None, "embed", "mlp"), std_in)
    self.out_NFD = block_diag((b, f, d), (None, "mlp", "embed"), std_out)

  def __call__(self, x_BLD):
    dtype = x_BLD.dtype
    x_BLND = x_BLD.reshape(*x_BLD.shape[:-1], self.blocks, -1)
    h_BLNF = jnp.einsum("blnd,ndf->blnf", x_BLND, self.in_NDF[...].astype(dtype))
    act = ACTIVATIONS[self.activation]
    if self.gated:
      h_BLNF = act(jnp.einsum("blnd,ndf->blnf", x_BLND, self.gate_NDF[...].astype(dtype))) * h_BLNF
    else:
      h_BLNF = act(h_BLNF)
    h_BLNF = fwht(h_BLNF, axis=-2)  # H_b ⊗ I: adds and subtracts whole blocks
    out_NFD = (self.out_NFD[...] / math.sqrt(self.blocks)).astype(dtype)
    y_BLND = jnp.einsum("blnf,nfd->blnd", h_BLNF, out_NFD)
    return y_BLND.reshape(x_BLD.shape)


class FastFoodBlock(DenseBlock):
  """The dense block (same call) with an Adaptive FastFood MLP; attention stays dense."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):  # pylint: disable=super-init-not-called
    self.rate = cfg.dropout
    self.attn_norm, self.attn = Norm(cfg, rngs=rngs), Attention(cfg, rngs=rngs)
    self.mlp_norm, self.mlp = Norm(cfg, rngs=rngs), FastFoodMLP(cfg, rngs=rngs)


class BlockHadamardBlock(DenseBlock):
  """The dense block (same call) with a block-diagonal + block-Hadamard MLP."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):  # pylint: disable=super-init-not-called
    self.rate = cfg.dropout
    self.attn_norm, self.attn = Norm(cfg, rngs=rngs), Attention(cfg, rngs=rngs)
    self.mlp_norm, self.mlp = Norm(cfg, rngs=rngs), BlockHadamardMLP(cfg, rngs=rngs)


# ----------------------------------------------------------------------------------------
# Accounting: (weighted part, weightless transforms) of each MLP, per token.


def fastfood_mlp_flops(cfg: ModelConfig) -> tuple[float, float]:
  d, f = cfg.d_model, cfg.hidden_size
  parts = [fastfood_flops(d, f)] * (flops.mlp_matrices(cfg) - 1) + [fastfood_flops(f, d)]
  return sum(p[0] for p in parts), sum(p[1] for p in parts)


def block_hadamard_mlp_flops(cfg: ModelConfig) -> tuple[float, float]:
  b = cfg.structured.num_blocks
  weighted = flops.mlp_matrices(cfg) * 2 * cfg.d_model * cfg.hidden_size / b
  return weighted, cfg.hidden_size * math.log2(b)


def _kind(name: str, block, mlp_flops) -> registry.BlockKind:
  def forward(cfg: ModelConfig, seq_len: int) -> float:
    return flops.attention_flops(cfg, seq_len) + sum(mlp_flops(cfg))

  def train(cfg: ModelConfig, seq_len: int) -> float:
    weighted, transforms = mlp_flops(cfg)
    return 3 * (flops.attention_flops(cfg, seq_len) + weighted) + 2 * transforms

  def emulated(cfg: ModelConfig) -> int:
    return flops.mlp_matrices(cfg) * cfg.d_model * cfg.hidden_size

  return registry.BlockKind(name, block, forward, train, emulated_params=emulated,
                            example={"pattern": ("dense", name)})


def validate(cfg) -> None:
  m = cfg.model
  blocks = m.structured.num_blocks
  if blocks <= 0 or blocks & (blocks - 1):
    raise ConfigError("model.structured.num_blocks", blocks, "a power of two")
  if "block_hadamard" in m.pattern:
    for width in (m.d_model, m.hidden_size):
      if width % blocks:
        raise ConfigError("model.structured.num_blocks", blocks,
                          f"a divisor of model.d_model={m.d_model} and of the MLP hidden "
                          f"size {m.hidden_size}")


FAMILY = registry.register(registry.Family(
    name="structured",
    options={"structured": StructuredConfig},
    blocks=(_kind("fastfood", FastFoodBlock, fastfood_mlp_flops),
            _kind("block_hadamard", BlockHadamardBlock, block_hadamard_mlp_flops)),
    validate=validate,
))
