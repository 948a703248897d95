"""Ladder (Ju et al. 2021): the whole dense stack applied model.ladder.ladder_size times.

Sizes (arg): tiny, xxsmall, xsmall, small, medium: the dense baselines of configs/dense.py
(Table 1 of Chatelain et al. 2021), so a Ladder has exactly the parameters of its dense
baseline and ladder_size times its layer FLOPs. Run with, e.g.

  python train.py --config configs/ladder.py:tiny --workdir /tmp/zoo/ladder_tiny \
      --config.model.ladder.ladder_size=3

"Staircase Attention for Recurrent Processing of Sequences" (arXiv:2106.04279): Ladder
repeats a Transformer over the full sequence with shared weights; with Hash layers (Roller
et al. 2021) a x3 Ladder took Reddit perplexity from 24.90 to 23.90.
"""

import ml_collections

from configs import dense

SIZES = dense.SIZES


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"configs/ladder.py:{arg}: unknown size; allowed {list(SIZES)}")
  c = dense.get_config(arg)
  c.model.stack = "ladder"
  return c
