"""Shared by the CPU family benchmarks: a config shortened for a quick run, and step times."""

from __future__ import annotations

import json
import os

import ml_collections

from zoo import config as config_lib


def short_config(c: ml_collections.ConfigDict, *, steps: int, batch_size: int, seq_len: int,
                 eval_batches: int, overrides=()) -> config_lib.Config:
  """`c` trained for `steps`, validated once at the end; `overrides` are (dotted field, value)."""
  c.update(dict(steps=steps, batch_size=batch_size, seq_len=seq_len,
                log_every=max(1, steps // 10), eval_every=steps, eval_batches=eval_batches,
                checkpoint_every=steps, keep_checkpoints=1))
  c.optimizer.warmup_steps = max(1, steps // 10)
  for field, value in overrides:
    group, key = field.rsplit(".", 1)
    node = c
    for part in group.split("."):
      node = node[part]
    node[key] = value
  cfg = config_lib.from_configdict(c)
  config_lib.validate(cfg, num_devices=1)
  return cfg


def step_times(workdir: str) -> list[float]:
  """The per-step times train.py logged to metrics.jsonl."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f if line.strip()]
  return [r["step_time_s"] for r in records if "step_time_s" in r]
