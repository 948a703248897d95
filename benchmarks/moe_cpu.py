"""Every MoE router and both MoDE variants against a dense model on a CPU: validation loss at
equal steps, and step time relative to a dense model with the same active FLOPs.

Trains the `tiny` preset of each router (configs/moe.py; width 256, 4 layers, MoE every
other layer, 8 experts; Hash: one MoE layer of 16 experts; fine-grained: G = 4, expansion 4),
both MoDE presets (configs/mode.py) and configs/dense.py:tiny for the same steps on the
offline default data through `zoo.training.train`, then prints one table: total and
active-per-token parameters, training FLOPs per token (zoo.accounting, routing counted as
Krajewski et al.), validation loss, the median step time over the dense model's, and that
ratio divided by the FLOP ratio ("per FLOP"): the step time against a dense model of the same
active FLOPs, 1.0 when routing costs nothing beyond its FLOPs. The dense tiny model has the
same active FLOPs as Switch, BASE and Hash up to the routing term; top-2 and expert choice at
capacity 2 use twice the expert FLOPs, MoDE fewer. Writes JSON.

  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/moe_cpu.py [--steps=60] [--batch_size=8] \
      [--seq_len=128] [--only=dense,switch]

Timings on a shared 2-core machine are noisy; the load average is recorded with each row.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile

from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `configs` imports `configs.base`

from configs import dense, mode, moe  # noqa: E402
from zoo import config as config_lib  # noqa: E402
from short_runs import short_config, timed_run  # noqa: E402

RUNS = {  # name: (config module, preset, ConfigDict overrides (dotted field, value))
    "dense": (dense, "tiny", ()),
    "switch": (moe, "switch_tiny", ()),
    "switch_dropless": (moe, "switch_tiny", (("model.moe.capacity_factor", 0.0),)),
    "top2": (moe, "topk_tiny", ()),
    "top2_dropless": (moe, "topk_tiny", (("model.moe.capacity_factor", 0.0),)),
    "expert_choice": (moe, "expert_choice_tiny", ()),
    "base": (moe, "base_tiny", ()),
    "hash": (moe, "hash_tiny", ()),
    "hash_balanced": (moe, "hash_tiny", (("model.moe.hash_kind", "balanced"),)),
    "fine_grained": (moe, "fine_grained_tiny", ()),
    "mode_staged": (mode, "staged_tiny", ()),
    "mode_integrated": (mode, "integrated_tiny", ()),
}

_STEPS = flags.DEFINE_integer("steps", 60, "Train steps for every run.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Sequences per step.")
_SEQ = flags.DEFINE_integer("seq_len", 128, "Tokens per sequence.")
_EVAL_TOKENS = flags.DEFINE_integer("eval_tokens", 8192, "Validation tokens at the end.")
_ONLY = flags.DEFINE_list("only", list(RUNS), "Which runs.")
_OUT = flags.DEFINE_string("out", os.path.join(ROOT, "benchmarks", "moe_cpu.json"),
                           "Where the JSON results go ('' for nowhere).")


def make_config(name: str) -> config_lib.Config:
  module, preset, overrides = RUNS[name]
  return short_config(module.get_config(preset), steps=_STEPS.value, batch_size=_BATCH.value,
                      seq_len=_SEQ.value, eval_tokens=_EVAL_TOKENS.value,
                      overrides=overrides)


def run(name: str, root: str) -> dict:
  last, row = timed_run(name, make_config(name), os.path.join(root, name))
  return {**row, "routing_stats": {k: v for k, v in last.items()
                                   if "/moe/" in k or "aux_loss" in k or "routed_fraction" in k}}


def table(rows: list[dict]) -> str:
  dense = next((r for r in rows if r["run"] == "dense"), None)
  lines = ["| run | total params | active params | train MFLOP/token | val loss | step s | "
           "step / dense | per FLOP |", "|" + "---|" * 8]
  for r in rows:
    rel = per_flop = "-"
    if dense:
      time_ratio = r["step_time_s"] / dense["step_time_s"]
      flop_ratio = r["train_flops_per_token"] / dense["train_flops_per_token"]
      rel, per_flop = f"{time_ratio:.2f}", f"{time_ratio / flop_ratio:.2f}"
    lines.append(f"| {r['run']} | {r['total_params'] / 1e6:.2f}M | {r['active_params'] / 1e6:.2f}M"
                 f" | {r['train_flops_per_token'] / 1e6:.1f} | {r['eval_loss']:.3f} | "
                 f"{r['step_time_s']:.3f} | {rel} | {per_flop} |")
  return "\n".join(lines)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  unknown = set(_ONLY.value) - set(RUNS)
  if unknown:
    raise app.UsageError(f"--only: unknown {sorted(unknown)}; allowed {list(RUNS)}")
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for name in (n for n in RUNS if n in _ONLY.value):
      rows.append(run(name, tmp))
      if _OUT.value:  # after every run, so a stopped benchmark keeps its rows
        with open(_OUT.value, "w") as f:
          json.dump({"rows": rows, "machine": platform.platform(), "cpus": os.cpu_count(),
                     "steps": _STEPS.value, "batch_size": _BATCH.value,
                     "seq_len": _SEQ.value}, f, indent=2)
  print(table(rows))


if __name__ == "__main__":
  app.run(main)
