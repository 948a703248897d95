"""Evaluates a run's checkpoint, and samples from it.

  python eval.py --workdir DIR [--step N] [--split validation] [--num_batches 50]
  python eval.py --workdir DIR --data.source=local_text --data.path=notes.txt
  python eval.py --workdir DIR --sample "def fibonacci(" [--temperature 0.8 --top_k 40]
  python eval.py --workdir DIR --routing_map   # MoD runs: also DIR/routing_map.png

Restores onto whatever devices exist (several processes: train.py's cluster flags), reports
loss, perplexity and bits per byte on the split (MoD runs: also routing statistics, e.g.
"mod_predictor_accuracy", the sampling predictor's agreement with the top-k decisions) and
writes them to DIR/eval.json.
--data.FIELD overrides evaluate on other data (the run's tokenizer is always used).
"""

import dataclasses
import json
import os
import sys

from absl import app, flags, logging

from zoo.config import ConfigError, DataConfig
from zoo.training import distributed

_WORKDIR = flags.DEFINE_string("workdir", None, "A directory written by train.py.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
_SPLIT = flags.DEFINE_string("split", "validation", "The split to evaluate.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", None, "Batches (default: eval_batches).")
_SAMPLE = flags.DEFINE_string("sample", None, "A prompt to continue instead of evaluating.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "Tokens to sample.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 is greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sample among the k most likely (0: all).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_ROUTING_MAP = flags.DEFINE_bool(
    "routing_map", False, "MoD runs: write DIR/routing_map.png (tokens x layers routed).")
_DATA = {f.name: flags.DEFINE_string(f"data.{f.name}", None, f"Override data.{f.name}.")
         for f in dataclasses.fields(DataConfig) if f.name not in ("tokenizer", "eval_split")}
_CLUSTER = distributed.define_flags()
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    distributed.initialize(**_CLUSTER())
  except ValueError as e:
    sys.exit(f"error: {e}")
  with distributed.fail_fast():
    _evaluate()


def _evaluate():
  from zoo import checkpoint, evaluation, routing

  types = {f.name: f.type for f in dataclasses.fields(DataConfig)}
  overrides = {name: int(flag.value) if types[name] == "int" else flag.value
               for name, flag in _DATA.items() if flag.value is not None}
  overrides["eval_split"] = _SPLIT.value
  try:
    run = evaluation.load_run(_WORKDIR.value, step=_STEP.value, data_overrides=overrides)
    if _SAMPLE.value is not None:
      text = evaluation.sample(run.model(), run.tokenizer, _SAMPLE.value,
                               max_new_tokens=_MAX_NEW.value, temperature=_TEMPERATURE.value,
                               top_k=_TOP_K.value, seed=_SEED.value)
      distributed.echo(_SAMPLE.value + text)
      return
    result = evaluation.evaluate(run, num_batches=_NUM_BATCHES.value)
    result.update(routing.statistics(run, num_batches=_NUM_BATCHES.value))  # {}: no MoD
    if _ROUTING_MAP.value:
      routing.write_routing_map(run, os.path.join(_WORKDIR.value, "routing_map.png"))
  except (ConfigError, checkpoint.CheckpointError) as e:
    sys.exit(f"error: {e}")
  if distributed.is_primary():
    with open(os.path.join(_WORKDIR.value, "eval.json"), "w") as f:
      json.dump(result, f, indent=2)
  distributed.echo(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
