"""Parameters, compute and loss of the Ladder, Staircase, doped and structured families on a CPU.

Trains each family's `tiny` preset for the same number of steps on the offline default data
(the standard-library corpus) through `zoo.training.train`, then prints one table: parameters
(trainable non-embedding, frozen, emulated dense), training FLOPs (per token and for the
whole run, from zoo.accounting), validation loss, and the median step time. Writes the
numbers as JSON.

  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/families_cpu.py [--steps=100] \
      [--batch_size=8] [--seq_len=128] [--only=dense,doped]

Sizes are the `tiny` presets (width 256, 4 layers; doped 5 layers) with a shorter batch
and sequence so the whole table takes about ten minutes on two cores. Equal steps means
equal tokens, not equal compute: the point of the table is how the families trade
parameters against FLOPs. Timings on a shared machine are noisy.
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

from configs import dense, doped, ladder, staircase, structured  # noqa: E402
from zoo import accounting  # noqa: E402
from zoo import config as config_lib  # noqa: E402
from short_runs import short_config, timed_run  # noqa: E402

# name: (config module, preset, ConfigDict overrides as (dotted field, value))
FAMILIES = {
    "dense": (dense, "tiny", ()),
    "ladder_x2": (ladder, "tiny", (("model.ladder.ladder_size", 2),)),
    "ladder_x3": (ladder, "tiny", (("model.ladder.ladder_size", 3),)),
    "staircase": (staircase, "tiny", ()),
    "doped": (doped, "tiny", ()),
    "fastfood": (structured, "tiny_fastfood", ()),
    "block_hadamard": (structured, "tiny_block_hadamard", ()),
}

_STEPS = flags.DEFINE_integer("steps", 100, "Train steps for every family.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Sequences per step.")
_SEQ = flags.DEFINE_integer("seq_len", 128, "Tokens per sequence.")
_EVAL_TOKENS = flags.DEFINE_integer("eval_tokens", 8192, "Validation tokens at the end.")
_ONLY = flags.DEFINE_list("only", list(FAMILIES), "Which families to run.")
_WORKDIR = flags.DEFINE_string("workdir", "", "Where runs go ('' for a temporary folder).")
_OUT = flags.DEFINE_string("out", os.path.join(ROOT, "benchmarks", "families_cpu.json"),
                           "Where the JSON results go ('' for nowhere).")


def make_config(name: str) -> config_lib.Config:
  module, preset, overrides = FAMILIES[name]
  return short_config(module.get_config(preset), steps=_STEPS.value, batch_size=_BATCH.value,
                      seq_len=_SEQ.value, eval_tokens=_EVAL_TOKENS.value,
                      overrides=overrides)


def run(name: str, root: str) -> dict:
  cfg = make_config(name)
  _, row = timed_run(name, cfg, os.path.join(root, name))
  params = accounting.count_params(cfg.model)
  return {**row, "trainable_non_embedding": params.trainable_non_embedding,
          "embedding": params.embedding, "frozen": params.frozen,
          "structured": params.structured_params, "emulated_dense": params.emulated_dense}


def table(rows: list[dict]) -> str:
  head = ("| family | trainable non-emb | frozen | emulated dense | train MFLOP/token | "
          "train TFLOP (run) | val loss | step time s |")
  lines = [head, "|" + "---|" * 8]
  for r in rows:
    emulated = (f"{r['emulated_dense'] / 1e6:.2f}M ({r['structured'] / 1e6:.3f}M struct.)"
                if r["emulated_dense"] else "0")
    lines.append(
        f"| {r['run']} | {r['trainable_non_embedding'] / 1e6:.2f}M | "
        f"{r['frozen'] / 1e6:.2f}M | {emulated} | {r['train_flops_per_token'] / 1e6:.1f} | "
        f"{r['train_flops_total'] / 1e12:.2f} | {r['eval_loss']:.3f} | {r['step_time_s']:.3f} |")
  return "\n".join(lines)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  unknown = set(_ONLY.value) - set(FAMILIES)
  if unknown:
    raise app.UsageError(f"--only: unknown {sorted(unknown)}; allowed {list(FAMILIES)}")
  load_before = os.getloadavg()
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for name in (n for n in FAMILIES if n in _ONLY.value):
      rows.append(run(name, _WORKDIR.value or tmp))  # with its load average: context
      if _OUT.value:  # after every family, so a long run that is stopped keeps its rows
        with open(_OUT.value, "w") as f:
          json.dump({"rows": rows, "machine": platform.platform(), "cpus": os.cpu_count(),
                     "load_before": load_before, "steps": _STEPS.value,
                     "batch_size": _BATCH.value, "seq_len": _SEQ.value}, f, indent=2)
  print(table(rows))
  if _OUT.value:
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
