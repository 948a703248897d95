"""Parallel attention + MLP blocks (GPT-J; PaLM, Chowdhery et al. 2022) at the dense sizes.

Sizes (arg): tiny, xxsmall, xsmall, small, medium (configs/dense.py). Run with, e.g.

  python train.py --config configs/parallel.py:tiny --workdir /tmp/zoo/parallel_tiny
  python train.py --config configs/parallel.py:tiny --workdir /tmp/zoo/parallel_two_norms \
      --config.model.parallel.shared_norm=False
"""

import ml_collections

from configs import dense

SIZES = dense.SIZES


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = dense.get_config(arg)
  c.model.pattern = ("parallel",)
  return c
