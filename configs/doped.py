"""Doped models: trainable layers alternating with frozen random MLPs (Chatelain et al. 2021).

Sizes (arg): tiny, xsmall, small, medium. Run with, e.g.

  python train.py --config configs/doped.py:tiny --workdir /tmp/zoo/doped_tiny
  python train.py --config configs/doped.py:small --workdir gs://BUCKET/doped_small \
      --config.data.source=tfds --config.data.name=c4/en

Table 2 of "Is the Number of Trainable Parameters All That Actually Matters?"
(arXiv:2109.11928): doped xsmall 5 layers (3 trainable, 2 frozen), width 768, 12 heads;
doped small 11 (6 trainable, 5 frozen), 768, 12 heads; doped medium 23 (12, 11), 1024, 16
heads; the other hyperparameters are Table 1's (configs/dense.py). The pattern
("dense", "frozen_mlp") tiled over an odd depth puts trainable layers first and last. Each
frozen MLP has hidden width 6 x d_model (model.doped.frozen_hidden_mult).
"""

import ml_collections

from configs import dense

TABLE2 = {  # name: (dense Table-1 size with the same width, heads and lr; total layers)
    "xsmall": ("xsmall", 5),
    "small": ("small", 11),
    "medium": ("medium", 23),
}
SIZES = ("tiny",) + tuple(TABLE2)


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"configs/doped.py:{arg}: unknown size; allowed {list(SIZES)}")
  if arg == "tiny":
    c = dense.get_config("tiny")
    c.model.num_layers = 5  # 3 trainable dense layers, 2 frozen MLPs
  else:
    size, layers = TABLE2[arg]
    c = dense.get_config(size)
    c.model.num_layers = layers
  c.model.pattern = ("dense", "frozen_mlp")
  return c
