"""Scaling-law fits on any table of runs (a pandas DataFrame, or a CSV read into one).

Columns: `loss`, a parameter count (`n_column`, "N" by default: which count is N is the
question of Chatelain et al. 2021, so the zoo's tables carry total, trainable non-embedding
and active counts side by side), tokens `D`, training compute `C` (6·N·D when absent) and
granularity `G` for the fine-grained law. Each fit returns a `FitResult` with bootstrap
intervals (resampling runs), or says why it cannot fit.

- `kaplan`: L(C) = E + (C0/C)^alpha on the compute-efficient frontier (Kaplan et al. 2020);
  `irreducible=False` gives their pure power law, whose slope -alpha compares with
  Chatelain et al.'s -0.041 and Kaplan's -0.048.
- `chinchilla1`, `chinchilla2`, `chinchilla3`: Hoffmann et al. 2022, Approaches 1-3.
- `krajewski`: L(N, D, G) = c + (g/G^gamma + a)/N^alpha + b/D^beta (Krajewski et al. 2024);
  its compute-optimal planner is `zoo.studies.planner`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from zoo.studies.fitting import (FitResult, LseLaw, Term, bootstrap, fit_lse_law, lse_params,
                                 power_law, refused, too_few, with_intervals)

KAPLAN = LseLaw((Term("E"), Term("k", (("alpha", "C"),))),
                grid={"E": (-1.0, 0.0, 1.0, 1.5), "k": (0.0, 2.0, 5.0, 10.0)})
CHINCHILLA = LseLaw((Term("E"), Term("A", (("alpha", "N"),)), Term("B", (("beta", "D"),))),
                    grid={"E": (-1.0, 0.0, 1.0, 1.5)})
KRAJEWSKI = LseLaw((Term("c"), Term("g", (("gamma", "G"), ("alpha", "N"))),
                    Term("a", (("alpha", "N"),)), Term("b", (("beta", "D"),))),
                   grid={"c": (-1.0, 0.0, 1.0), "gamma": (0.1, 0.5, 1.0)})


def columns(df: pd.DataFrame, n_column: str = "N", d_column: str = "D",
            c_column: str = "C", g_column: str | None = None) -> pd.DataFrame:
  """A clean frame with N, D, C, loss (and G): C is 6·N·D where the table has none; rows
  with a missing or non-positive value are dropped (a diverged run has no loss)."""
  missing = [c for c in (n_column, d_column, "loss") + ((g_column,) if g_column else ())
             if c not in df.columns]
  if missing:
    raise ValueError(f"table lacks column(s) {missing}; it has {list(df.columns)}")
  out = pd.DataFrame({"N": df[n_column], "D": df[d_column], "loss": df["loss"]}).astype(float)
  out["C"] = df[c_column].astype(float) if c_column in df.columns else 6 * out.N * out.D
  if g_column:
    out["G"] = df[g_column].astype(float)
  if "budget" in df.columns:
    out["budget"] = df["budget"].astype(float)
  keep = (out[[c for c in out.columns]] > 0).all(axis=1) & np.isfinite(out).all(axis=1)
  return out[keep].reset_index(drop=True)


def isoflop_groups(df: pd.DataFrame, tolerance_dex: float = 0.05) -> np.ndarray:
  """Group ids: the `budget` column if there is one, else runs whose log10 C lie within
  `tolerance_dex` of their neighbour (the spread of an isoFLOP group is far smaller)."""
  if "budget" in df.columns:
    return pd.factorize(df["budget"], sort=True)[0]
  logc = np.log10(df["C"].to_numpy())
  order = np.argsort(logc)
  ids = np.cumsum(np.r_[0, np.diff(logc[order]) > tolerance_dex])
  out = np.empty_like(ids)
  out[order] = ids
  return out


def frontier(df: pd.DataFrame) -> pd.DataFrame:
  """The compute-efficient frontier: runs with lower loss than every run of less compute."""
  s = df.sort_values("C")
  best = s["loss"].cummin().shift(fill_value=np.inf)
  return s[s["loss"] < best]


def _kaplan_params(theta: np.ndarray) -> dict[str, float]:
  p = lse_params(KAPLAN, theta)
  return {"E": p["E"], "alpha": p["alpha"], "C0": p["k"] ** (1 / p["alpha"]),
          "slope": -p["alpha"]}


def _kaplan_pure(f: pd.DataFrame) -> dict[str, float]:
  k, slope = power_law(f.C.to_numpy(), f.loss.to_numpy())
  return {"alpha": -slope, "C0": k ** (1 / -slope), "slope": slope}


def kaplan(df: pd.DataFrame, *, irreducible: bool = True, n_boot: int = 100, seed: int = 0,
           **cols) -> FitResult:
  data = columns(df, **cols)
  formula = "L = E + (C0/C)^alpha" if irreducible else "L = (C0/C)^alpha"
  front = frontier(data)
  min_points = 4 if irreducible else 3
  why = too_few(len(front), min_points - 1)
  if why:
    return refused("kaplan", formula, len(front), f"frontier has {why}")
  warnings = []
  if irreducible:
    theta, warnings, _ = fit_lse_law(KAPLAN, {"C": front.C.to_numpy()}, front.loss.to_numpy(),
                                     starts=8)
    point = _kaplan_params(theta)
  else:
    point = _kaplan_pure(front)

  def fit(idx):
    f = frontier(data.iloc[idx])
    if len(f) < min_points:
      return None
    if not irreducible:
      return _kaplan_pure(f)
    t, _, _ = fit_lse_law(KAPLAN, {"C": f.C.to_numpy()}, f.loss.to_numpy(), starts=1,
                          extra_starts=[theta])
    return _kaplan_params(t)

  intervals, failed = bootstrap(fit, len(data), n_boot, seed)
  warnings += [f"{failed} of {n_boot} bootstrap refits failed"] if failed else []
  return FitResult("kaplan", formula, with_intervals(point, intervals), len(front),
                   warnings=warnings,
                   extra={"frontier": front[["C", "loss"]].to_dict("list")})


def _envelope(data: pd.DataFrame, groups: np.ndarray) -> pd.DataFrame:
  """Approach 1: the run of least loss at each compute."""
  rows = data.assign(group=groups).sort_values("loss").groupby("group").head(1)
  return rows.sort_values("C")


def _optimum_laws(opt: pd.DataFrame) -> dict[str, float]:
  """N_opt = kN C^a and D_opt = kD C^b through the optima."""
  kn, a = power_law(opt.C.to_numpy(), opt.N.to_numpy())
  kd, b = power_law(opt.C.to_numpy(), opt.D.to_numpy())
  return {"a": a, "b": b, "kN": kn, "kD": kd}


def compute_bins(df: pd.DataFrame, bins: int) -> np.ndarray:
  """Bin ids of `bins` equal widths in log C (for runs or curve points that are not in
  isoFLOP groups, e.g. several token counts per model size)."""
  logc = np.log(df["C"].to_numpy())
  edges = np.linspace(logc.min(), logc.max(), bins + 1)[1:-1]
  return np.searchsorted(edges, logc, side="right")


def chinchilla1(df: pd.DataFrame, *, bins: int | None = None, n_boot: int = 100, seed: int = 0,
                **cols) -> FitResult:
  """Approach 1: the minimum-loss run per compute group (isoFLOP groups, or `bins` bins of
  log C), then N_opt(C), D_opt(C) through them."""
  data = columns(df, **cols)
  groups = compute_bins(data, bins) if bins else isoflop_groups(data)
  formula = "N_opt = kN C^a, D_opt = kD C^b (envelope)"
  env = _envelope(data, groups)
  why = too_few(len(env), 2)
  if why:
    return refused("chinchilla1", formula, len(env), f"envelope has {why}")
  fit = lambda idx: _optimum_laws(_envelope(data.iloc[idx], groups[idx]))  # noqa: E731
  intervals, _ = bootstrap(fit, len(data), n_boot, seed, strata=groups)
  return FitResult("chinchilla1", formula, with_intervals(fit(np.arange(len(data))), intervals),
                   len(data), extra={"optima": env[["C", "N", "D", "loss"]].to_dict("list")})


def isoflop_minima(data: pd.DataFrame, groups: np.ndarray) -> tuple[pd.DataFrame, list[str]]:
  """Approach 2's first stage: a parabola in log N per group, and its minimum (N*, D*, L*);
  D* from a straight line of log D on log N within the group (exact when C = 6ND)."""
  rows, warnings = [], []
  for g in np.unique(groups):
    d = data[groups == g]
    x = np.log(d.N.to_numpy())
    c = float(np.exp(np.log(d.C).mean()))
    if len(np.unique(x)) < 3:
      warnings.append(f"group C={c:.3g}: {len(np.unique(x))} sizes, a parabola needs 3")
      continue
    p2, p1, p0 = np.polyfit(x, d.loss.to_numpy(), 2)
    if p2 <= 0:
      warnings.append(f"group C={c:.3g}: the parabola opens downward; no minimum")
      continue
    xs = -p1 / (2 * p2)
    if not x.min() <= xs <= x.max():
      warnings.append(f"group C={c:.3g}: minimum N={np.exp(xs):.3g} lies outside the sizes "
                      f"trained ({np.exp(x.min()):.3g}-{np.exp(x.max()):.3g}), extrapolated")
    slope, icpt = np.polyfit(x, np.log(d.D.to_numpy()), 1)
    rows.append({"C": c, "N": float(np.exp(xs)), "D": float(np.exp(icpt + slope * xs)),
                 "loss": float(p0 + p1 * xs + p2 * xs**2), "p0": p0, "p1": p1, "p2": p2})
  return pd.DataFrame(rows), warnings


def chinchilla2(df: pd.DataFrame, *, n_boot: int = 100, seed: int = 0, **cols) -> FitResult:
  """Approach 2: isoFLOP parabolas, their minima, then N*(C), D*(C)."""
  data = columns(df, **cols)
  groups = isoflop_groups(data)
  formula = "L_C(N) parabola in log N; N* = kN C^a, D* = kD C^b"
  minima, warnings = isoflop_minima(data, groups)
  why = too_few(len(minima), 2)
  if why:
    return refused("chinchilla2", formula, len(data),
                   "; ".join([f"isoFLOP minima: {why}"] + warnings))

  def fit(idx):
    m, _ = isoflop_minima(data.iloc[idx], groups[idx])
    return _optimum_laws(m) if len(m) >= 2 else None

  intervals, failed = bootstrap(fit, len(data), n_boot, seed, strata=groups)
  warnings += [f"{failed} of {n_boot} bootstrap refits failed"] if failed else []
  return FitResult("chinchilla2", formula, with_intervals(_optimum_laws(minima), intervals),
                   len(data), warnings=warnings, extra={"minima": minima.to_dict("list")})


def _lse_fit(name: str, law: LseLaw, formula: str, data: pd.DataFrame, derive, *,
             delta: float, n_boot: int, seed: int, starts: int) -> FitResult:
  """A parametric law fitted with Huber on log residuals; bootstrap refits start from the
  full fit and the best grid point."""
  n_params = len(law.coefs) + len(law.exponents)
  why = too_few(len(data), n_params)
  if why:
    return refused(name, formula, len(data), why)
  x = {v: data[v].to_numpy() for v in law.variables}
  theta, warnings, diag = fit_lse_law(law, x, data.loss.to_numpy(), delta=delta, starts=starts)

  def fit(idx):
    xi = {v: a[idx] for v, a in x.items()}
    t, _, _ = fit_lse_law(law, xi, data.loss.to_numpy()[idx], delta=delta, starts=1,
                          extra_starts=[theta])
    return derive(lse_params(law, t))

  intervals, _ = bootstrap(fit, len(data), n_boot, seed)
  return FitResult(name, formula, with_intervals(derive(lse_params(law, theta)), intervals),
                   len(data), warnings=warnings, extra=diag)


def chinchilla3(df: pd.DataFrame, *, delta: float = 1e-3, n_boot: int = 100, seed: int = 0,
                starts: int = 16, **cols) -> FitResult:
  """Approach 3, with the compute-optimal exponents it implies under C = 6ND:
  N_opt ∝ C^(beta/(alpha+beta)), D_opt ∝ C^(alpha/(alpha+beta))."""
  def derive(p):
    s = p["alpha"] + p["beta"]
    return {**p, "a": p["beta"] / s, "b": p["alpha"] / s}
  return _lse_fit("chinchilla3", CHINCHILLA, "L = E + A/N^alpha + B/D^beta",
                  columns(df, **cols), derive, delta=delta, n_boot=n_boot, seed=seed,
                  starts=starts)


def krajewski(df: pd.DataFrame, *, delta: float = 1e-3, n_boot: int = 100, seed: int = 0,
              starts: int = 16, g_column: str = "G", **cols) -> FitResult:
  """The fine-grained MoE law. Krajewski et al. fit it with Huber (delta 0.1) on the loss and
  BFGS; here it is fitted like Approach 3 (log residuals, L-BFGS-B from a grid)."""
  return _lse_fit("krajewski", KRAJEWSKI, "L = c + (g/G^gamma + a)/N^alpha + b/D^beta",
                  columns(df, g_column=g_column, **cols), lambda p: p, delta=delta,
                  n_boot=n_boot, seed=seed, starts=starts)


LAWS = {"kaplan": kaplan, "chinchilla1": chinchilla1, "chinchilla2": chinchilla2,
        "chinchilla3": chinchilla3, "krajewski": krajewski}


def fit(df: pd.DataFrame, law: str, **kwargs) -> FitResult:
  if law not in LAWS:
    raise ValueError(f"law={law!r} is unknown; allowed {sorted(LAWS)}")
  return LAWS[law](df, **kwargs)
