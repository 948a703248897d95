"""Parameter and FLOP counts for any config.

Parameters are counted from the model itself (an abstract instance, so nothing is
allocated), by kind: embedding, trainable non-embedding, frozen, total. FLOPs per token are
analytic, one multiply-add = 2 FLOPs, and count what the code executes: attention scores
over the whole (masked) L x L square, as XLA computes them. Training FLOPs are forward +
backward = 3 x forward for trainable layers (Kaplan et al. 2020, arXiv:2001.08361); the
seed papers' budget is C = 6 N B S (N non-embedding parameters, B tokens per batch, S steps).
Each block kind registers its forward FLOPs with `register_flops`; a kind whose backward is
not 2 x forward (frozen weights: input gradient but no weight gradient, 2 x forward in all;
weightless transforms such as the Walsh-Hadamard) registers its training FLOPs with
`register_train_flops`. A stack kind that applies the blocks more than once (Ladder,
Staircase) registers how with `register_stack_flops`. Structured blocks register the dense
parameters they emulate with `register_emulated`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np
from flax import nnx

from zoo.config import Config, ModelConfig

_FLOPS: dict[str, Callable[[ModelConfig, int], float]] = {}


def register_flops(kind: str):
  """Registers `fn(cfg, seq_len) -> forward FLOPs per token` for a block kind."""
  def wrap(fn):
    _FLOPS[kind] = fn
    return fn
  return wrap


_TRAIN_FLOPS: dict[str, Callable[[ModelConfig, int], float]] = {}
_STACK_FLOPS: dict[str, Callable] = {}
_EMULATED: dict[str, Callable[[ModelConfig], int]] = {}


def register_train_flops(kind: str):
  """Registers `fn(cfg, seq_len) -> training FLOPs per token` (default: 3 x forward)."""
  def wrap(fn):
    _TRAIN_FLOPS[kind] = fn
    return fn
  return wrap


def register_stack_flops(kind: str):
  """Registers `fn(cfg, seq_len, block_flops) -> FLOPs per token of the whole stack`.

  `block_flops(kind, keys)` gives one block's FLOPs per processed token (forward or
  training, whichever is being summed) when its attention sees `keys` keys.
  """
  def wrap(fn):
    _STACK_FLOPS[kind] = fn
    return fn
  return wrap


def register_emulated(kind: str):
  """Registers `fn(cfg) -> dense parameters one block of this kind stands in for`."""
  def wrap(fn):
    _EMULATED[kind] = fn
    return fn
  return wrap


_INACTIVE: dict[str, Callable[[ModelConfig], float]] = {}


def register_inactive(kind: str):
  """Registers `fn(cfg) -> parameters of one block of this kind that a token does not use`
  (MoE: the experts it is not routed to); `active_per_token` is total minus their sum."""
  def wrap(fn):
    _INACTIVE[kind] = fn
    return fn
  return wrap


def attention_flops(cfg: ModelConfig, seq_len: int, kept: float = 1.0) -> float:
  """Projections plus QK^T and PV over `kept * seq_len` keys, per processed token."""
  hk = cfg.num_heads * cfg.head_size
  projections = 2 * cfg.d_model * 3 * hk + 2 * hk * cfg.d_model
  scores = 2 * 2 * kept * seq_len * hk
  return projections + scores


def mlp_flops(cfg: ModelConfig, hidden: int | None = None) -> float:
  matrices = 3 if cfg.activation in ("swiglu", "geglu") else 2
  return 2 * matrices * cfg.d_model * (hidden or cfg.hidden_size)


@register_flops("dense")
def dense_block_flops(cfg: ModelConfig, seq_len: int) -> float:
  return attention_flops(cfg, seq_len) + mlp_flops(cfg)


@register_stack_flops("plain")
def plain_stack_flops(cfg: ModelConfig, seq_len: int, block_flops) -> float:
  return sum(block_flops(kind, seq_len) for kind in cfg.layer_kinds)


@dataclasses.dataclass(frozen=True)
class ParamCounts:
  """Parameters by kind. `structured` (trainable parameters inside structured layers) is
  part of `trainable_non_embedding`; `emulated_dense` is the number of dense parameters
  those structured layers stand in for, reported beside them (not part of `total`)."""

  embedding: int
  trainable_non_embedding: int
  frozen: int
  total: int
  active_per_token: int
  structured: int = 0
  emulated_dense: int = 0

  @property
  def trainable(self) -> int:
    return self.total - self.frozen


@dataclasses.dataclass(frozen=True)
class FlopCounts:
  forward_per_token: float
  train_per_token: float
  train_per_step: float  # train_per_token x tokens per optimizer step
  kaplan_6n_per_step: float  # 6 N B, N = non-embedding trainable parameters


def _size(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def count_params(model_cfg: ModelConfig) -> ParamCounts:
  from zoo.models import Decoder
  from zoo.models.frozen import Frozen
  from zoo.models.structured import StructuredParam

  model = nnx.eval_shape(lambda: Decoder(model_cfg, rngs=nnx.Rngs(0)))
  trainable = nnx.state(model, nnx.Param)
  frozen = _size(nnx.state(model, Frozen))
  # Other variables (FastFood's fixed permutation indices) are buffers, not parameters.
  total = _size(trainable) + frozen
  embedding = _size(model.embed)
  if not model_cfg.tie_embeddings:
    embedding += _size(model.unembed)
  emulated = sum(_EMULATED[k](model_cfg) for k in model_cfg.layer_kinds if k in _EMULATED)
  inactive = int(round(sum(_INACTIVE[k](model_cfg) for k in model_cfg.layer_kinds
                             if k in _INACTIVE)))
  return ParamCounts(
      embedding=embedding,
      trainable_non_embedding=_size(trainable) - embedding,
      frozen=frozen,
      total=total,
      active_per_token=total - inactive,
      structured=_size(nnx.state(model, StructuredParam)),
      emulated_dense=emulated)


def _stack_flops(model_cfg: ModelConfig, seq_len: int, block_flops) -> float:
  import zoo.models  # noqa: F401  (every family registers its FLOPs on import)

  stack = _STACK_FLOPS.get(model_cfg.stack, plain_stack_flops)
  return stack(model_cfg, seq_len, block_flops)


def block_flops(model_cfg: ModelConfig, kind: str, seq_len: int) -> float:
  """Forward FLOPs per token of one block of `kind` on sequences of `seq_len` tokens."""
  return _FLOPS[kind](model_cfg, seq_len)


def block_train_flops(model_cfg: ModelConfig, kind: str, seq_len: int) -> float:
  if kind in _TRAIN_FLOPS:
    return _TRAIN_FLOPS[kind](model_cfg, seq_len)
  return 3 * _FLOPS[kind](model_cfg, seq_len)


def forward_flops_per_token(model_cfg: ModelConfig, seq_len: int) -> float:
  blocks = _stack_flops(model_cfg, seq_len, lambda kind, keys: _FLOPS[kind](model_cfg, keys))
  unembed = 2 * model_cfg.d_model * model_cfg.vocab_size
  return blocks + unembed


def train_flops_per_token(model_cfg: ModelConfig, seq_len: int) -> float:
  """Forward + backward; 3 x forward except where a block kind registered otherwise."""
  blocks = _stack_flops(model_cfg, seq_len,
                        lambda kind, keys: block_train_flops(model_cfg, kind, keys))
  unembed = 2 * model_cfg.d_model * model_cfg.vocab_size
  return blocks + 3 * unembed


def count_flops(cfg: Config) -> FlopCounts:
  forward = forward_flops_per_token(cfg.model, cfg.seq_len)
  train = train_flops_per_token(cfg.model, cfg.seq_len)
  tokens = cfg.batch_size * cfg.seq_len
  params = count_params(cfg.model)
  return FlopCounts(
      forward_per_token=forward,
      train_per_token=train,
      train_per_step=train * tokens,
      kaplan_6n_per_step=6 * params.trainable_non_embedding * tokens)


def summary(cfg: Config) -> str:
  """A few lines for the start of a run."""
  p, f = count_params(cfg.model), count_flops(cfg)
  return (
      f"params: total {p.total:,} | embedding {p.embedding:,} | trainable non-embedding "
      f"{p.trainable_non_embedding:,} | frozen {p.frozen:,} | active/token "
      f"{p.active_per_token:,}"
      + (f" | structured {p.structured:,} emulating {p.emulated_dense:,} dense"
         if p.emulated_dense else "") + "\n"
      f"flops/token: forward {f.forward_per_token:.4g} | train {f.train_per_token:.4g} | "
      f"per step {f.train_per_step:.4g} (6ND: {f.kaplan_6n_per_step:.4g})")


def against_dense(cfg: Config) -> dict[str, float]:
  """FLOPs per token of `cfg` beside the dense model of the same size (every block "dense").

  For Mixture-of-Depths this is the saving at equal parameters (Raposo et al. 2024); for
  equal training compute a run of `cfg` may take `1 / train_ratio` times the dense steps.
  """
  dense = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pattern=("dense",)))
  f, d = count_flops(cfg), count_flops(dense)
  return {"forward_per_token": f.forward_per_token, "dense_forward_per_token": d.forward_per_token,
          "forward_ratio": f.forward_per_token / d.forward_per_token,
          "train_per_token": f.train_per_token, "dense_train_per_token": d.train_per_token,
          "train_ratio": f.train_per_token / d.train_per_token}
