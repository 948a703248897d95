"""Writes notebooks/data/synthetic_scaling.csv: a SYNTHETIC study results table (no model
was trained), for the scaling-laws notebook until the CPU studies have been run.

Losses are Krajewski et al. 2024's fitted law for fine-grained MoE (arXiv:2402.07871,
L = c + (g/G^gamma + a)/N^alpha + b/D^beta with their published coefficients) times
log-normal noise of 0.3%, on isoFLOP grids: for each granularity G and budget C, seven
model sizes N from 1/4 to 4 times the law's compute-optimal N, and D = C / F(N, G) tokens
under their FLOP model (`zoo.studies.planner.MoeFlops`, expansion rate 64).

  python notebooks/data/make_synthetic_scaling.py
"""

import os

import numpy as np
import pandas as pd

from zoo.studies import fits, fitting, planner

PUBLISHED = {"c": 0.47, "g": 2.1, "a": 18.1, "b": 30.8, "gamma": 0.58, "alpha": 0.115,
             "beta": 0.147}
GRANULARITIES = (1, 2, 4, 8)
BUDGETS = (1e18, 3e18, 1e19, 3e19, 1e20)
NOISE = 0.003


def table(seed: int = 0) -> pd.DataFrame:
  rng = np.random.default_rng(seed)
  flops = planner.MoeFlops()
  rows = []
  for g in GRANULARITIES:
    for c in BUDGETS:
      best = planner.plan(PUBLISHED, c, flops=flops, granularities=(g,)).N[0]
      for i, n in enumerate(best * 4.0 ** np.linspace(-1, 1, 7)):
        d = c / flops.per_token(n, g)
        law = fitting.lse_predict(fits.KRAJEWSKI, PUBLISHED, {"N": [n], "D": [d], "G": [g]})[0]
        rows.append({"variant": f"G={g}", "size": f"n{i}", "budget": c, "seed": 0, "G": g,
                     "N": n, "D": d, "C": c, "params_total": n,
                     "loss": law * np.exp(NOISE * rng.standard_normal()),
                     "source": "synthetic: Krajewski et al. 2024 law + 0.3% noise"})
  return pd.DataFrame(rows)


if __name__ == "__main__":
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "synthetic_scaling.csv")
  table().to_csv(path, index=False, float_format="%.6g")
  print(f"wrote {path}")
