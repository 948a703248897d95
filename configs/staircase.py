"""Staircase (Ju et al. 2021): one shared transformer run on chunks as they move up a staircase.

Sizes (arg): tiny, algorithmic, and the dense Table-1 sizes xxsmall, xsmall, small, medium
(configs/dense.py) with the paper's staircase options. Run with, e.g.

  python train.py --config configs/staircase.py:tiny --workdir /tmp/zoo/staircase_tiny

"Staircase Attention for Recurrent Processing of Sequences" (arXiv:2106.04279), small
algorithmic setting: 4 layers, width 256, FFN 1024, 4 heads, memory 128, forward size
F = 64, staircase size S = 128 (each chunk gets S / F = 2 passes), attention span 128,
Adam at 1e-4. The training length and batch of that preset are ours. `tiny` halves F, S,
memory and span to fit the dense tiny model's 256-token sequences.
"""

import ml_collections

from configs import dense

SIZES = ("tiny", "algorithmic") + tuple(dense.TABLE1)


def algorithmic(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  c.seq_len = 512
  c.batch_size = 32
  c.model.update(num_layers=4, d_model=256, d_ff=1024, num_heads=4)
  c.optimizer.update(name="adam", lr=1e-4)
  return c


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"configs/staircase.py:{arg}: unknown size; allowed {list(SIZES)}")
  c = dense.get_config("tiny" if arg == "algorithmic" else arg)
  c.model.stack = "staircase"
  c.model.scan_layers = False  # the staircase runs its layers inside a scan over steps
  # model.staircase's defaults are the paper's setting (F 64, S 128, memory and span 128).
  if arg == "tiny":
    c.model.staircase.update(forward_size=32, staircase_size=64, memory=64, attention_span=64)
  elif arg == "algorithmic":
    algorithmic(c)
  return c
