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


class SaveFailed(CheckpointError):
  """A save that did not complete (storage full, read-only, I/O error)."""


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
  """Saves and restores train state + data iterator state under `directory`.

  `read_only` opens it without creating, cleaning or deleting anything: eval.py reading a
  workdir that is being trained, and train.py before the run is known to be compatible.
  """

  def __init__(self, directory: str, *, keep: int, async_save: bool = True,
               read_only: bool = False):
    self.directory = os.path.abspath(directory)
    # Not orbax's read_only (it logs three warnings): reading never creates, cleans or
    # deletes anything when the manager is not asked to save.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=not read_only, create=not read_only)
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    self.last_block_s = 0.0  # how long the last save blocked the caller
    self.unreadable: list[int] = []  # newer steps restore_latest skipped
    self._saving: int | None = None  # the step of an async save not yet known to be done
    self.failed = False

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_iter, meta: dict) -> None:
    self.check()
    start = time.perf_counter()
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    try:
      self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    except Exception as e:  # noqa: BLE001  (orbax wraps the OSError in several types)
      self._fail(self._saving or step, e)  # orbax first waits for the save in flight
    self._saving = step
    self.last_block_s = time.perf_counter() - start

  def check(self) -> None:
    """Raises SaveFailed once the async save in flight has failed (cheap; call every step):
    orbax reports it only when waited on, and its other threads then wait 300 s."""
    if self._saving is None or self.manager.is_saving_in_progress():
      return
    step, self._saving = self._saving, None
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      self._fail(step, e)

  def _fail(self, step: int, e: Exception):
    self.failed = True
    kept = [s for s in self.steps() if s != step]
    raise SaveFailed(
        f"saving checkpoint {step} in {self.directory} failed ({type(e).__name__}: "
        f"{_first_line(e)}); the newest complete checkpoint is "
        f"{kept[-1] if kept else 'none'}") from e

  def move_aside(self, steps: list[int]) -> list[tuple[int, str]]:
    """Renames unreadable steps into `<directory>.unreadable/` (never deletes them), so
    the run can save those steps again; returns (step, new path) pairs."""
    moved = []
    for step in steps:
      target = os.path.join(f"{self.directory}.unreadable",
                            f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
      os.makedirs(os.path.dirname(target), exist_ok=True)
      os.rename(os.path.join(self.directory, str(step)), target)
      moved.append((step, target))
    if moved:
      self.manager.reload()
    return moved

  def read_meta(self, step: int) -> dict:
    try:
      return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # noqa: BLE001  (orbax raises many kinds; all mean unreadable)
      raise CheckpointError(f"checkpoint {step} in {self.directory}: metadata unreadable "
                            f"({type(e).__name__}: {_first_line(e)})") from e

  def restore(self, step: int, abstract_state, data_iter=None, *, skip: tuple[str, ...] = ()):
    """The state of `step` laid out like `abstract_state`; `data_iter` is set in place.

    `skip` names top-level fields of the state (a dataclass) not to read, which come back as
    None: eval.py reads no optimizer moments (two thirds of an Adam state's bytes).
    """
    abstract_state = jax.tree.map(_abstract, abstract_state)
    if skip:
      return self._restore_partial(step, abstract_state, skip)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]
    except Exception as e:  # noqa: BLE001
      raise CheckpointError(
          f"checkpoint {step} in {self.directory} cannot be read onto this mesh "
          f"({type(e).__name__}: {_first_line(e)})") from e

  def _restore_partial(self, step: int, abstract_state, skip: tuple[str, ...]):
    fields = {f.name: getattr(abstract_state, f.name)
              for f in dataclasses.fields(abstract_state) if f.name not in skip}
    # orbax stores the state as nested dicts with string keys (list indices "0", "1"; each
    # variable's array under "value"): read those paths and put the arrays back in place.
    paths, treedef = jax.tree_util.tree_flatten_with_path(fields)
    target: dict = {}
    for path, leaf in paths:
      node = target
      keys = [_key_name(k) for k in path]
      for key in keys[:-1]:
        node = node.setdefault(key, {})
      node[keys[-1]] = leaf
    restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target)
    args = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
    try:  # the step's own "state" item, by its own handler (the manager binds one per item)
      with ocp.PyTreeCheckpointer() as reader:
        read = reader.restore(os.path.join(self.directory, str(step), "state"), args=args)
    except Exception as e:  # noqa: BLE001
      raise CheckpointError(
          f"checkpoint {step} in {self.directory} cannot be read onto this mesh "
          f"({type(e).__name__}: {_first_line(e)})") from e
    leaves = []
    for path, _ in paths:
      node = read
      for key in path:
        node = node[_key_name(key)]
      leaves.append(node)
    values = jax.tree_util.tree_unflatten(treedef, leaves)
    return dataclasses.replace(abstract_state, **values, **{k: None for k in skip})

  def restore_latest(self, abstract_state, data_iter, cfg: Config, tokenizer_fingerprint, *,
                     skip: tuple[str, ...] = ()):
    """(step, state) from the newest checkpoint that reads, or None when there is none.

    A checkpoint that does not match the config stops the run; one that does not read
    (truncated, corrupted) is skipped with a warning in favour of the next older one and
    listed in `self.unreadable` (see `move_aside`).
    """
    self.unreadable = []
    for step in reversed(self.steps()):
      where = f"checkpoint {step} in {self.directory}"
      try:
        meta = self.read_meta(step)
        check_compatible(meta, cfg, tokenizer_fingerprint, where)
        _check_process_count(self.directory, step, data_iter)
        return step, self.restore(step, abstract_state, data_iter, skip=skip)
      except CheckpointMismatch:
        raise
      except CheckpointError as e:
        logging.warning("skipping unreadable %s: %s", where, e)
        self.unreadable.append(step)
    if self.steps():
      raise CheckpointError(f"no checkpoint in {self.directory} could be read; move the "
                            "directory aside to start the run again")
    return None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    if self.failed:
      return  # orbax's threads of the failed save are stuck on a 300 s timeout
    step, self._saving = self._saving, None
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      self._fail(step, e)
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


def _key_name(key) -> str:
  """A pytree path entry as orbax names it on disk."""
  if isinstance(key, jax.tree_util.DictKey):
    return str(key.key)
  if isinstance(key, jax.tree_util.GetAttrKey):
    return key.name
  if isinstance(key, jax.tree_util.SequenceKey):
    return str(key.idx)
  return str(key)


def _abstract(x):
  """Concrete or abstract array -> ShapeDtypeStruct with its sharding (the restore target)."""
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))


def _first_line(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return text[0][:300] if text else ""
