"""Seed 001, Chatelain et al. 2021: is the number of trainable parameters all that matters?

Dense vs doped (frozen random MLPs) vs structured (Adaptive FastFood, block-Hadamard) over
widths and budgets. Claim: plotted against *trainable* parameters they share the dense curve;
against total (emulated) parameters they do not. Run with

  python study.py run --spec configs/studies/chatelain.py:cpu --dir runs/chatelain
  python study.py run --spec configs/studies/chatelain.py:table1 --dir gs://BUCKET/chatelain \
      --shard 0/8
"""

from configs.studies import common
from zoo.studies import verdicts
from zoo.studies.spec import StudySpec, Variant

CLAIM = "loss vs compute depends only on trainable parameters"
OTHERS = ("doped", "fastfood", "block_hadamard")


def verdict(df):
  return [verdicts.same_curve(df, "dense", v, f"{v} lies on the dense curve by trainable N, "
                              "not by total N") for v in OTHERS]


def get_spec(scale: str = "cpu") -> StudySpec:
  common.check_scale("chatelain", scale)
  if scale == "cpu":  # 4 variants x 3 widths x 2 budgets = 24 runs (structured is slow on CPU)
    variants = (Variant("dense", "configs/dense.py:tiny"),
                Variant("doped", "configs/doped.py:tiny"),
                Variant("fastfood", "configs/structured.py:tiny_fastfood"),
                Variant("block_hadamard", "configs/structured.py:tiny_block_hadamard"))
    return StudySpec("chatelain", CLAIM, variants, common.widths(32, 64, 128),
                     budgets=(5e11, 1.5e12), shared=common.CPU_SHARED, verdict=verdict)
  # Tables 1-3: each size is the preset of that name; the structured models exist at one
  # size (12 layers, width 1024), listed under "medium" (the same width).
  variants = (Variant("dense", "configs/dense.py:{size}"),
              Variant("doped", "configs/doped.py:{size}"),
              Variant("fastfood", "configs/structured.py:fastfood", sizes=("medium",)),
              Variant("block_hadamard", "configs/structured.py:block_hadamard",
                      sizes=("medium",)))
  return StudySpec("chatelain", CLAIM, variants, common.presets("xsmall", "small", "medium"),
                   budgets=(1e18, 3e18, 1e19), shared=common.TABLE1_SHARED, verdict=verdict)
