"""Parallel blocks: attention and MLP read the same input and are added together.

Wang & Komatsuzaki 2021 (GPT-J) and Chowdhery et al. 2022, "PaLM" (arXiv:2204.02311,
section 2): one layer is

    x <- x + Attn(Norm(x)) + MLP(Norm'(x)),

with one norm shared by both branches (`model.parallel.shared_norm`, PaLM's choice) or one
each. The two matmul streams no longer wait for each other, which PaLM reports as about 15%
faster training at large scale, at equal parameters and equal FLOPs to the serial block.

This file is also the worked example of "Add your own family" in README.md: a family is its
options (a frozen dataclass), their validation, its block, its FLOPs, and one `register`
call; shared code reads all of it from the registry.
"""

from __future__ import annotations

import dataclasses

from flax import nnx

from zoo import registry, sharding
from zoo.config import ConfigError, ModelConfig
from zoo.models import flops
from zoo.models.parts import MLP, Attention, Context, Norm, dropout


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
  """Options of block "parallel" (`model.parallel`)."""

  shared_norm: bool = True  # one pre-norm for both branches (PaLM), else one each
  mlp_scale: float = 1.0  # multiplies the MLP branch before the sum


class ParallelBlock(nnx.Module):
  """x + Attn(Norm(x)) + s MLP(Norm'(x)); Norm' is Norm when the norm is shared."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.rate = cfg.dropout
    self.mlp_scale = cfg.parallel.mlp_scale
    self.attn_norm, self.attn = Norm(cfg, rngs=rngs), Attention(cfg, rngs=rngs)
    self.mlp_norm = None if cfg.parallel.shared_norm else Norm(cfg, rngs=rngs)
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(self, x_BLD, ctx: Context):
    h_BLD = self.attn_norm(x_BLD)
    attn_BLD = self.attn(h_BLD, ctx)
    mlp_BLD = self.mlp(h_BLD if self.mlp_norm is None else self.mlp_norm(x_BLD))
    x_BLD = (x_BLD + dropout(attn_BLD, self.rate, ctx.rng, 0)
             + self.mlp_scale * dropout(mlp_BLD, self.rate, ctx.rng, 1))
    return sharding.constrain(x_BLD, ("batch", "length", "act_embed")), {}


def validate(cfg) -> None:
  scale = cfg.model.parallel.mlp_scale
  if scale <= 0:
    raise ConfigError("model.parallel.mlp_scale", scale, "> 0")


FAMILY = registry.register(registry.Family(
    name="parallel",
    options={"parallel": ParallelConfig},
    blocks=(registry.BlockKind(
        "parallel", ParallelBlock,
        forward_flops=flops.dense_block_flops,  # the same matmuls as the serial block
        uses=("parallel",),
        example={"pattern": ("parallel",), "parallel": {"shared_norm": False}}),),
    validate=validate,
))
