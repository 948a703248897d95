"""The machinery under the scaling-law fits: results with intervals, bootstrap, and a robust
fitter for laws that are sums of power-law terms.

A law here is `L = sum_k C_k * prod_j x_j^(-p_kj)`, for instance Chinchilla's
`E + A/N^alpha + B/D^beta`. Hoffmann et al. (2022) fit it in log space, as
`log L = LSE_k(log C_k - sum_j p_kj log x_j)`, minimising a Huber loss (delta 1e-3) of the
residuals with L-BFGS from a grid of initialisations; `fit_lse_law` does that for any such law,
with the analytic gradient, so the same code fits Chinchilla's Approach 3, Krajewski et al.'s
fine-grained MoE law and Kaplan's L(C) with an irreducible term.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence

import numpy as np
from scipy import optimize

LEVEL = 0.95  # two-sided bootstrap interval


@dataclasses.dataclass
class Estimate:
  value: float
  lo: float = float("nan")
  hi: float = float("nan")


@dataclasses.dataclass
class FitResult:
  """A fitted law: estimates with bootstrap intervals, or the reason there is no fit."""

  law: str
  formula: str
  params: dict[str, Estimate]
  n_points: int
  ok: bool = True
  warnings: list[str] = dataclasses.field(default_factory=list)
  extra: dict = dataclasses.field(default_factory=dict)  # law-specific (minima, frontier, ...)

  def __getitem__(self, name: str) -> float:
    return self.params[name].value

  def to_dict(self) -> dict:
    return {"law": self.law, "formula": self.formula, "ok": self.ok,
            "n_points": self.n_points, "warnings": self.warnings, "level": LEVEL,
            "params": {k: dataclasses.asdict(v) for k, v in self.params.items()},
            "extra": self.extra}

  def table(self) -> str:
    """Coefficients with their intervals, one per line, then any warnings."""
    lines = [f"{self.law}: {self.formula}  ({self.n_points} points)"]
    if not self.ok:
      return "\n".join(lines + [f"  no fit: {w}" for w in self.warnings])
    lines.append(f"  {'parameter':<12} {'estimate':>12} {'lo':>12} {'hi':>12}"
                 f"   ({LEVEL:.0%} bootstrap)")
    for name, e in self.params.items():
      lines.append(f"  {name:<12} {e.value:>12.5g} {e.lo:>12.5g} {e.hi:>12.5g}")
    return "\n".join(lines + [f"  warning: {w}" for w in self.warnings])


def refused(law: str, formula: str, n_points: int, reason: str) -> FitResult:
  return FitResult(law, formula, {}, n_points, ok=False, warnings=[reason])


def too_few(n_points: int, n_params: int) -> str | None:
  """Why a fit of `n_params` parameters cannot be made (or None): it needs one spare point."""
  if n_points <= n_params:
    return (f"{n_points} points for {n_params} parameters: need at least {n_params + 1}")
  return None


def bootstrap(fit_fn: Callable[[np.ndarray], dict[str, float] | None], n_rows: int,
              n_boot: int, seed: int, strata: np.ndarray | None = None
              ) -> tuple[dict[str, tuple[float, float]], int]:
  """Percentile intervals of `fit_fn(row_indices)` over resamples of the rows (within each
  stratum, e.g. isoFLOP group, when given). Returns intervals and the number of failed refits."""
  rng = np.random.default_rng(seed)
  groups = ([np.flatnonzero(strata == s) for s in np.unique(strata)]
            if strata is not None else [np.arange(n_rows)])
  draws, failed = [], 0
  for _ in range(n_boot):
    idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
    out = fit_fn(idx)
    if out is None:
      failed += 1
    else:
      draws.append(out)
  if not draws:
    return {}, failed
  q = (1 - LEVEL) / 2
  keys = draws[0].keys()
  return ({k: (float(np.nanquantile([d[k] for d in draws], q)),
               float(np.nanquantile([d[k] for d in draws], 1 - q))) for k in keys}, failed)


def with_intervals(point: dict[str, float], intervals: dict[str, tuple[float, float]]
                   ) -> dict[str, Estimate]:
  nan = (float("nan"), float("nan"))
  return {k: Estimate(float(v), *intervals.get(k, nan)) for k, v in point.items()}


def power_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  """Least squares of log y = log k + a log x: returns (k, a)."""
  a, log_k = np.polyfit(np.log(x), np.log(y), 1)
  return float(np.exp(log_k)), float(a)


# --- sums of power-law terms, fitted in log space --------------------------------------------

@dataclasses.dataclass(frozen=True)
class Term:
  """`coef * prod(x[var] ** -exponent for exponent, var in powers)`."""

  coef: str
  powers: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class LseLaw:
  terms: tuple[Term, ...]
  # Initial grid: log-coefficient values per coefficient name (default DEFAULT_LOG_COEFS)
  # and values per exponent name (default DEFAULT_EXPONENTS).
  grid: dict = dataclasses.field(default_factory=dict)

  @property
  def coefs(self) -> list[str]:
    return [t.coef for t in self.terms]

  @property
  def exponents(self) -> list[str]:
    return list(dict.fromkeys(p for t in self.terms for p, _ in t.powers))

  @property
  def variables(self) -> list[str]:
    return list(dict.fromkeys(v for t in self.terms for _, v in t.powers))


DEFAULT_LOG_COEFS = (0.0, 5.0, 10.0, 20.0)
DEFAULT_EXPONENTS = (0.05, 0.2, 0.5, 1.0)
LOG_COEF_BOUNDS = (-20.0, 60.0)
EXPONENT_BOUNDS = (1e-4, 4.0)


def _lse(z: np.ndarray, axis: int) -> np.ndarray:
  """log-sum-exp (scipy.special.logsumexp costs ~10x more on these small arrays)."""
  m = z.max(axis=axis, keepdims=True)
  return np.squeeze(m, axis) + np.log(np.exp(z - m).sum(axis=axis))


def _z(law: LseLaw, theta: np.ndarray, logx: dict[str, np.ndarray]) -> np.ndarray:
  """Log of each term at each point: [points, terms]."""
  k = len(law.terms)
  exps = dict(zip(law.exponents, theta[k:]))
  cols = []
  for i, t in enumerate(law.terms):
    z = np.full(len(next(iter(logx.values()))), theta[i])
    for p, v in t.powers:
      z = z - exps[p] * logx[v]
    cols.append(z)
  return np.stack(cols, axis=1)


def _objective(theta, law: LseLaw, logx, log_loss, delta):
  """Mean Huber loss of the log residuals, over delta^2 (same minimiser, better scaled for
  L-BFGS-B's tolerances), and its gradient."""
  z = _z(law, theta, logx)
  pred = _lse(z, 1)
  r = pred - log_loss
  small = np.abs(r) <= delta
  huber = np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))
  dr = np.where(small, r, delta * np.sign(r)) / (len(r) * delta**2)
  w = np.exp(z - pred[:, None]) * dr[:, None]  # d objective / d z
  grad = np.zeros_like(theta)
  k = len(law.terms)
  index = {p: k + i for i, p in enumerate(law.exponents)}
  for i, t in enumerate(law.terms):
    grad[i] = w[:, i].sum()
    for p, v in t.powers:
      grad[index[p]] -= (w[:, i] * logx[v]).sum()
  return huber.mean() / delta**2, grad


def _grid(law: LseLaw) -> tuple[np.ndarray, list[np.ndarray]]:
  axes = ([np.asarray(law.grid.get(c, DEFAULT_LOG_COEFS), float) for c in law.coefs]
          + [np.asarray(law.grid.get(p, DEFAULT_EXPONENTS), float) for p in law.exponents])
  return np.array(list(itertools.product(*axes))), axes


def fit_lse_law(law: LseLaw, x: dict[str, np.ndarray], loss: np.ndarray, *,
                delta: float = 1e-3, starts: int = 16, extra_starts: Sequence = ()
                ) -> tuple[np.ndarray, list[str], dict]:
  """Best L-BFGS-B solution from the `starts` best points of the initial grid (the grid is
  scored in one vectorised pass) plus `extra_starts`. Returns theta (log-coefficients then
  exponents), warnings, and diagnostics."""
  logx = {v: np.log(np.asarray(x[v], float)) for v in law.variables}
  log_loss = np.log(np.asarray(loss, float))
  grid, axes = _grid(law)
  scores = np.concatenate([_grid_scores(law, grid[i:i + 1024], logx, log_loss, delta)
                           for i in range(0, len(grid), 1024)])
  order = np.argsort(scores)[:starts]
  bounds = ([LOG_COEF_BOUNDS] * len(law.coefs) + [EXPONENT_BOUNDS] * len(law.exponents))
  best = None
  for theta0 in list(grid[order]) + [np.asarray(s, float) for s in extra_starts]:
    res = optimize.minimize(_objective, theta0, args=(law, logx, log_loss, delta), jac=True,
                            method="L-BFGS-B", bounds=bounds,
                            options=dict(maxiter=2000, ftol=1e-12, gtol=1e-9))
    if best is None or res.fun < best[1].fun:
      best = (theta0, res)
  _, res = best
  names = law.coefs + law.exponents
  warnings = [f"{n} = {v:.4g} stopped at its bound {b}" for n, v, b in
              ((n, v, b) for n, v, bs in zip(names, res.x, bounds) for b in bs)
              if abs(v - b) <= 1e-6 * max(1.0, abs(b))]
  warnings += [f"{n} = {v:.4g} lies outside its initial grid [{a.min():.4g}, {a.max():.4g}]"
               " (log scale for coefficients): widen the grid to check it" for n, v, a in
               zip(names, res.x, axes) if len(a) > 1 and not a.min() <= v <= a.max()]
  return res.x, warnings, {"objective": float(res.fun), "converged": bool(res.success)}


def _grid_scores(law, grid, logx, log_loss, delta) -> np.ndarray:
  """The objective at every grid point at once ([grid, points, terms])."""
  k = len(law.terms)
  index = {p: k + i for i, p in enumerate(law.exponents)}
  cols = []
  for i, t in enumerate(law.terms):
    z = np.repeat(grid[:, i:i + 1], len(log_loss), axis=1)
    for p, v in t.powers:
      z = z - grid[:, index[p]:index[p] + 1] * logx[v][None, :]
    cols.append(z)
  r = _lse(np.stack(cols, axis=2), 2) - log_loss[None, :]
  huber = np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))
  return huber.mean(axis=1) / delta**2


def lse_params(law: LseLaw, theta: np.ndarray) -> dict[str, float]:
  """Coefficients in linear scale, exponents as they are."""
  k = len(law.terms)
  out = {c: float(np.exp(v)) for c, v in zip(law.coefs, theta[:k])}
  out.update(zip(law.exponents, map(float, theta[k:])))
  return out


def lse_predict(law: LseLaw, params: dict[str, float], x: dict[str, np.ndarray]) -> np.ndarray:
  theta = np.array([np.log(params[c]) for c in law.coefs] + [params[p] for p in law.exponents])
  logx = {v: np.log(np.asarray(x[v], float)) for v in law.variables}
  return np.exp(_lse(_z(law, theta, logx), 1))
