"""Mixture-of-Depths-and-Experts (MoDE): Mixture-of-Depths routing combined with an MoE MLP.

Raposo et al. 2024, "Mixture-of-Depths: Dynamically allocating compute in transformer-based
language models" (arXiv:2404.02258), section 4.3, in two variants:

* staged (block "mode_staged", here): MoD routing around a whole MoE block. The router
  r_i = w . x_i keeps the top k = ceil(c L) tokens of each sequence; only they run the
  block, attention *and* MoE MLP, and the update is scaled by the router weight:

      x_i <- x_i + r_i (MoeBlock(X~)_i - x_i)   for kept tokens,   x_i unchanged otherwise.

  Tokens skip attention as well as the experts. The MoE routes within the k kept tokens
  (its capacity is computed from k), and its losses and statistics are passed on beside
  the MoD ones. Hash kinds that look at neighbours ("previous", "bigram") see the previous
  *kept* token. Sampling decides causally as block "mod" does (predictor or router).
* integrated (block "moe" with `model.moe.noop_experts` N > 0, mixture_of_experts.py and
  zoo/models/routers.py): the
  MoE router chooses among E experts and N no-op experts; a token whose choice is a no-op
  expert keeps its residual. Attention runs on every token. The paper found it better than
  shrinking the experts' capacity and letting full experts drop tokens, because tokens
  learn to choose the residual path.

The paper reports that integrated MoDE worked better than staged (figure 7).
"""

from __future__ import annotations

from zoo import registry
from zoo.config import ConfigError, ModelConfig
from zoo.families.mixture_of_depths import MoDBlock, capacity_tokens, routed_block_flops
from zoo.families.mixture_of_experts import moe_inactive_params


class StagedMoDEBlock(MoDBlock):
  """Staged MoDE: a Mixture-of-Depths router (`model.mod`) around an MoE block (`model.moe`)."""

  inner_kind = "moe"


def staged_mode_flops(cfg: ModelConfig, seq_len: int) -> float:
  """c x (the MoE block on the k kept tokens, its routing included) + router + predictor."""
  return routed_block_flops(cfg, seq_len, "moe", train=False)


def staged_mode_train_flops(cfg: ModelConfig, seq_len: int) -> float:
  return routed_block_flops(cfg, seq_len, "moe", train=True)


def validate(cfg) -> None:
  """BASE gives each expert exactly k / E of the k tokens a staged block routes."""
  m = cfg.model
  if "mode_staged" not in m.pattern or m.moe.router != "base":
    return
  k = capacity_tokens(m.mod.capacity, cfg.seq_len)
  if k % m.moe.num_experts:
    raise ConfigError("model.moe.num_experts", m.moe.num_experts,
                      f"a divisor of the {k} tokens a block 'mode_staged' routes (seq_len="
                      f"{cfg.seq_len}, model.mod.capacity={m.mod.capacity}) with router 'base'")


FAMILY = registry.register(registry.Family(
    name="depths_and_experts",
    blocks=(registry.BlockKind(
        "mode_staged", StagedMoDEBlock, staged_mode_flops, staged_mode_train_flops,
        # The experts a kept token does not use, as in block "moe": routing around the block
        # does not change which parameters a processed token touches.
        inactive_params=moe_inactive_params, lookahead=True, uses=("mod", "moe"), flops_rtol=0.06,
        example={"pattern": ("dense", "mode_staged"), "mod": {"capacity": 0.5},
                 "moe": {"num_experts": 4, "capacity_factor": 1.0}},
        decode_example={"moe": {"capacity_factor": 0.0}}),),
    validate=validate,
))
