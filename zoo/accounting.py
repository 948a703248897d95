"""Parameter and FLOP counts for any config, from what the families registered.

Parameters are counted from the model itself (an abstract instance, so nothing is
allocated), by kind: embedding, trainable non-embedding, frozen, total, active per token,
and the parameters of structured layers beside the dense ones they emulate. FLOPs per token
are analytic, one multiply-add = 2 FLOPs, and count what the code executes: each block kind
registers its forward (and, where the backward is not 2 x forward, its training) FLOPs in
zoo/registry.py, and the stack kind how it applies the blocks. Training FLOPs are forward +
backward = 3 x forward for trainable layers (Kaplan et al. 2020, arXiv:2001.08361); the
seed papers' budget is C = 6 N B S (N non-embedding parameters, B tokens per batch, S steps).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from flax import nnx

import zoo.families  # noqa: F401  (registers every family)
from zoo import registry
from zoo.config import Config, ModelConfig
from zoo.models import Decoder
from zoo.models.parts import Frozen, StructuredParam

@dataclasses.dataclass(frozen=True)
class ParamCounts:
  """Parameters by kind. `structured_params` (trainable parameters inside structured layers) is
  part of `trainable_non_embedding`; `emulated_dense` is the number of dense parameters
  those structured layers stand in for, reported beside them (not part of `total`)."""

  embedding: int
  trainable_non_embedding: int
  frozen: int
  total: int
  active_per_token: int
  structured_params: int = 0
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
  model = nnx.eval_shape(lambda: Decoder(model_cfg, rngs=nnx.Rngs(0)))
  trainable = nnx.state(model, nnx.Param)
  frozen = _size(nnx.state(model, Frozen))
  # Other variables (FastFood's fixed permutation indices) are buffers, not parameters.
  total = _size(trainable) + frozen
  embedding = _size(model.embed)
  if not model_cfg.tie_embeddings:
    embedding += _size(model.unembed)
  kinds = [registry.block(k) for k in model_cfg.layer_kinds]
  emulated = sum(k.emulated_params(model_cfg) for k in kinds if k.emulated_params)
  inactive = int(round(sum(k.inactive_params(model_cfg) for k in kinds if k.inactive_params)))
  return ParamCounts(
      embedding=embedding,
      trainable_non_embedding=_size(trainable) - embedding,
      frozen=frozen,
      total=total,
      active_per_token=total - inactive,
      structured_params=_size(nnx.state(model, StructuredParam)),
      emulated_dense=emulated)


def _stack_flops(model_cfg: ModelConfig, seq_len: int, block_flops) -> float:
  return registry.stack(model_cfg.stack).flops(model_cfg, seq_len, block_flops)


def forward_flops_per_token(model_cfg: ModelConfig, seq_len: int) -> float:
  blocks = _stack_flops(model_cfg, seq_len,
                        lambda kind, keys: registry.block(kind).forward_flops(model_cfg, keys))
  unembed = 2 * model_cfg.d_model * model_cfg.vocab_size
  return blocks + unembed


def train_flops_per_token(model_cfg: ModelConfig, seq_len: int) -> float:
  """Forward + backward; 3 x forward except where a block kind registered otherwise."""
  blocks = _stack_flops(model_cfg, seq_len,
                        lambda kind, keys: registry.block(kind).train(model_cfg, keys))
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
      + (f" | structured {p.structured_params:,} emulating {p.emulated_dense:,} dense"
         if p.emulated_dense else "") + "\n"
      f"flops/token: forward {f.forward_per_token:.4g} | train {f.train_per_token:.4g} | "
      f"per step {f.train_per_step:.4g} (6ND: {f.kaplan_6n_per_step:.4g})")


def against(cfg: Config, pattern: tuple[str, ...]) -> dict[str, float]:
  """FLOPs per token of `cfg` beside the same model with another block `pattern`.

  Against an all-dense pattern this is, for Mixture-of-Depths, the saving at equal parameters
  (Raposo et al. 2024); for equal training compute a run of `cfg` may take
  `1 / train_ratio` times the other's steps.
  """
  other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pattern=pattern))
  f, d = count_flops(cfg), count_flops(other)
  return {"forward_per_token": f.forward_per_token, "other_forward_per_token": d.forward_per_token,
          "forward_ratio": f.forward_per_token / d.forward_per_token,
          "train_per_token": f.train_per_token, "other_train_per_token": d.train_per_token,
          "train_ratio": f.train_per_token / d.train_per_token}
