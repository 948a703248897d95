"""Evaluates a run's checkpoint, and samples from it.

  python eval.py --workdir DIR [--step N] [--split validation] [--num_batches 50]
  python eval.py --workdir DIR --data.source=local_text --data.path=notes.txt
  python eval.py --workdir DIR --sample "def fibonacci(" [--temperature 0.8 --top_k 40]
  python eval.py --workdir DIR --routing_map   # MoD runs: also DIR/routing_map.png

Restores onto whatever devices exist, reports loss, perplexity and bits per byte on the
split (MoD runs: also routing statistics, e.g. "mod_predictor_accuracy", the sampling
predictor's agreement with the top-k decisions), prints them, then writes DIR/eval.json (a
failed write is one line; the result is already on the terminal). Sampling arguments are
checked against the run (context, vocabulary) before anything is restored.
--data.FIELD overrides evaluate on other data (the run's tokenizer is always used).
"""

import dataclasses
import json
import os
import sys

from absl import flags, logging

from zoo import cli
from zoo.config import ConfigError, DataConfig

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
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from zoo import checkpoint, evaluation, routing, workdir

  types = {f.name: f.type for f in dataclasses.fields(DataConfig)}
  overrides = {name: int(flag.value) if types[name] == "int" else flag.value
               for name, flag in _DATA.items() if flag.value is not None}
  overrides["eval_split"] = _SPLIT.value
  try:
    if _SAMPLE.value is not None:  # checked before anything is restored
      evaluation.check_sampling(evaluation.load_config(_WORKDIR.value, overrides),
                                max_new_tokens=_MAX_NEW.value, temperature=_TEMPERATURE.value,
                                top_k=_TOP_K.value)
    run = evaluation.load_run(_WORKDIR.value, step=_STEP.value, data_overrides=overrides)
    if _SAMPLE.value is not None:
      text = evaluation.sample(run.model(), run.tokenizer, _SAMPLE.value,
                               max_new_tokens=_MAX_NEW.value, temperature=_TEMPERATURE.value,
                               top_k=_TOP_K.value, seed=_SEED.value, context=run.cfg.seq_len,
                               warn=lambda line: print(line, file=sys.stderr))
      print(_SAMPLE.value + text)
      return
    result = evaluation.evaluate(run, num_batches=_NUM_BATCHES.value)
    result.update(routing.statistics(run, num_batches=_NUM_BATCHES.value))  # {}: no MoD
    print(json.dumps(result), flush=True)  # before writing: a failed write loses nothing
    if _ROUTING_MAP.value:
      routing.write_routing_map(run, os.path.join(_WORKDIR.value, "routing_map.png"))
    workdir.atomic_write(os.path.join(_WORKDIR.value, "eval.json"), json.dumps(result, indent=2))
  except (ConfigError, checkpoint.CheckpointError, evaluation.SamplingError,
          workdir.WorkdirError) as e:
    cli.fail(e, code=1)


if __name__ == "__main__":
  cli.run(main)
