"""Seed 000, Roller et al. 2021 and Ju et al. 2021: parameters without compute (Hash vs
Switch as experts grow, at equal compute) and compute without parameters (Ladder).

Claims: Hash layers beat Switch layers more as the number of experts grows; a Ladder x2
(the same weights applied twice, about twice the FLOPs per token) beats the dense model of
the same size trained on the same tokens (`tokens_of="dense"`: the Ladder runs take the
dense runs' steps, so they spend more than the budget). Run with

  python study.py run --spec configs/studies/roller.py:cpu --dir runs/roller
"""

import numpy as np

from configs.studies import common
from zoo.studies import verdicts
from zoo.studies.spec import StudySpec, Variant

CLAIM = "Hash beats Switch more as experts grow; Ladder adds loss-reducing compute"
EXPERTS = (4, 8, 16)


def verdict(df):
  gaps = []
  for e in EXPERTS:
    h, s = verdicts.best(df, f"hash{e}"), verdicts.best(df, f"switch{e}")
    if len(h) and len(s):
      gaps.append((e, float(h.loss.iloc[-1] - s.loss.iloc[-1])))
  x, y = (np.array(v) for v in zip(*gaps)) if gaps else (np.array([]), np.array([]))
  return [verdicts.trend(x, y, verdicts.noise(df) * np.sqrt(2),
                         "Hash minus Switch loss falls as experts grow", sign=-1,
                         label="hash - switch best loss (largest budget)"),
          verdicts.compare_best(df, f"hash{EXPERTS[-1]}", f"switch{EXPERTS[-1]}",
                                f"Hash beats Switch at {EXPERTS[-1]} experts"),
          verdicts.compare_best(df, "ladder", "dense",
                                "Ladder x2 beats dense of equal size on equal tokens")]


def moe(router: str, experts: int, preset: str) -> Variant:
  return Variant(f"{router}{experts}", preset, tags={"experts": experts},
                 overrides={"model.moe.num_experts": experts})


def get_spec(scale: str = "cpu") -> StudySpec:
  common.check_scale("roller", scale)
  size = "tiny" if scale == "cpu" else "{size}"
  variants = ((Variant("dense", f"configs/dense.py:{size}"),
               Variant("ladder", f"configs/ladder.py:{size}", tokens_of="dense"))
              + tuple(moe(r, e, f"configs/moe.py:{r}_{size}")
                      for r in ("hash", "switch") for e in EXPERTS))
  if scale == "cpu":  # 8 variants x 2 widths x 1 budget = 16 runs
    return StudySpec("roller", CLAIM, variants, common.widths(64, 128), budgets=(2e12,),
                     shared=common.CPU_SHARED, verdict=verdict)
  return StudySpec("roller", CLAIM, variants, common.presets("xsmall", "small"),
                   budgets=(1e19,), shared=common.TABLE1_SHARED, verdict=verdict)
