"""Doped models: trainable transformer layers alternating with frozen random MLPs.

Chatelain et al. 2021, "Is the Number of Trainable Parameters All That Actually Matters?"
(arXiv:2109.11928), section 3, after Reservoir Transformers (Shen et al. 2020). A frozen
block replaces a whole decoder layer (attention + MLP) by one pre-norm residual MLP whose
weights are drawn at random and never trained:

    x <- x + W_out · act(W_in · Norm(x)),   W_in: D x 6D, W_out: 6D x D, both Frozen,

the hidden width 6·D (`model.doped.frozen_hidden_mult`) making it hold about the
12·D² parameters of the layer it replaces. A doped model is the pattern
`("dense", "frozen_mlp")` tiled over an odd depth, so the first and last layers are
trainable, as in the paper's Table 2 (5 layers of which 3 trainable; 11 and 6; 23 and 12).

Frozen weights are their own Variable type, `Frozen` (zoo/models/parts.py): the train
step differentiates and updates `nnx.Param` only, so they get no gradient and no optimizer state, and they travel
in the train state's `rest` (so checkpoints save and restore them). They cost forward and
input-gradient FLOPs but no weight gradient: 2 x forward in training instead of 3 x ("two
thirds" of a trainable parameter in the paper). The pre-norm's scale (D numbers) stays
trainable, so training can weigh how much of the frozen block's output to use.
"""

from __future__ import annotations

import dataclasses

from flax import nnx

from zoo import registry, sharding
from zoo.config import ConfigError, ModelConfig
from zoo.models import flops
from zoo.models.parts import MLP, Context, Norm, dropout, freeze


@dataclasses.dataclass(frozen=True)
class DopedConfig:
  """Options of block "frozen_mlp" (`model.doped`)."""

  frozen_hidden_mult: int = 6  # hidden width of a frozen MLP, in multiples of d_model


def frozen_hidden(cfg: ModelConfig) -> int:
  return cfg.doped.frozen_hidden_mult * cfg.d_model


class FrozenMLPBlock(nnx.Module):
  """x + MLP(Norm(x)) with the MLP's matrices frozen at their random initialisation."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.rate = cfg.dropout
    self.norm = Norm(cfg, rngs=rngs)
    # The same initialisation as a trainable MLP: the layer it replaces, frozen at init.
    self.mlp = freeze(MLP(cfg, rngs=rngs, hidden=frozen_hidden(cfg)))

  def __call__(self, x_BLD, ctx: Context):
    x_BLD = x_BLD + dropout(self.mlp(self.norm(x_BLD)), self.rate, ctx.rng, 0)
    return sharding.constrain(x_BLD, ("batch", "length", "act_embed")), {}


def frozen_block_flops(cfg: ModelConfig, seq_len: int) -> float:
  del seq_len  # no attention
  return flops.mlp_flops(cfg, frozen_hidden(cfg))


def frozen_block_train_flops(cfg: ModelConfig, seq_len: int) -> float:
  """Forward plus the gradient with respect to the input; no weight gradient."""
  return 2 * frozen_block_flops(cfg, seq_len)


def validate(cfg) -> None:
  if cfg.model.doped.frozen_hidden_mult <= 0:
    raise ConfigError("model.doped.frozen_hidden_mult", cfg.model.doped.frozen_hidden_mult, "> 0")


FAMILY = registry.register(registry.Family(
    name="doped",
    options={"doped": DopedConfig},
    blocks=(registry.BlockKind(
        "frozen_mlp", FrozenMLPBlock, frozen_block_flops, frozen_block_train_flops,
        example={"num_layers": 3, "pattern": ("dense", "frozen_mlp")}),),
    validate=validate,
))
