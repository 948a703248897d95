"""Verdicts hold, fail or stay open on synthetic tables built to say so; every seed spec
expands into runs whose isoFLOP groups spend their budget."""

import numpy as np
import pandas as pd
import pytest

from zoo.studies import spec as spec_lib
from zoo.studies import results, verdicts


def curve_table(doped_shift=0.0, seeds=(0, 1)):
  """Dense and doped runs whose loss depends on trainable N only (plus `doped_shift`)."""
  rng = np.random.default_rng(0)
  rows = []
  for budget in (1e12, 3e12):
    for n in (1e5, 3e5, 1e6, 3e6):
      for variant, frozen in (("dense", 0.0), ("doped", 0.7)):
        trainable = n * (1 - frozen / 2)
        for seed in seeds:
          loss = 5 - 0.2 * np.log10(trainable) - 0.1 * np.log10(budget) + rng.normal(0, 1e-3)
          rows.append({"variant": variant, "size": f"{n:.0e}", "budget": budget, "seed": seed,
                       "params_trainable": trainable, "params_emulated": n,
                       "params_total": n, "loss": loss + doped_shift * (variant == "doped"),
                       "loss_stderr": 1e-3, "step_time_s": 1.0})
  return pd.DataFrame(rows)


def test_same_curve_holds_when_only_trainable_parameters_count():
  row = verdicts.same_curve(curve_table(), "dense", "doped", "claim")
  print(row)
  assert row["verdict"] == verdicts.HOLDS


def test_same_curve_fails_when_doped_is_worse():
  row = verdicts.same_curve(curve_table(doped_shift=0.1), "dense", "doped", "claim")
  assert row["verdict"] == verdicts.FAILS


def test_no_error_estimate_is_not_resolved():
  df = curve_table(seeds=(0,)).assign(loss_stderr=np.nan)
  row = verdicts.compare_best(df, "doped", "dense", "claim")
  assert row["verdict"] == verdicts.OPEN and "no error estimate" in row["measured"]


def test_trend_needs_two_standard_errors():
  g = np.array([1, 2, 4, 8])
  assert verdicts.trend(g, 3 - 0.05 * np.log2(g), 0.001, "c", sign=-1, label="x")["verdict"] \
      == verdicts.HOLDS
  assert verdicts.trend(g, 3 - 0.001 * np.log2(g), 0.01, "c", sign=-1, label="x")["verdict"] \
      == verdicts.OPEN


@pytest.mark.parametrize("study", ["chatelain", "raposo", "roller", "krajewski"])
def test_seed_specs_are_isoflop_and_give_a_verdict(study):
  spec = spec_lib.load_spec(f"configs/studies/{study}.py:cpu")
  runs, skipped = spec_lib.expand(spec, 8)
  spreads = spec_lib.isoflop_spread(runs)
  print(study, len(runs), "runs", {f"{b:.3g}": f"{s:.2%}" for b, s in spreads.items()})
  assert not skipped and len(runs) >= 16
  assert max(spreads.values()) < 0.01  # whole steps: the issue asks for 1%
  rng = np.random.default_rng(0)  # made-up losses: the verdict code runs on any outcome
  df = pd.DataFrame([results.describe(r) for r in runs]).assign(
      loss=lambda d: 6 - 0.1 * np.log10(d.C) + rng.normal(0, 0.01, len(d)),
      loss_stderr=0.005, step_time_s=1.0)
  rows = spec.verdict(df)
  print(verdicts.table(rows))
  assert rows and all(r["verdict"] in (verdicts.HOLDS, verdicts.FAILS, verdicts.OPEN)
                      for r in rows)
