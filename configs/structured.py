"""Structured models (Chatelain et al. 2021): MLPs of Adaptive FastFood or block-Hadamard layers.

Sizes (arg): tiny (= tiny_fastfood), tiny_fastfood, tiny_block_hadamard, fastfood,
block_hadamard. Run with, e.g.

  python train.py --config configs/structured.py:tiny --workdir /tmp/zoo/fastfood_tiny
  python train.py --config configs/structured.py:block_hadamard --workdir gs://BUCKET/bh \
      --config.data.source=tfds --config.data.name=c4/en

Table 3 of "Is the Number of Trainable Parameters All That Actually Matters?"
(arXiv:2109.11928): both structured models have 12 layers, width 1024, 16 heads, peak LR
5e-4, and otherwise Table 1's hyperparameters (configs/dense.py). The block-Hadamard MLP
uses 4 blocks (model.structured.num_blocks). zoo/families/structured.py gives the formulas.
"""

import ml_collections

from configs import dense

VARIANTS = ("fastfood", "block_hadamard")
SIZES = ("tiny",) + tuple(f"tiny_{v}" for v in VARIANTS) + VARIANTS


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"configs/structured.py:{arg}: unknown size; allowed {list(SIZES)}")
  if arg.startswith("tiny"):
    c = dense.get_config("tiny")
    variant = arg.removeprefix("tiny").removeprefix("_") or "fastfood"
  else:
    c = dense.get_config("medium")  # width 1024, 16 heads
    c.model.num_layers = 12
    c.optimizer.lr = 5e-4
    variant = arg
  c.model.pattern = (variant,)
  return c
