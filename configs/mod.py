"""Mixture-of-Depths (Raposo et al. 2024): the dense baselines with every other block routed.

Sizes (arg): tiny, xxsmall, xsmall, small, medium: the dense models of configs/dense.py
(Table 1 of Chatelain et al. 2021) with pattern ("dense", "mod") and capacity 12.5%, the
paper's best setting, so each has the parameters of its dense baseline (plus routers and
predictors) and fewer FLOPs per token. The routing period is the pattern: ("mod",) routes
every block, ("dense", "dense", "mod") every third. Run with, e.g.

  python train.py --config configs/mod.py:tiny --workdir /tmp/zoo/mod_tiny
  python eval.py --workdir /tmp/zoo/mod_tiny --figures
  python train.py --config configs/mod.py:tiny --workdir /tmp/zoo/mod_tiny_random \
      --config.model.mod.routing=stochastic

"Mixture-of-Depths: Dynamically allocating compute in transformer-based language models"
(arXiv:2404.02258): routing every other block at 12.5% capacity beat the isoFLOP-optimal
baseline; routing every block, or capacity below 12.5%, hurt; stochastic routing was much
worse than learned routing.
"""

import ml_collections

from configs import dense

SIZES = dense.SIZES


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"configs/mod.py:{arg}: unknown size; allowed {list(SIZES)}")
  c = dense.get_config(arg)
  c.model.pattern = ("dense", "mod")
  return c
