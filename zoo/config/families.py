"""Config groups of the model families: `model.ladder`, `model.staircase`, `model.doped`,
`model.structured`, `model.mod` and `model.moe` (each read only by its family's blocks)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LadderConfig:
  """Stack "ladder" (Ju et al. 2021): the whole stack applied `ladder_size` times."""

  ladder_size: int = 2


@dataclasses.dataclass(frozen=True)
class StaircaseConfig:
  """Stack "staircase" (Ju et al. 2021); defaults are the paper's algorithmic setting.

  forward_size F: new tokens per step; staircase_size S: tokens per pass (S/F passes per
  chunk); memory: cached tokens per layer from chunks already emitted (0: none);
  attention_span: how far back (positions) a query may attend (0: no limit).
  """

  forward_size: int = 64
  staircase_size: int = 128
  memory: int = 128
  attention_span: int = 128


@dataclasses.dataclass(frozen=True)
class DopedConfig:
  """Block "frozen_mlp" (Chatelain et al. 2021): hidden width = frozen_hidden_mult x d_model."""

  frozen_hidden_mult: int = 6


@dataclasses.dataclass(frozen=True)
class StructuredConfig:
  """Block "block_hadamard" (Chatelain et al. 2021): diagonal blocks of its two matrices."""

  num_blocks: int = 4


@dataclasses.dataclass(frozen=True)
class ModConfig:
  """Block "mod" (Raposo et al. 2024, Mixture-of-Depths): a dense block routed by capacity.

  capacity c: fraction of each sequence's tokens a routed block processes (k = ceil(c L));
  routing: "learned" (top-k of the router r = w.x) or "stochastic" (top-k of Gaussian
  noise, the paper's ablation); router_loss_weight: BCE of the router logits against the
  top-k decisions (the paper's sampling method a); predictor_loss_weight and
  predictor_hidden: the auxiliary MLP predictor on stop-gradient inputs (method b; hidden
  0: d_model // 4); decode: what decides causally when sampling, "predictor" (logit > 0)
  or "router" (r > decode_threshold).
  """

  capacity: float = 0.125
  routing: str = "learned"
  router_loss_weight: float = 0.01
  predictor_loss_weight: float = 0.1
  predictor_hidden: int = 0
  decode: str = "predictor"
  decode_threshold: float = 0.0


@dataclasses.dataclass(frozen=True)
class MoeConfig:
  """Block "moe" (zoo/models/moe.py): attention + a Mixture-of-Experts MLP.

  router: "switch" (top-1, Fedus et al. 2021), "topk" (top_k >= 2, normalised gates),
  "expert_choice" (Zhou et al. 2022; not causal), "base" (balanced assignment, Lewis et al.
  2021), "hash" (fixed token -> expert map, Roller et al. 2021). num_experts: experts per
  MoE layer (for fine-grained MoE, Krajewski et al. 2024: granularity x expansion rate).
  top_k: experts per token (token choice), or per token on average (expert choice, times
  capacity_factor). capacity_factor: slots per expert = capacity_factor x top_k x L / E
  (routing groups are sequences); 0 = dropless (token choice only). granularity G: each
  expert is d_ff / G wide. aux_loss_weight: alpha of the load-balance loss
  alpha E sum_i f_i P_i; z_loss_weight: the router z-loss (0: off). hash_kind: "random",
  "balanced", "bigram", "previous", "position" or "oracle" (next token: a leakage check,
  never for results); hash_frequencies: a .npy of token counts for "balanced" ('': the
  training corpus' counts, which train.py computes; a Zipf prior by token id where no corpus
  is at hand); hash_seed seeds the map. noop_experts N:
  integrated MoDE (Raposo et al. 2024): the router (switch or topk) chooses among the E
  experts and N no-op experts, a choice of a no-op expert adds nothing (the token keeps its
  residual), and each real expert has capacity_factor x top_k x L / (E + N) slots.
  output_norm: a norm on the MoE output before the residual add (Krajewski et al. 2024 use
  one for granularity > 1). backend: kernels' backend ('' picks by platform; "xla",
  "pallas_tpu", "pallas_interpret").
  """

  router: str = "switch"
  num_experts: int = 8
  top_k: int = 1
  capacity_factor: float = 1.25
  granularity: int = 1
  aux_loss_weight: float = 0.01
  z_loss_weight: float = 0.0
  hash_kind: str = "random"
  hash_frequencies: str = ""
  hash_seed: int = 0
  noop_experts: int = 0
  output_norm: bool = False
  backend: str = ""

  @property
  def num_choices(self) -> int:
    """What the router chooses among: the experts and the no-op experts."""
    return self.num_experts + self.noop_experts

  @property
  def expansion(self) -> float:
    """Krajewski et al.'s expansion rate E: total expert parameters / dense MLP parameters."""
    return self.num_experts / self.granularity
