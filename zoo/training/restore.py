"""Restoring a run's checkpoint from its workdir, for eval.py, notebooks and sampling.

`load_run` restores a workdir's checkpoint onto whatever devices exist (CPU, one GPU, a TPU
slice) through an abstract target built for the current mesh.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
from flax import nnx

from zoo import checkpoint, data, evaluation, registry, sharding
from zoo import config as config_lib
from zoo.config import Config, ConfigError
from zoo.training import step as step_lib


@dataclasses.dataclass
class Run:
  """A restored checkpoint: what eval.py, notebooks and the families' hooks receive."""

  cfg: Config
  step: int
  mesh: jax.sharding.Mesh
  trainer: step_lib.Trainer
  state: step_lib.TrainState
  tokenizer: data.Tokenizer
  eval_fn: object
  workdir: str = ""

  def model(self) -> nnx.Module:
    return self.trainer.model(self.state)

  def eval_set(self) -> data.EvalSet:
    """The run's fixed validation sample (the sequences the training loop evaluated)."""
    cfg = self.cfg
    return data.make_eval_set(cfg.data, self.tokenizer, seq_len=cfg.seq_len,
                              eval_tokens=cfg.eval_tokens)

  def eval_batches(self, num_batches: int | None = None):
    """Global batches (host arrays) of the validation sample: the first `num_batches`, or
    all of them."""
    rows = sharding.process_rows(self.mesh, self.cfg.batch_size)
    return self.eval_set().batches(self.cfg.batch_size, limit=num_batches, rows=rows)


def load_config(workdir: str, data_overrides: dict | None = None, **overrides) -> Config:
  """The run's config (its config.json) with the run's tokenizer and any overrides."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise ConfigError("workdir", workdir, "a directory written by train.py (no config.json)")
  with open(path) as f:
    raw = json.load(f)
  raw["data"].update(data_overrides or {})
  raw["data"]["tokenizer"] = os.path.join(workdir, data.TOKENIZER_FILE)
  # Files on the training machine that the saved weights were built from (a balanced hash's
  # counts): the checkpoint holds what came of them, so they need not exist here.
  for family in registry.families():
    for field in family.local_fields:
      group, name = field.split(".")
      raw["model"].get(group, {}).pop(name, None)
  # Whatever devices exist, all on the data axis; the batch rounded up to fill them.
  raw["mesh"] = {"data": -1, "fsdp": 1, "tensor": 1, "expert": 1}
  devices = jax.device_count()
  raw["batch_size"] = -(-raw["batch_size"] // devices) * devices
  raw["grad_accum_steps"] = 1
  raw.update(overrides)
  return config_lib.from_saved(raw)


def load_run(workdir: str, *, step: int | None = None, data_overrides: dict | None = None,
             **overrides) -> Run:
  """Restores `step` (default: the newest that reads) of the run in `workdir`: parameters and
  other model variables only (no optimizer state is allocated or read)."""
  cfg = load_config(workdir, data_overrides, **overrides)
  config_lib.validate(cfg, jax.device_count())
  tokenizer = data.load_tokenizer(cfg.data)
  mesh = sharding.make_mesh(cfg.mesh)
  trainer, state, shardings = step_lib.create_abstract(cfg, mesh)
  state, shardings = (dataclasses.replace(tree, opt_state=None) for tree in (state, shardings))
  skip = ("opt_state",)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=1 << 30,
                                 read_only=True)  # a run being trained is not disturbed
  try:
    if step is None:
      restored = ckpt.restore_latest(state, None, cfg, tokenizer.fingerprint, skip=skip)
      if restored is None:
        raise checkpoint.CheckpointError(f"no checkpoint in {ckpt.directory}")
      step, state = restored
    else:
      if step not in ckpt.steps():
        raise checkpoint.CheckpointError(
            f"no checkpoint {step} in {ckpt.directory}; there are {ckpt.steps()}")
      checkpoint.check_compatible(ckpt.read_meta(step), cfg, tokenizer.fingerprint,
                                  f"checkpoint {step} in {ckpt.directory}")
      state = ckpt.restore(step, state, skip=skip)
  finally:
    ckpt.close()
  eval_fn = step_lib.jit_eval(trainer, shardings, mesh)
  return Run(cfg, step, mesh, trainer, state, tokenizer, eval_fn, workdir)




def evaluate(run: Run, eval_set: data.EvalSet | None = None) -> dict:
  """zoo.evaluation.evaluate of `run` on its validation sample (or `eval_set`), with the
  step and split."""
  cfg = run.cfg
  if eval_set is None:
    eval_set = data.make_eval_set(cfg.data, run.tokenizer, seq_len=cfg.seq_len,
                                  eval_tokens=cfg.eval_tokens)
  result = evaluation.evaluate(run.eval_fn, run.state, eval_set, run.mesh, run.tokenizer,
                               global_batch_size=cfg.batch_size)
  return {"step": run.step, "split": eval_set.split, **result}


def family_statistics(run: Run, num_batches: int | None = None) -> dict:
  """What each family reports for a run (e.g. Mixture-of-Depths routing accuracy), over the
  first `num_batches` validation batches (all when None)."""
  result = {}
  for family in registry.families():
    if family.statistics is not None:
      result.update(family.statistics(run, num_batches))
  return result


def family_figures(run: Run, directory: str) -> list[str]:
  """Every figure the families draw for this run, as PNG files in `directory`."""
  paths = []
  for family in registry.families():
    if family.figures is not None:
      paths += family.figures(run, directory)
  return paths
