"""Dense rotary GPT baselines: `tiny` for a CPU, and Table 1 of Chatelain et al. 2021.

Sizes (arg): tiny, xxsmall, xsmall, small, medium. Run with, e.g.

  python train.py --config configs/dense.py:tiny --workdir /tmp/zoo/dense_tiny
  python train.py --config configs/dense.py:small --workdir gs://BUCKET/dense_small \
      --config.data.source=tfds --config.data.name=c4/en

Table 1 ("Is the Number of Trainable Parameters All That Actually Matters?", arXiv:2109.11928):
width 768 with 12 heads (xxsmall 3 layers, xsmall 6, small 12), medium 24 layers of width
1024 with 16 heads; context 1024, batch 80 sequences, Adam, peak LR 5e-4 (3e-4 medium),
cosine decay, warmup 409.6M tokens (5,000 steps of 80 x 1024), clip 1.0, dropout 0.1, no
weight decay.
"""

import ml_collections

from configs import base

TABLE1 = {  # name: (layers, width, heads, peak lr)
    "xxsmall": (3, 768, 12, 5e-4),
    "xsmall": (6, 768, 12, 5e-4),
    "small": (12, 768, 12, 5e-4),
    "medium": (24, 1024, 16, 3e-4),
}
SIZES = ("tiny",) + tuple(TABLE1)


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """About 5M parameters; trains on a 2-core CPU in minutes (see README)."""
  c.steps = 300
  c.eval_every = 100
  c.checkpoint_every = 100
  c.model.update(num_layers=4, d_model=256, num_heads=4)
  c.optimizer.update(lr=3e-3, warmup_steps=30)
  return c


def table1(c: ml_collections.ConfigDict, size: str) -> ml_collections.ConfigDict:
  layers, width, heads, lr = TABLE1[size]
  c.steps = 100_000
  c.batch_size = 80
  c.seq_len = 1024
  c.log_every = 50
  c.eval_every = 2000
  c.eval_tokens = 1_048_576
  c.checkpoint_every = 2000
  c.model.update(num_layers=layers, d_model=width, num_heads=heads, dropout=0.1,
                 compute_dtype="bfloat16", scan_layers=True)
  c.optimizer.update(name="adam", lr=lr, warmup_steps=409_600_000 // (80 * 1024), b2=0.999,
                     min_lr_ratio=0.0)
  c.data.vocab_size = 32_768
  return c


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"configs/dense.py:{arg}: unknown size; allowed {list(SIZES)}")
  c = base.get_config()
  return tiny(c) if arg == "tiny" else table1(c, arg)
