"""Each fit recovers the coefficients of synthetic data drawn from its law with noise, and
refuses (or warns) when the data cannot support it. Run with -s to see true vs recovered."""

import numpy as np
import pandas as pd
import pytest

from zoo.studies import fits, planner

# Hoffmann et al. 2022 (Approach 3) and Krajewski et al. 2024 (E = 64) published values.
HOFFMANN = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
KRAJEWSKI = dict(c=0.47, a=18.1, alpha=0.115, b=30.8, beta=0.147, g=2.1, gamma=0.58)
A_OPT = HOFFMANN["beta"] / (HOFFMANN["alpha"] + HOFFMANN["beta"])  # N_opt ∝ C^a


def chinchilla_loss(n, d, p=HOFFMANN):
  return p["E"] + p["A"] / n**p["alpha"] + p["B"] / d**p["beta"]


def noisy(loss, rng, sigma):
  return loss * np.exp(rng.normal(0.0, sigma, np.shape(loss)))


def isoflop_table(seed=0, sigma=0.003):
  """Five budgets, seven sizes each around the optimum, C = 6ND."""
  rng = np.random.default_rng(seed)
  rows = []
  for c in np.logspace(18, 22, 5):
    for n in np.logspace(np.log10(c) / 2 - 1.6, np.log10(c) / 2 + 0.4, 7):
      d = c / (6 * n)
      rows.append({"N": n, "D": d, "loss": noisy(chinchilla_loss(n, d), rng, sigma)})
  return pd.DataFrame(rows)


def check(result, truth, rel):
  """Prints true vs recovered; each true value lies inside the interval and near the fit."""
  print("\n" + result.table())
  assert result.ok, result.warnings
  for name, true in truth.items():
    e = result.params[name]
    print(f"  {name}: true {true:.4g} recovered {e.value:.4g} [{e.lo:.4g}, {e.hi:.4g}]")
    assert e.lo <= true <= e.hi, name
    assert e.value == pytest.approx(true, rel=rel), name


@pytest.mark.slow
def test_chinchilla3_recovers_hoffmann():
  result = fits.chinchilla3(isoflop_table(), n_boot=20, starts=8)
  check(result, {**HOFFMANN, "a": A_OPT}, rel=0.25)
  assert result["E"] == pytest.approx(HOFFMANN["E"], rel=0.03)


def test_chinchilla2_recovers_optimal_exponents():
  result = fits.chinchilla2(isoflop_table(), n_boot=100)
  check(result, {"a": A_OPT, "b": 1 - A_OPT}, rel=0.03)
  assert len(result.extra["minima"]["N"]) == 5


def test_chinchilla1_envelope_of_training_curves():
  """Twelve sizes, each evaluated at 40 token counts (a training curve)."""
  rng = np.random.default_rng(1)
  n, d = np.meshgrid(np.logspace(7, 10, 12), np.logspace(9, 12, 40))
  table = pd.DataFrame({"N": n.ravel(), "D": d.ravel()})
  table["loss"] = noisy(chinchilla_loss(table.N, table.D), rng, 0.001)
  result = fits.chinchilla1(table, bins=8, n_boot=100)
  check(result, {"a": A_OPT, "b": 1 - A_OPT}, rel=0.15)


@pytest.mark.slow
def test_kaplan_frontier_with_irreducible_term():
  """Runs of many sizes along their curves; only the lower envelope follows the law."""
  rng = np.random.default_rng(2)
  e, c0, alpha = 1.8, 3e8, 0.3
  c = np.logspace(12, 18, 40)
  frontier_loss = e + (c0 / c) ** alpha
  above = frontier_loss[None, :] * (1 + rng.uniform(0.01, 0.2, (4, len(c))))
  table = pd.DataFrame({"C": np.tile(c, 5), "N": 1.0, "D": 1.0,
                        "loss": np.concatenate([noisy(frontier_loss, rng, 0.002),
                                                above.ravel()])})
  result = fits.kaplan(table, n_boot=20)
  check(result, {"E": e, "alpha": alpha, "C0": c0}, rel=0.3)
  assert result["E"] == pytest.approx(e, rel=0.02)


def test_kaplan_pure_power_law_slope():
  rng = np.random.default_rng(3)
  c = np.logspace(14, 18, 12)
  table = pd.DataFrame({"C": c, "N": 1.0, "D": 1.0,
                        "loss": noisy((2.3e8 / c) ** 0.048 * 10, rng, 0.002)})
  result = fits.kaplan(table, irreducible=False, n_boot=100)
  check(result, {"slope": -0.048}, rel=0.1)


@pytest.mark.slow
def test_krajewski_recovers_fine_grained_law():
  rng = np.random.default_rng(4)
  n, d, g = (a.ravel() for a in np.meshgrid(np.logspace(7, 10, 5), np.logspace(9, 12, 5),
                                            [1.0, 2.0, 4.0, 8.0, 16.0]))
  p = KRAJEWSKI
  loss = p["c"] + (p["g"] / g**p["gamma"] + p["a"]) / n**p["alpha"] + p["b"] / d**p["beta"]
  table = pd.DataFrame({"N": n, "D": d, "G": g, "loss": noisy(loss, rng, 0.001)})
  result = fits.krajewski(table, n_boot=10, starts=6)
  check(result, {k: p[k] for k in ("alpha", "beta", "gamma")}, rel=0.25)
  for name in ("c", "a", "b", "g"):  # coefficients trade off against exponents: looser
    assert result[name] == pytest.approx(p[name], rel=0.6), name


@pytest.mark.parametrize("law,points", [("chinchilla3", 5), ("krajewski", 7), ("kaplan", 3),
                                        ("chinchilla2", 7)])
def test_too_few_points_is_refused(law, points):
  table = isoflop_table().iloc[:points].assign(G=2.0)
  kwargs = {"g_column": "G"} if law == "krajewski" else {}
  result = fits.fit(table, law, **kwargs)
  print(result.table())
  assert not result.ok and "need at least" in result.warnings[0]


def test_minimum_outside_the_sizes_trained_is_flagged():
  table = isoflop_table()
  budget = np.round(np.log10(6 * table.N * table.D))
  table = table[table.N > table.N.groupby(budget).transform("median")]  # larger half only
  result = fits.chinchilla2(table, n_boot=5)
  assert any("outside the sizes trained" in w for w in result.warnings), result.warnings


def test_planner_spends_the_budget_and_prefers_finer_experts_with_more_compute():
  best = []
  for compute in (1e18, 1e22):
    table = planner.plan(KRAJEWSKI, compute)
    print(table.to_string(index=False))
    spent = table.D * [planner.MoeFlops().per_token(n, g) for n, g in zip(table.N, table.G)]
    np.testing.assert_allclose(spent, compute, rtol=1e-9)
    assert not table.n_at_bound.any()
    best.append(int(table.G[table.best].iloc[0]))
  assert best[0] < best[1], best
