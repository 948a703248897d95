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
* integrated (block "moe" with `model.moe.noop_experts` N > 0; zoo/models/routers.py): the
  MoE router chooses among E experts and N no-op experts; a token whose choice is a no-op
  expert keeps its residual. Attention runs on every token. The paper found it better than
  shrinking the experts' capacity and letting full experts drop tokens, because tokens
  learn to choose the residual path.

The paper reports that integrated MoDE worked better than staged (figure 7).
"""

from __future__ import annotations

from zoo import accounting
from zoo.config import ModelConfig
from zoo.models import registry
from zoo.models.mod import MoDBlock, routed_block_flops
from zoo.models.moe import moe_inactive_params


@registry.register("mode_staged")
class StagedMoDEBlock(MoDBlock):
  """Staged MoDE: a Mixture-of-Depths router (`model.mod`) around an MoE block (`model.moe`)."""

  inner_kind = "moe"


@accounting.register_flops("mode_staged")
def staged_mode_flops(cfg: ModelConfig, seq_len: int) -> float:
  """c x (the MoE block on the k kept tokens, its routing included) + router + predictor."""
  return routed_block_flops(cfg, seq_len, "moe", train=False)


@accounting.register_train_flops("mode_staged")
def staged_mode_train_flops(cfg: ModelConfig, seq_len: int) -> float:
  return routed_block_flops(cfg, seq_len, "moe", train=True)


# The experts a kept token does not use, as in block "moe": routing around the block does not
# change which parameters a processed token touches.
accounting.register_inactive("mode_staged")(moe_inactive_params)
