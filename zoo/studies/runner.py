"""Runs a study: each run through the ordinary training loop in `<study_dir>/<run name>`,
one after another, skipping runs finished on disk and resuming an interrupted one from its
checkpoints (train() does that). `shard="i/n"` takes every n-th run, so machines sharing the
study directory split the study without talking to each other.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
import pandas as pd
import tqdm

from zoo import sharding, testing
from zoo.studies import results, spec as spec_lib
from zoo.training import step as step_lib

RESULTS_FILE = "results.csv"


def measure_step_time(cfg, steps: int = 2) -> tuple[float, float]:
  """(seconds to build and compile, seconds per train step) of `cfg` on random tokens."""
  start = time.perf_counter()
  mesh = sharding.make_mesh(cfg.mesh)
  trainer, state, shardings = step_lib.create(cfg, mesh)
  train_fn, _ = step_lib.jit_steps(trainer, shardings, mesh)
  with sharding.activate(mesh):
    batch = sharding.global_batch(testing.random_batch(cfg, packed=False), mesh)
    state, _ = train_fn(state, batch)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
      state, _ = train_fn(state, batch)
    jax.block_until_ready(state)
  return compile_s, (time.perf_counter() - start) / steps


def dry_run(spec: spec_lib.StudySpec, *, shard: str = "0/1", time_steps: int = 2,
            echo=print) -> pd.DataFrame:
  """The table of runs without training; wall time estimated from a measured compile and
  step of each model (`time_steps=0` skips the measurement)."""
  runs, skipped = spec_lib.expand(spec, jax.device_count())
  mine = spec_lib.shard(runs, shard)
  timing: dict[tuple[str, str], tuple[float, float]] = {}
  rows = []
  for run in mine:
    key = (run.variant.name, run.size.name)
    if time_steps and key not in timing:
      timing[key] = measure_step_time(run.cfg, time_steps)
    compile_s, step_s = timing.get(key, (np.nan, np.nan))
    d = results.describe(run)
    rows.append({k: d[k] for k in ("name", "params_total", "params_trainable",
                                   "params_frozen", "params_active", "flops_per_token",
                                   "steps", "D", "C")}
                | {"est_wall_s": compile_s + run.cfg.steps * step_s})
  df = pd.DataFrame(rows)
  echo(df.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
  for budget, spread in spec_lib.isoflop_spread(runs).items():
    echo(f"budget {budget:.3g} FLOPs: spread {spread:.3%} over its runs")
  for line in skipped:
    echo(f"skipped {line}")
  echo(f"{len(mine)} runs in shard {shard} of {len(runs)}; "
       f"estimated {df.est_wall_s.sum() / 60:.1f} min")
  return df


def run(spec: spec_lib.StudySpec, study_dir: str, *, shard: str = "0/1",
        echo=print) -> pd.DataFrame:
  """Trains this shard's unfinished runs; returns (and writes) the whole study's table."""
  from zoo import training  # the data pipeline loads only when something trains

  runs, skipped = spec_lib.expand(spec, jax.device_count())
  mine = spec_lib.shard(runs, shard)
  for line in skipped:
    echo(f"skipped {line}")
  done = [r for r in mine if results.is_done(os.path.join(study_dir, r.name))]
  bar = tqdm.tqdm(total=sum(r.flops for r in mine), initial=sum(r.flops for r in done),
                  unit="FLOP", unit_scale=True, desc=f"study {spec.name}", position=0)
  bar.write(f"{len(mine)} runs in shard {shard}: {len(done)} finished already")
  for r in mine:
    workdir = os.path.join(study_dir, r.name)
    if r in done:
      continue
    bar.write(f"run {r.name}: {r.cfg.steps} steps")
    os.makedirs(workdir, exist_ok=True)
    start = time.perf_counter()
    try:
      training.train(r.cfg, workdir, echo=lambda s: None)
    finally:
      wall = results.add_wall_time(workdir, time.perf_counter() - start)
    results.mark_done(workdir, wall)
    bar.update(r.flops)
    bar.write(f"run {r.name}: done in {wall:.0f} s")
  bar.close()
  return write_table(runs, study_dir)


def write_table(runs, study_dir: str) -> pd.DataFrame:
  """results.csv from what is on disk (every shard may write it; each writes the whole)."""
  df = results.table(runs, study_dir)
  path = os.path.join(study_dir, RESULTS_FILE)
  os.makedirs(study_dir, exist_ok=True)
  df.to_csv(path + f".tmp{os.getpid()}", index=False)
  os.replace(path + f".tmp{os.getpid()}", path)
  return df
