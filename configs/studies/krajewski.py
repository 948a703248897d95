"""Seed 003, Krajewski et al. 2024: granularity G in {1, 2, 4, 8} at fixed active parameters
and compute (expansion rate 4 at CPU scale, 8 at Table-1 scale; configs/moe.py:fine_grained).
Claim: loss falls as G grows. Run with

  python study.py run --spec configs/studies/krajewski.py:cpu --dir runs/krajewski
  python study.py fit --csv runs/krajewski/results.csv --law krajewski --n_column params_total
"""

import numpy as np

from configs.studies import common
from zoo.studies import verdicts
from zoo.studies.spec import StudySpec, Variant

CLAIM = "at fixed active parameters and compute, loss falls as granularity G grows"
GRANULARITIES = (1, 2, 4, 8)


def verdict(df):
  top = df[df.budget == df.budget.max()]
  rows = [verdicts.best(top, f"G{g}").assign(G=g) for g in GRANULARITIES]
  best = [r for r in rows if len(r)]
  x = [int(r.G.iloc[0]) for r in best]
  y = [float(r.loss.iloc[0]) for r in best]
  return [verdicts.trend(np.array(x), np.array(y), verdicts.noise(df), CLAIM, sign=-1,
                         label=f"best loss at C={top.budget.max():.2g}")]


def variant(g: int, expansion: int, preset: str) -> Variant:
  return Variant(f"G{g}", preset, tags={"G": g},
                 overrides={"model.moe.granularity": g, "model.moe.num_experts": g * expansion,
                            "model.moe.top_k": g})


def get_spec(scale: str = "cpu") -> StudySpec:
  common.check_scale("krajewski", scale)
  if scale == "cpu":  # 4 granularities x 2 widths x 2 budgets = 16 runs
    variants = tuple(variant(g, 4, "configs/moe.py:fine_grained_tiny") for g in GRANULARITIES)
    return StudySpec("krajewski", CLAIM, variants, common.widths(64, 128), budgets=(1e12, 3e12),
                     shared=common.CPU_SHARED, verdict=verdict)
  variants = tuple(variant(g, 8, "configs/moe.py:fine_grained_{size}") for g in GRANULARITIES)
  return StudySpec("krajewski", CLAIM, variants, common.presets("xsmall", "small"),
                   budgets=(1e18, 3e18, 1e19), shared=common.TABLE1_SHARED, verdict=verdict)
