"""Shared by the CPU family benchmarks: a config shortened for a quick run, training it with
its step times, and the common fields of a result row."""

from __future__ import annotations

import json
import os
import statistics
import time

import ml_collections

from zoo import accounting
from zoo import config as config_lib
from zoo.training import train


def short_config(c: ml_collections.ConfigDict, *, steps: int, batch_size: int, seq_len: int,
                 eval_tokens: int, overrides=()) -> config_lib.Config:
  """`c` trained for `steps`, validated once at the end; `overrides` are (dotted field, value)."""
  c.update(dict(steps=steps, batch_size=batch_size, seq_len=seq_len,
                log_every=max(1, steps // 10), eval_every=steps, eval_tokens=eval_tokens,
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


def timed_run(name: str, cfg: config_lib.Config, workdir: str) -> tuple[dict, dict]:
  """Trains `cfg` in `workdir` through `zoo.training.train`; returns (the last metrics, a
  row of the fields every benchmark reports: parameters, FLOPs, losses, median step time)."""
  start = time.perf_counter()
  last = train(cfg, workdir, echo=lambda line: print(f"[{name}] {line}", flush=True))
  times = step_times(workdir)
  params, flops = accounting.count_params(cfg.model), accounting.count_flops(cfg)
  row = {"run": name, "steps": cfg.steps, "tokens_per_step": cfg.batch_size * cfg.seq_len,
         "total_params": params.total, "active_params": params.active_per_token,
         "train_flops_per_token": flops.train_per_token,
         "train_flops_total": flops.train_per_step * cfg.steps,
         "eval_loss": last.get("eval_loss"), "train_loss": last.get("loss"),
         "step_time_s": statistics.median(times[1:] or times),  # the first interval warms up
         "wall_s": time.perf_counter() - start, "load_after": os.getloadavg()}
  return last, row
