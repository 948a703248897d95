"""Mixture-of-Depths tiny vs dense tiny at equal training FLOPs, on a CPU (Raposo et al. 2024).

Trains configs/dense.py:tiny for `--steps` steps and configs/mod.py:tiny (the same model
with every other block routed at 12.5% capacity) for steps / r steps, r = MoD training FLOPs
per token / dense (zoo.accounting.against), so both spend the same training FLOPs, on
the offline default data through `zoo.training.train`. Prints validation losses, median step
times, the measured step-time ratio MoD / dense beside the analytic FLOP ratio r, and writes
the numbers as JSON. Leaves the MoD workdir for `eval.py --routing_map`. Step times inside
the two training runs meet different loads on a shared machine, so the script also times
both train steps interleaved on one batch (`--timing_steps`) for a fairer ratio.

  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/mod_vs_dense.py [--steps=60] \
      [--batch_size=8] [--seq_len=256] [--workdir=/tmp/zoo/mod_vs_dense]

On a shared 2-core machine the step times are noisy (the load average is recorded).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import time

from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `configs` imports `configs.base`

from configs import dense, mod  # noqa: E402
from zoo import accounting  # noqa: E402
from zoo import config as config_lib  # noqa: E402
from short_runs import short_config, timed_run  # noqa: E402

_STEPS = flags.DEFINE_integer("steps", 60, "Dense train steps; MoD gets steps / FLOP ratio.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Sequences per step.")
_SEQ = flags.DEFINE_integer("seq_len", 256, "Tokens per sequence.")
_EVAL_TOKENS = flags.DEFINE_integer("eval_tokens", 8192, "Validation tokens at the end.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/zoo/mod_vs_dense", "Runs go in WORKDIR/<name>.")
_TIMING = flags.DEFINE_integer("timing_steps", 10, "Interleaved timing steps per model (0: none).")
_OUT = flags.DEFINE_string("out", os.path.join(ROOT, "benchmarks", "mod_vs_dense.json"),
                           "Where the JSON results go ('' for nowhere).")


def make_config(module, steps: int) -> config_lib.Config:
  return short_config(module.get_config("tiny"), steps=steps, batch_size=_BATCH.value,
                      seq_len=_SEQ.value, eval_tokens=_EVAL_TOKENS.value)


def run(name: str, cfg: config_lib.Config) -> dict:
  workdir = os.path.join(_WORKDIR.value, name)
  shutil.rmtree(workdir, ignore_errors=True)  # a fresh run, not a resume
  return timed_run(name, cfg, workdir)[1]


def interleaved_step_times(cfgs: list[config_lib.Config], steps: int) -> list[float]:
  """Median step time of each config, their steps alternating on one batch, so that the
  load from other processes on a shared machine falls on all of them alike."""
  import jax
  from zoo import sharding
  from zoo.testing import random_batch
  from zoo.training import step as step_lib

  mesh = sharding.make_mesh(cfgs[0].mesh, jax.devices()[:1])
  runs = []
  with sharding.activate(mesh):
    for cfg in cfgs:
      trainer, state, shardings = step_lib.create(cfg, mesh)
      batch = sharding.global_batch(random_batch(cfg, packed=False), mesh)
      fn = step_lib.jit_steps(trainer, shardings, mesh)[0].lower(state, batch).compile()
      state, _ = fn(state, batch)
      runs.append([fn, state, batch, []])
    for _ in range(steps):
      for run in runs:
        start = time.perf_counter()
        run[1], metrics = run[0](run[1], run[2])
        jax.block_until_ready(metrics)
        run[3].append(time.perf_counter() - start)
  return [statistics.median(run[3]) for run in runs]


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  dense_cfg = make_config(dense, _STEPS.value)
  ratio = accounting.against(make_config(mod, _STEPS.value), ("dense",))
  mod_steps = round(_STEPS.value / ratio["train_ratio"])  # equal training FLOPs
  load_before = os.getloadavg()
  rows = [run("dense_tiny", dense_cfg), run("mod_tiny", make_config(mod, mod_steps))]
  d, m = rows
  summary = {
      "rows": rows, "analytic_train_flop_ratio": ratio["train_ratio"],
      "analytic_forward_flop_ratio": ratio["forward_ratio"],
      "step_time_ratio": m["step_time_s"] / d["step_time_s"],
      "total_flop_ratio": m["train_flops_total"] / d["train_flops_total"],
      "machine": platform.platform(), "cpus": os.cpu_count(), "load_before": load_before,
      "batch_size": _BATCH.value, "seq_len": _SEQ.value}
  if _TIMING.value:
    dense_s, mod_s = interleaved_step_times([dense_cfg, make_config(mod, mod_steps)],
                                            _TIMING.value)
    summary.update(interleaved_step_s={"dense": dense_s, "mod": mod_s},
                   interleaved_step_time_ratio=mod_s / dense_s)
  print("| model | steps | params | train MFLOP/token | run TFLOP | val loss | step s |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['run']} | {r['steps']} | {r['total_params'] / 1e6:.2f}M | "
          f"{r['train_flops_per_token'] / 1e6:.2f} | {r['train_flops_total'] / 1e12:.3f} | "
          f"{r['eval_loss']:.4f} | {r['step_time_s']:.3f} |")
  print(f"step-time ratio MoD/dense {summary['step_time_ratio']:.3f} (in training), "
        f"{summary.get('interleaved_step_time_ratio', float('nan')):.3f} (interleaved); "
        f"analytic train FLOP ratio {ratio['train_ratio']:.3f} "
        f"(forward {ratio['forward_ratio']:.3f})")
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(summary, f, indent=2)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
