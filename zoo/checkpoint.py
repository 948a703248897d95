"""orbax checkpoints that move between machines: async saves, keep-N, metadata, exact resume.

A checkpoint step holds three items: `state` (params, frozen and other variables, optimizer
state, step and RNG key: arrays written by tensorstore, no pickle), `data` (the grain
iterator state as JSON, one file per process) and `meta` (JSON: the config, the tokenizer
fingerprint, the layout version and library versions). Restores always go through an
abstract target built for the *current* mesh, so a run saved on a TPU pod restores on one
GPU or a CPU. An async save that is killed leaves an `*.orbax-checkpoint-tmp*` directory
that orbax ignores and removes at the next start; restore falls back to the newest step that
reads.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import platform
import time

import grain
import jax
import orbax.checkpoint as ocp

from zoo import registry
from zoo.config import Config, ModelConfig, to_dict

LAYOUT_VERSION = 1
# Model fields that may differ between the run that saved and the one that restores; the
# families add theirs (`local_fields`, e.g. a file the saved weights were built from).
FREE_MODEL_FIELDS = ("dropout", "remat", "compute_dtype")
LIBRARIES = ("jax", "flax", "optax", "orbax-checkpoint", "grain", "sentencepiece")


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be read; the message says which and why, in one line."""


class CheckpointMismatch(CheckpointError):
  """A checkpoint that reads but does not belong to this run (model, tokenizer, processes)."""


def metadata(cfg: Config, tokenizer_fingerprint: str) -> dict:
  return {
      "layout_version": LAYOUT_VERSION,
      "config": to_dict(cfg),
      "tokenizer_fingerprint": tokenizer_fingerprint,
      "versions": {"python": platform.python_version(),
                   **{name: importlib.metadata.version(name) for name in LIBRARIES}},
  }


def check_compatible(meta: dict, cfg: Config, tokenizer_fingerprint: str | None, where: str):
  """Raises CheckpointError naming the first field where the checkpoint and `cfg` differ."""
  if meta.get("layout_version") != LAYOUT_VERSION:
    raise CheckpointMismatch(
        f"{where}: layout version {meta.get('layout_version')}, this code reads {LAYOUT_VERSION}")
  saved = _flat(meta["config"]["model"])
  current = _flat(to_dict(cfg.model))
  # A field added after the checkpoint was written compares as its default.
  defaults = _flat(to_dict(dataclasses.replace(ModelConfig(), vocab_size=0)))
  free = FREE_MODEL_FIELDS + tuple(f for fam in registry.families() for f in fam.local_fields)
  for name, value in current.items():
    if name in free:
      continue
    old = saved.get(name, defaults[name])
    if old != value:
      raise CheckpointMismatch(
          f"{where} was written with model.{name}={old!r}; this run has model.{name}={value!r}")
  if tokenizer_fingerprint and meta["tokenizer_fingerprint"] != tokenizer_fingerprint:
    raise CheckpointMismatch(
        f"{where} was trained with tokenizer {meta['tokenizer_fingerprint'][:12]}; this run's "
        f"tokenizer is {tokenizer_fingerprint[:12]} (set data.tokenizer to the run's "
        "tokenizer.model)")


def _flat(fields: dict, prefix: str = "") -> dict:
  """{"moe": {"router": ...}} -> {"moe.router": ...}."""
  out = {}
  for name, value in fields.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{name}."))
    else:
      out[prefix + name] = value
  return out


class Checkpointer:
  """Saves and restores train state + data iterator state under `directory`."""

  def __init__(self, directory: str, *, keep: int, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, cleanup_tmp_directories=True,
        create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    self.last_block_s = 0.0  # how long the last save blocked the caller

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_iter, meta: dict) -> None:
    start = time.perf_counter()
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    self.last_block_s = time.perf_counter() - start

  def read_meta(self, step: int) -> dict:
    try:
      return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # noqa: BLE001  (orbax raises many kinds; all mean unreadable)
      raise CheckpointError(f"checkpoint {step} in {self.directory}: metadata unreadable "
                            f"({type(e).__name__}: {_first_line(e)})") from e

  def restore(self, step: int, abstract_state, data_iter=None):
    """The state of `step` laid out like `abstract_state`; `data_iter` is set in place."""
    abstract_state = jax.tree.map(_abstract, abstract_state)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]
    except Exception as e:  # noqa: BLE001
      raise CheckpointError(
          f"checkpoint {step} in {self.directory} cannot be read onto this mesh "
          f"({type(e).__name__}: {_first_line(e)})") from e

  def restore_latest(self, abstract_state, data_iter, cfg: Config, tokenizer_fingerprint):
    """(step, state) from the newest checkpoint that reads, or None when there is none.

    A checkpoint that does not match the config stops the run; one that does not read
    (truncated, corrupted) is skipped with a warning in favour of the next older one.
    """
    for step in reversed(self.steps()):
      where = f"checkpoint {step} in {self.directory}"
      try:
        meta = self.read_meta(step)
        check_compatible(meta, cfg, tokenizer_fingerprint, where)
        _check_process_count(self.directory, step, data_iter)
        return step, self.restore(step, abstract_state, data_iter)
      except CheckpointMismatch:
        raise
      except CheckpointError as e:
        logging.warning("skipping unreadable %s: %s", where, e)
    if self.steps():
      raise CheckpointError(f"no checkpoint in {self.directory} could be read")
    return None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _check_process_count(directory: str, step: int, data_iter) -> None:
  """The grain state is per process: restoring with another process count is refused."""
  if data_iter is None:
    return
  data_dir = os.path.join(directory, str(step), "data")
  if not os.path.isdir(data_dir):
    return
  count = jax.process_count()
  saved = [n for n in os.listdir(data_dir) if n.startswith("process_")]
  if saved and not any(n.endswith(f"-of-{count}.json") for n in saved):
    raise CheckpointMismatch(
        f"checkpoint {step} in {directory}: the data iterator was saved by "
        f"{saved[0].split('-of-')[1].split('.')[0]} processes and this run has {count}; "
        "resume with the same number of processes (parameters alone restore anywhere, "
        "see eval.py)")


def _abstract(x):
  """Concrete or abstract array -> ShapeDtypeStruct with its sharding (the restore target)."""
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))


def _first_line(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return text[0][:300] if text else ""
