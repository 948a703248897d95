"""Compute-optimal fine-grained MoE: the N, D and G that minimise a fitted Krajewski law at a
training budget (Krajewski et al. 2024, §5).

Their FLOP model of a fine-grained MoE with expansion rate E and granularity G, per token:
`F/D = (12·d²·c_f + d·E·G·c_r)·n_blocks`, c_f = 6 (forward and backward of the 12·d² active
matrix parameters of a block), c_r = 14 (router logits forward and backward, dispatch and
combine); total non-embedding parameters `N = d²·(8E + 4)·n_blocks`. Width and depth are tied
by an aspect ratio d / n_blocks (`d_per_block`, 64 as in GPT-2 small's 768/12), so
`d = (N·d_per_block / (8E + 4))^(1/3)`. With `c_r = 0` the rule becomes 6·N_active·D, the
simpler Kaplan-style count.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy import optimize

from zoo.studies.fits import KRAJEWSKI
from zoo.studies.fitting import FitResult, lse_predict


@dataclasses.dataclass(frozen=True)
class MoeFlops:
  expansion: float = 64.0
  c_f: float = 6.0
  c_r: float = 14.0
  d_per_block: float = 64.0

  def shape(self, n: float) -> tuple[float, float]:
    """(d, n_blocks) of a model with `n` non-embedding parameters."""
    d = (n * self.d_per_block / (8 * self.expansion + 4)) ** (1 / 3)
    return d, d / self.d_per_block

  def per_token(self, n: float, g: float) -> float:
    d, blocks = self.shape(n)
    return (12 * d**2 * self.c_f + d * self.expansion * g * self.c_r) * blocks


def plan(fit: FitResult | dict, compute: float, *, flops: MoeFlops = MoeFlops(),
         granularities=(1, 2, 4, 8, 16, 32, 64), n_range=(1e5, 1e15)) -> pd.DataFrame:
  """For each G, the N (and D = compute / F(N, G) per token) that minimise the fitted loss;
  the row of least loss has `best` set. `n_at_bound` marks an N that hit `n_range`."""
  params = {k: (v.value if hasattr(v, "value") else v)
            for k, v in (fit.params if isinstance(fit, FitResult) else fit).items()}
  rows = []
  for g in granularities:
    def loss(log_n, g=g):
      n = np.exp(log_n)
      d = compute / flops.per_token(n, g)
      return float(lse_predict(KRAJEWSKI, params, {"N": [n], "D": [d], "G": [g]})[0])

    lo, hi = np.log(n_range[0]), np.log(n_range[1])
    res = optimize.minimize_scalar(loss, bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-6})
    n = float(np.exp(res.x))
    width, blocks = flops.shape(n)
    rows.append({"G": g, "N": n, "D": compute / flops.per_token(n, g), "loss": float(res.fun),
                 "d_model": width, "n_blocks": blocks,
                 "n_at_bound": bool(min(res.x - lo, hi - res.x) < 1e-3)})
  table = pd.DataFrame(rows)
  table["best"] = table["loss"] == table["loss"].min()
  return table
