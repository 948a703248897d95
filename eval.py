"""Evaluates a run's checkpoint, and samples from it.

  python eval.py --workdir DIR [--step N] [--split validation] [--eval_tokens 1048576]
  python eval.py --workdir DIR --data.source=local_text --data.path=notes.txt
  python eval.py --workdir DIR --sample "def fibonacci(" [--temperature 0.8 --top_k 40]
  python eval.py --workdir DIR --figures   # the families' figures, e.g. DIR/routing_map.png

Restores onto whatever devices exist (several processes: train.py's cluster flags), reports loss with its standard error, perplexity and
bits per byte on the run's validation sample of the split (the same sequences the training
loop evaluated), plus what the run's families report (Mixture-of-Depths:
"mod_predictor_accuracy", the sampling predictor's agreement with the top-k decisions, ...),
prints them, then writes DIR/eval.json (a failed write is one line; the result is already on
the terminal). Sampling arguments are checked against the run (context, vocabulary) before
anything is restored.
--data.FIELD overrides evaluate on other data (the run's tokenizer is always used).
"""

import dataclasses
import json
import os
import sys

from absl import flags, logging

from zoo import cli
from zoo.config import ConfigError, DataConfig
from zoo.training import distributed

_WORKDIR = flags.DEFINE_string("workdir", None, "A directory written by train.py.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
_SPLIT = flags.DEFINE_string("split", "validation", "The split to evaluate.")
_EVAL_TOKENS = flags.DEFINE_integer("eval_tokens", None, "Sample size (default: the run's).")
_SAMPLE = flags.DEFINE_string("sample", None, "A prompt to continue instead of evaluating.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "Tokens to sample.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 is greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sample among the k most likely (0: all).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_FIGURES = flags.DEFINE_bool(
    "figures", False, "Also draw the run's figures into DIR (e.g. a routing map).")
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
    cli.fail(e, code=2)
  with distributed.fail_fast():
    _evaluate()


def _evaluate():
  from zoo import checkpoint, evaluation, workdir
  from zoo.training import metrics, restore

  types = {f.name: f.type for f in dataclasses.fields(DataConfig)}
  overrides = {name: int(flag.value) if types[name] == "int" else flag.value
               for name, flag in _DATA.items() if flag.value is not None}
  overrides["eval_split"] = _SPLIT.value
  try:
    if _SAMPLE.value is not None:  # checked before anything is restored
      evaluation.check_sampling(restore.load_config(_WORKDIR.value, overrides),
                                max_new_tokens=_MAX_NEW.value, temperature=_TEMPERATURE.value,
                                top_k=_TOP_K.value)
    extra = {} if _EVAL_TOKENS.value is None else {"eval_tokens": _EVAL_TOKENS.value}
    run = restore.load_run(_WORKDIR.value, step=_STEP.value, data_overrides=overrides, **extra)
    if _SAMPLE.value is not None:
      text = evaluation.sample(run.model(), run.tokenizer, _SAMPLE.value,
                               max_new_tokens=_MAX_NEW.value, temperature=_TEMPERATURE.value,
                               top_k=_TOP_K.value, seed=_SEED.value, context=run.cfg.seq_len,
                               warn=lambda line: print(line, file=sys.stderr))
      distributed.echo(_SAMPLE.value + text)
      return
    result = restore.evaluate(run)
    result.update(restore.family_statistics(run))
    distributed.echo(json.dumps(result))  # before writing: a failed write loses nothing
    if distributed.is_primary():
      if _FIGURES.value:
        result["figures"] = restore.family_figures(run, _WORKDIR.value)
        metrics.add_images(_WORKDIR.value, run.step, result["figures"])  # TensorBoard too
      workdir.atomic_write(os.path.join(_WORKDIR.value, "eval.json"),
                           json.dumps(result, indent=2))
  except (ConfigError, checkpoint.CheckpointError, evaluation.SamplingError,
          workdir.WorkdirError) as e:
    cli.fail(e, code=1)


if __name__ == "__main__":
  cli.run(main)
