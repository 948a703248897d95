"""Every plot renders from a synthetic results table, as PNG and SVG."""

import numpy as np
import pandas as pd

from zoo.studies import plots


def test_all_plots_from_a_table(tmp_path):
  rng = np.random.default_rng(0)
  rows = []
  for variant in ("dense", "doped"):
    for budget in (1e12, 3e12):
      for n in (2e5, 8e5, 3e6):
        for g in (1, 4):
          rows.append({"variant": variant, "size": f"n{n:.0e}", "budget": budget,
                       "C": budget * rng.uniform(0.99, 1.01), "G": g,
                       "params_total": n, "params_trainable": n * 0.6, "params_active": n,
                       "params_emulated": n, "loss": 5 - 0.1 * np.log(budget / 1e12)
                       + 0.2 * (np.log10(n) - 6) ** 2 - 0.02 * g})
  paths = plots.all_plots(pd.DataFrame(rows), str(tmp_path), "synthetic")
  names = {p.rsplit("/", 1)[1] for p in paths}
  assert {"loss_vs_compute.png", "isoflop_total.svg", "loss_vs_params.png",
          "loss_vs_granularity.svg"} <= names
  assert all((tmp_path / n).stat().st_size > 1000 for n in names)
