"""Analytic FLOPs of the shared parts, per processed token; families add their own terms.

One multiply-add is 2 FLOPs. Attention scores are counted over the whole (masked) L x L
square, as XLA computes them.
"""

from __future__ import annotations

from zoo.config import ModelConfig


def attention_flops(cfg: ModelConfig, seq_len: int, kept: float = 1.0) -> float:
  """Projections plus QK^T and PV over `kept * seq_len` keys, per processed token."""
  hk = cfg.num_heads * cfg.head_size
  projections = 2 * cfg.d_model * 3 * hk + 2 * hk * cfg.d_model
  scores = 2 * 2 * kept * seq_len * hk
  return projections + scores


def mlp_flops(cfg: ModelConfig, hidden: int | None = None) -> float:
  return 2 * mlp_matrices(cfg) * cfg.d_model * (hidden or cfg.hidden_size)


def mlp_matrices(cfg: ModelConfig) -> int:
  """Weight matrices of one MLP: 3 for the gated activations, else 2."""
  return 3 if cfg.activation in ("swiglu", "geglu") else 2


def dense_block_flops(cfg: ModelConfig, seq_len: int) -> float:
  return attention_flops(cfg, seq_len) + mlp_flops(cfg)


def plain_stack_flops(cfg: ModelConfig, seq_len: int, block_flops) -> float:
  """Every layer once: the sum of its blocks' FLOPs."""
  return sum(block_flops(kind, seq_len) for kind in cfg.layer_kinds)
