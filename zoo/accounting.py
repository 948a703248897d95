"""Parameter and FLOP counts for any config.

Parameters are counted from the model itself (an abstract instance, so nothing is
allocated), by kind: embedding, trainable non-embedding, frozen, total. FLOPs per token are
analytic, one multiply-add = 2 FLOPs, and count what the code executes: attention scores
over the whole (masked) L x L square, as XLA computes them. Training FLOPs are forward +
backward = 3 x forward for trainable layers (Kaplan et al. 2020, arXiv:2001.08361); the
seed papers' budget is C = 6 N B S (N non-embedding parameters, B tokens per batch, S steps).
Each block kind registers its forward FLOPs with `register_flops`.
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


@dataclasses.dataclass(frozen=True)
class ParamCounts:
  embedding: int
  trainable_non_embedding: int
  frozen: int
  total: int
  active_per_token: int

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

  model = nnx.eval_shape(lambda: Decoder(model_cfg, rngs=nnx.Rngs(0)))
  trainable = nnx.state(model, nnx.Param)
  total = _size(nnx.state(model))
  embedding = _size(model.embed)
  if not model_cfg.tie_embeddings:
    embedding += _size(model.unembed)
  frozen = total - _size(trainable)
  return ParamCounts(
      embedding=embedding,
      trainable_non_embedding=_size(trainable) - embedding,
      frozen=frozen,
      total=total,
      active_per_token=total)


def forward_flops_per_token(model_cfg: ModelConfig, seq_len: int) -> float:
  blocks = sum(_FLOPS[kind](model_cfg, seq_len) for kind in model_cfg.layer_kinds)
  unembed = 2 * model_cfg.d_model * model_cfg.vocab_size
  return blocks + unembed


def count_flops(cfg: Config) -> FlopCounts:
  forward = forward_flops_per_token(cfg.model, cfg.seq_len)
  tokens = cfg.batch_size * cfg.seq_len
  params = count_params(cfg.model)
  return FlopCounts(
      forward_per_token=forward,
      train_per_token=3 * forward,
      train_per_step=3 * forward * tokens,
      kaplan_6n_per_step=6 * params.trainable_non_embedding * tokens)


def summary(cfg: Config) -> str:
  """A few lines for the start of a run."""
  p, f = count_params(cfg.model), count_flops(cfg)
  return (
      f"params: total {p.total:,} | embedding {p.embedding:,} | trainable non-embedding "
      f"{p.trainable_non_embedding:,} | frozen {p.frozen:,} | active/token "
      f"{p.active_per_token:,}\n"
      f"flops/token: forward {f.forward_per_token:.4g} | train {f.train_per_token:.4g} | "
      f"per step {f.train_per_step:.4g} (6ND: {f.kaplan_6n_per_step:.4g})")
