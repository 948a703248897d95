"""Seed 002, Raposo et al. 2024: Mixture-of-Depths vs dense on isoFLOP curves.

MoD routes every other block at capacity 12.5% (configs/mod.py). Claim: the isoFLOP-optimal
MoD has more parameters than the optimal dense model and no higher loss, and it steps
faster (the step-time ratio is measured in the same study). Run with

  python study.py run --spec configs/studies/raposo.py:cpu --dir runs/raposo
"""

from configs.studies import common
from zoo.studies import verdicts
from zoo.studies.spec import StudySpec, Variant

CLAIM = "the isoFLOP-optimal MoD is larger, no worse, and faster per step"


def verdict(df):
  return [verdicts.compare_best(df, "mod", "dense", "optimal MoD loss no higher than dense",
                                strict=False),
          verdicts.larger_optimum(df, "mod", "dense", "optimal MoD has more parameters"),
          verdicts.faster(df, "mod", "dense", "MoD steps faster than dense of equal size")]


def get_spec(scale: str = "cpu") -> StudySpec:
  common.check_scale("raposo", scale)
  if scale == "cpu":  # 2 variants x 4 widths x 2 budgets = 16 runs
    variants = (Variant("dense", "configs/dense.py:tiny"), Variant("mod", "configs/mod.py:tiny"))
    return StudySpec("raposo", CLAIM, variants, common.widths(64, 96, 128, 192),
                     budgets=(1e12, 3e12), shared=common.CPU_SHARED, verdict=verdict)
  variants = (Variant("dense", "configs/dense.py:{size}"), Variant("mod", "configs/mod.py:{size}"))
  return StudySpec("raposo", CLAIM, variants,
                   common.presets("xxsmall", "xsmall", "small", "medium"),
                   budgets=(6e18, 1e19, 3e19), shared=common.TABLE1_SHARED, verdict=verdict)
