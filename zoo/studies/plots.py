"""Study plots with matplotlib (Agg), each written as PNG and SVG: loss vs compute per
variant with the frontier and a fitted L(C); isoFLOP curves with their fitted minima; loss
vs each parameter count (Chatelain et al.'s comparison); loss vs granularity G."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from zoo.studies import fits
from zoo.studies.results import N_COLUMNS


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _save(fig, out_dir: str, name: str) -> list[str]:
  from matplotlib import ticker
  for ax in fig.axes:  # label minor log ticks only on an axis under half a decade wide, so
    if ax.get_xscale() == "log":  # that narrow panels do not print 2, 3, 4 x 10^5 on top
      ax.xaxis.set_minor_formatter(ticker.LogFormatterSciNotation(   # of each other
          labelOnlyBase=False, minor_thresholds=(0.5, 0.2)))
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, f"{name}.{ext}") for ext in ("png", "svg")]
  for p in paths:
    fig.savefig(p, dpi=120, bbox_inches="tight")
  _pyplot().close(fig)
  return paths


def loss_vs_compute(df: pd.DataFrame, out_dir: str, title: str = "") -> list[str]:
  """Every run, coloured by variant; the frontier of all runs and L(C) = (C0/C)^alpha fitted
  through it."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  for variant, d in df.groupby("variant", sort=False):
    ax.scatter(d.C, d.loss, label=variant, s=22)
  front = fits.frontier(df)
  ax.plot(front.C, front.loss, "k--", lw=1, label="frontier")
  fit = fits.kaplan(df.assign(N=1.0, D=1.0), irreducible=False, n_boot=0)  # needs C, loss
  if fit.ok:
    c = np.geomspace(df.C.min(), df.C.max(), 50)
    ax.plot(c, (fit["C0"] / c) ** fit["alpha"], "k-", lw=1.5,
            label=f"fit: L ∝ C^{fit['slope']:.3f}")
  ax.set(xscale="log", xlabel="training compute C (FLOPs)", ylabel="validation loss (nats/token)",
         title=title or "loss vs compute")
  ax.legend(fontsize=8)
  return _save(fig, out_dir, "loss_vs_compute")


def isoflop(df: pd.DataFrame, out_dir: str, n: str = "total", title: str = "") -> list[str]:
  """Loss vs parameters, one curve per budget and variant, with Approach 2's parabola minima."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  col = N_COLUMNS[n]
  for (variant, budget), d in df.groupby(["variant", "budget"], sort=False):
    d = d.groupby(col, as_index=False)["loss"].mean().sort_values(col)
    line, = ax.plot(d[col], d.loss, "o-", label=f"{variant} C={budget:.2g}")
    data = fits.columns(d.assign(N=d[col], D=1.0, C=budget))
    minima, _ = fits.isoflop_minima(data, np.zeros(len(data), int))
    if len(minima):
      ax.plot(minima.N, minima.loss, "*", ms=14, color=line.get_color(), mec="k")
  ax.set(xscale="log", xlabel=f"parameters ({n}, non-embedding)",
         ylabel="validation loss (nats/token)", title=title or "isoFLOP curves (★ fitted minima)")
  ax.legend(fontsize=7)
  return _save(fig, out_dir, f"isoflop_{n}")


def loss_vs_params(df: pd.DataFrame, out_dir: str, title: str = "") -> list[str]:
  """One panel per parameter count: variants that share a curve in one panel and not in
  another show which count matters (Chatelain et al. 2021)."""
  plt = _pyplot()
  kinds = ("total", "trainable", "active", "emulated")
  fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.8), sharey=True)
  for ax, kind in zip(axes, kinds):
    for (variant, budget), d in df.groupby(["variant", "budget"], sort=False):
      d = d.sort_values(N_COLUMNS[kind])
      ax.plot(d[N_COLUMNS[kind]], d.loss, "o-", label=f"{variant} C={budget:.2g}")
    ax.set(xscale="log", xlabel=f"{kind} non-embedding parameters", title=kind)
  axes[0].set_ylabel("validation loss (nats/token)")
  axes[-1].legend(fontsize=7)
  fig.suptitle(title or "loss vs each parameter count")
  return _save(fig, out_dir, "loss_vs_params")


def loss_vs_granularity(df: pd.DataFrame, out_dir: str, title: str = "") -> list[str]:
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  for (size, budget), d in df.groupby(["size", "budget"], sort=False):
    d = d.groupby("G", as_index=False)["loss"].mean().sort_values("G")
    ax.plot(d.G, d.loss, "o-", label=f"{size} C={budget:.2g}")
  ax.set(xscale="log", xlabel="granularity G (d_ff / d_expert)",
         ylabel="validation loss (nats/token)", title=title or "loss vs granularity")
  ax.set_xticks(sorted(df.G.unique()), labels=[str(int(g)) for g in sorted(df.G.unique())])
  ax.legend(fontsize=8)
  return _save(fig, out_dir, "loss_vs_granularity")


def all_plots(df: pd.DataFrame, out_dir: str, name: str = "") -> list[str]:
  """Every plot that the table's columns support."""
  df = df[df.loss.notna()]
  if df.empty:
    return []
  paths = loss_vs_compute(df, out_dir, f"{name}: loss vs compute")
  paths += isoflop(df, out_dir, "total", f"{name}: isoFLOP curves")
  paths += loss_vs_params(df, out_dir, f"{name}: loss vs parameter counts")
  if "G" in df.columns:
    paths += loss_vs_granularity(df, out_dir, f"{name}: loss vs granularity")
  return paths
