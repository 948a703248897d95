"""One tidy row per run: what it is (variant, size, seed, parameters by kind, FLOPs), what it
spent (steps, tokens D, compute C, wall time) and what it reached (final validation loss and
its standard error from the run's metrics.jsonl).

Columns for the fits: `params_total`, `params_trainable` (trainable non-embedding, Kaplan's
and Chatelain's N), `params_active` (active per token, non-embedding), `D`, `C`, `loss`, and
any variant tags (e.g. `G`).
"""

from __future__ import annotations

import json
import math
import os

import pandas as pd

from zoo import accounting
from zoo.studies.spec import Run

DONE_FILE = "study_run.json"  # written when a run has finished; its presence means "done"
N_COLUMNS = {"total": "params_total", "trainable": "params_trainable",
             "active": "params_active", "emulated": "params_emulated"}


def describe(run: Run) -> dict:
  """The columns known before training."""
  cfg = run.cfg
  p, f = accounting.count_params(cfg.model), accounting.count_flops(cfg)
  tokens = cfg.steps * cfg.batch_size * cfg.seq_len
  return {
      "name": run.name, "family": run.variant.preset.partition(":")[0].rsplit("/", 1)[-1]
      .removesuffix(".py"), "variant": run.variant.name, "size": run.size.name,
      "seed": run.seed, "budget": run.budget, "steps": cfg.steps, "D": tokens,
      "C": cfg.steps * f.train_per_step, "flops_per_token": f.train_per_token,
      "params_total": p.total - p.embedding, "params_trainable": p.trainable_non_embedding,
      "params_frozen": p.frozen, "params_structured": p.structured_params,
      "params_emulated": p.total - p.embedding - p.structured_params + p.emulated_dense,
      "params_active": p.active_per_token - p.embedding, "params_embedding": p.embedding,
      **dict(run.variant.tags)}


def read_metrics(workdir: str) -> dict:
  """Final validation loss (and standard error, NaN where the run did not log one), the mean
  of the logged step times and throughputs."""
  path = os.path.join(workdir, "metrics.jsonl")
  out = {"loss": math.nan, "loss_stderr": math.nan, "step_time_s": math.nan,
         "tokens_per_s": math.nan}
  if not os.path.exists(path):
    return out
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  evals = [r for r in records if "eval_loss" in r]
  if evals:
    out["loss"] = evals[-1]["eval_loss"]
    out["loss_stderr"] = evals[-1].get("eval_loss_stderr", math.nan)
  steps = [r for r in records if "step_time_s" in r]
  if steps:  # the first record includes warm-up after compilation; later ones are steady
    steady = steps[1:] or steps
    out["step_time_s"] = sum(r["step_time_s"] for r in steady) / len(steady)
    out["tokens_per_s"] = sum(r["tokens_per_s"] for r in steady) / len(steady)
  return out


def is_done(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, DONE_FILE))


def mark_done(workdir: str, wall_s: float) -> None:
  path = os.path.join(workdir, DONE_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump({"wall_s": wall_s}, f)
  os.replace(path + ".tmp", path)


def wall_time(workdir: str) -> float:
  """Seconds spent in train() over every attempt (kept beside the checkpoints)."""
  path = os.path.join(workdir, "study_wall_s")
  return float(open(path).read()) if os.path.exists(path) else 0.0


def add_wall_time(workdir: str, seconds: float) -> float:
  total = wall_time(workdir) + seconds
  with open(os.path.join(workdir, "study_wall_s"), "w") as f:
    f.write(f"{total:.3f}")
  return total


def row(run: Run, study_dir: str) -> dict:
  workdir = os.path.join(study_dir, run.name)
  return {**describe(run), **read_metrics(workdir), "wall_s": wall_time(workdir),
          "done": is_done(workdir)}


def table(runs, study_dir: str) -> pd.DataFrame:
  """The study's results as a DataFrame (unfinished runs included, `done` False)."""
  return pd.DataFrame([row(r, study_dir) for r in runs])


def with_n(df: pd.DataFrame, n: str) -> pd.DataFrame:
  """`df` with column N set to the parameter count named `n` (total, trainable, active,
  emulated), for the fits."""
  if n not in N_COLUMNS:
    raise ValueError(f"n={n!r} is unknown; allowed {sorted(N_COLUMNS)}")
  return df.assign(N=df[N_COLUMNS[n]])
