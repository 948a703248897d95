"""Verdicts: a seed's claim, what the study measured, and whether it holds at this scale.

A difference counts only when it exceeds twice the noise: the runs' validation standard
errors (`loss_stderr`) and the seed-to-seed spread, combined. Without either (one seed and no
standard error logged) nothing is resolved, and the verdict says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

HOLDS, FAILS, OPEN = "holds", "does not hold", "not resolved at this scale"


def noise(df: pd.DataFrame) -> float:
  """Standard deviation of one run's final loss: validation standard error and seed spread."""
  se2 = np.nanmedian(df["loss_stderr"] ** 2) if df["loss_stderr"].notna().any() else np.nan
  spread = df.groupby(["variant", "size", "budget"])["loss"].std().dropna()
  sd2 = float(np.median(spread**2)) if len(spread) else np.nan
  parts = [v for v in (se2, sd2) if np.isfinite(v)]
  return float(np.sqrt(sum(parts))) if parts else np.nan


def best(df: pd.DataFrame, variant: str) -> pd.DataFrame:
  """Per budget: the size of least seed-mean loss, its loss, seed spread and N (total)."""
  d = df[df.variant == variant]
  g = d.groupby(["budget", "size"]).agg(loss=("loss", "mean"), spread=("loss", "std"),
                                        N=("params_total", "first"),
                                        step_time_s=("step_time_s", "mean")).reset_index()
  return g.sort_values("loss").groupby("budget").head(1).sort_values("budget")


def _row(claim: str, measured: str, verdict: str) -> dict:
  return {"claim": claim, "measured": measured, "verdict": verdict}


def compare_best(df: pd.DataFrame, a: str, b: str, claim: str, *, strict: bool = True) -> dict:
  """Claim: `a`'s best loss at each budget is below `b`'s (`strict`), or not above it."""
  ba, bb, sigma = best(df, a), best(df, b), noise(df)
  diff = ba.set_index("budget")["loss"] - bb.set_index("budget")["loss"]
  diff = diff.dropna()
  measured = "; ".join(f"C={c:.2g}: {a}-{b} = {d:+.4f}" for c, d in diff.items())
  measured += f" (noise sd {sigma:.4f})" if np.isfinite(sigma) else " (no error estimate)"
  if not len(diff) or not np.isfinite(sigma):
    return _row(claim, measured, OPEN)
  margin = 2 * sigma * np.sqrt(2)
  if (diff < -margin).all() or (not strict and (diff <= margin).all()):
    return _row(claim, measured, HOLDS)
  return _row(claim, measured, FAILS if (diff > margin).any() else OPEN)


def trend(x: np.ndarray, y: np.ndarray, sigma: float, claim: str, *, sign: int,
          label: str) -> dict:
  """Claim: y moves with log2 x in direction `sign`; the slope must clear 2 standard errors
  (from `sigma` per point, or from the residuals when that is larger)."""
  x, y = np.log2(np.asarray(x, float)), np.asarray(y, float)
  if len(x) < 3 or np.ptp(x) == 0:
    return _row(claim, f"{len(x)} points: too few for a trend", OPEN)
  slope, icpt = np.polyfit(x, y, 1)
  resid = y - (icpt + slope * x)
  sd = max(sigma if np.isfinite(sigma) else 0.0, float(np.sqrt(resid @ resid / (len(x) - 2))))
  se = sd / np.sqrt(((x - x.mean()) ** 2).sum())
  measured = f"slope of {label} per doubling {slope:+.4f} ± {se:.4f}"
  if sign * slope > 2 * se:
    return _row(claim, measured, HOLDS)
  return _row(claim, measured, FAILS if -sign * slope > 2 * se else OPEN)


def same_curve(df: pd.DataFrame, reference: str, other: str, claim: str) -> dict:
  """Chatelain et al.: `other` lies on `reference`'s loss-vs-N curve when N counts trainable
  parameters, and off it when N counts total (emulated) parameters. The curve is the
  reference's loss interpolated in log N at each budget; the residual is averaged."""
  sigma, res = noise(df), {}
  for kind, col in (("trainable", "params_trainable"), ("total", "params_emulated")):
    r = []
    for budget, d in df.groupby("budget"):
      ref = d[d.variant == reference].groupby(col)["loss"].mean().sort_index()
      for n, loss in d[d.variant == other].groupby(col)["loss"].mean().items():
        if len(ref) >= 2 and ref.index.min() <= n <= ref.index.max():
          r.append(loss - np.interp(np.log(n), np.log(ref.index), ref.to_numpy()))
    res[kind] = np.mean(np.abs(r)) if r else np.nan
  measured = (f"mean |loss - {reference} curve|: by trainable N {res['trainable']:.4f}, by "
              f"total N {res['total']:.4f}"
              + (f" (noise sd {sigma:.4f})" if np.isfinite(sigma) else " (no error estimate)"))
  if not all(np.isfinite(v) for v in res.values()) or not np.isfinite(sigma):
    return _row(claim, measured + "; sizes do not overlap" if np.isfinite(sigma) else measured,
                OPEN)
  if res["trainable"] <= 2 * sigma < res["total"]:
    return _row(claim, measured, HOLDS)
  return _row(claim, measured, FAILS if res["trainable"] > 2 * sigma else OPEN)


def step_time_ratio(df: pd.DataFrame, a: str, b: str) -> float:
  """Median over sizes of a's step time over b's (same size, measured in the same study)."""
  t = df.groupby(["variant", "size"])["step_time_s"].mean()
  sizes = set(t[a].index) & set(t[b].index) if a in t and b in t else set()
  return float(np.median([t[a][s] / t[b][s] for s in sizes])) if sizes else np.nan


def larger_optimum(df: pd.DataFrame, a: str, b: str, claim: str) -> dict:
  """Claim: `a`'s compute-optimal size (least loss per budget) has more parameters than b's.

  Sizes are a grid: the same grid point is a tie (whatever parameters a variant adds at that
  width), and an optimum on the grid's edge is not resolved (the isoFLOP minimum may lie
  beyond it)."""
  ba, bb = best(df, a).set_index("budget"), best(df, b).set_index("budget")
  budgets = [c for c in ba.index if c in bb.index]
  if not budgets:
    return _row(claim, "no common budgets", OPEN)
  parts, verdicts = [], []
  for c in budgets:
    ends = {v: _grid_ends(df, v) for v in (a, b)}
    at_edge = [v for v, size in ((a, ba.loc[c, "size"]), (b, bb.loc[c, "size"]))
               if size in ends[v]]
    ratio = ba.loc[c, "N"] / bb.loc[c, "N"]
    same = ba.loc[c, "size"] == bb.loc[c, "size"]
    parts.append(f"C={c:.2g}: {a} {ba.loc[c, 'size']} vs {b} {bb.loc[c, 'size']} "
                 f"(N ratio {ratio:.2f})" + (f", optimum at the grid edge for {at_edge}"
                                             if at_edge else ""))
    verdicts.append(OPEN if same or at_edge else HOLDS if ratio > 1 else FAILS)
  verdict = verdicts[0] if len(set(verdicts)) == 1 else OPEN
  return _row(claim, "; ".join(parts), verdict)


def _grid_ends(df: pd.DataFrame, variant: str) -> set:
  """The smallest and largest size (by total parameters) the variant was trained at."""
  sizes = df[df.variant == variant].groupby("size")["params_total"].first().sort_values()
  return {sizes.index[0], sizes.index[-1]} if len(sizes) > 2 else set(sizes.index)


def faster(df: pd.DataFrame, a: str, b: str, claim: str, tolerance: float = 0.05) -> dict:
  ratio = step_time_ratio(df, a, b)
  measured = f"step time {a}/{b} = {ratio:.3f} (median over sizes, same study)"
  if not np.isfinite(ratio):
    return _row(claim, measured, OPEN)
  return _row(claim, measured, HOLDS if ratio < 1 - tolerance
              else FAILS if ratio > 1 + tolerance else OPEN)


def table(rows: list[dict]) -> str:
  return pd.DataFrame(rows).to_string(index=False, justify="left", max_colwidth=90)
