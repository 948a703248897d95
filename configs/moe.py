"""Mixture-of-Experts: one config per router, at `tiny` (CPU) and Table-1 sizes.

arg = "<router>_<size>": router in switch, topk, expert_choice, base, hash, fine_grained;
size in tiny, xxsmall, xsmall, small, medium (configs/dense.py's Table 1 of Chatelain et
al. 2021). Run with, e.g.

  python train.py --config configs/moe.py:switch_tiny --workdir /tmp/zoo/switch_tiny
  python train.py --config configs/moe.py:topk_tiny --workdir /tmp/zoo/topk_tiny \
      --config.model.moe.capacity_factor=0    # dropless
  python train.py --config configs/moe.py:hash_small --workdir gs://BUCKET/hash_small \
      --config.data.source=tfds --config.data.name=c4/en

* switch: top-1, capacity factor 1.25, load-balance alpha 0.01 (Fedus et al. 2021); every
  other layer is an MoE layer (pattern ("dense", "moe")), 8 experts (tiny) or 64.
* topk: top-2 with normalised gates, capacity factor 1.25.
* expert_choice: capacity factor 2 (Zhou et al. 2022's EC-CF2); not causal (see
  zoo/models/routers.py), for comparison only.
* base: balanced assignment in training, greedy at inference (Lewis et al. 2021).
* hash: one MoE layer in the middle of the stack with 64 experts (Roller et al. 2021's
  setting; 16 at tiny), random hash; `--config.model.moe.hash_kind=balanced|bigram|...`.
* fine_grained: Krajewski et al. 2024: granularity G = 4, expansion rate 4 (16 experts of
  width d_ff / 4 at tiny; G = 8 and expansion 8 at Table-1 sizes), expert choice with k = G,
  and the extra norm on the MoE output the paper found to matter for G > 1.
"""

import ml_collections

from configs import dense

ROUTERS = ("switch", "topk", "expert_choice", "base", "hash", "fine_grained")
SIZES = dense.SIZES


def _moe(c: ml_collections.ConfigDict, router: str, tiny: bool) -> None:
  experts = 8 if tiny else 64
  moe = c.model.moe
  c.model.pattern = ("dense", "moe")
  if router == "switch":
    moe.update(num_experts=experts)
  elif router == "topk":
    moe.update(router="topk", num_experts=experts, top_k=2)
  elif router == "expert_choice":
    moe.update(router="expert_choice", num_experts=experts, capacity_factor=2.0)
  elif router == "base":
    moe.update(router="base", num_experts=experts, capacity_factor=1.0)
  elif router == "hash":
    moe.update(router="hash", num_experts=16 if tiny else 64, capacity_factor=0.0)
    layers = c.model.num_layers
    c.model.pattern = tuple("moe" if i == layers // 2 else "dense" for i in range(layers))
  elif router == "fine_grained":
    g, e = (4, 4) if tiny else (8, 8)
    moe.update(router="expert_choice", num_experts=g * e, top_k=g, granularity=g,
               capacity_factor=1.0, output_norm=True)


def get_config(arg: str = "switch_tiny") -> ml_collections.ConfigDict:
  router, _, size = arg.rpartition("_")
  if router not in ROUTERS or size not in SIZES:
    raise ValueError(f"configs/moe.py:{arg}: expected <router>_<size> with router in "
                     f"{list(ROUTERS)} and size in {list(SIZES)}")
  c = dense.get_config(size)
  _moe(c, router, size == "tiny")
  return c
