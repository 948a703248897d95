"""The training loop: data, the jitted step, validation, metrics, checkpoints and resume.

Re-running the same command with the same workdir continues from the newest checkpoint
that reads: parameters, optimizer state, step, RNG and the data iterator are restored, so
the resumed run is the uninterrupted one (bitwise, on CPU).
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import tqdm

from zoo import accounting, checkpoint, data, evaluation, registry, sharding
from zoo import workdir as workdir_lib
from zoo.config import Config, to_dict
from zoo.training import distributed
from zoo.training import step as step_lib
from zoo.training.metrics import MetricWriter, json_value, peak_flops_per_device
from zoo.training.timing import Clock, Profile

class Diverged(RuntimeError):
  """Training stopped at a non-finite loss, gradient norm or state; one line says where."""


def _prepare_workdir(cfg: Config, workdir: str, tokenizer, state) -> None:
  """Probes storage, then writes config.json and a copy of the tokenizer (atomically), so
  eval.py needs nothing but the workdir. Runs only once the run is known compatible."""
  need = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  workdir_lib.probe(os.path.join(workdir, "checkpoints"), need_bytes=need,
                    what="checkpoint directory")
  if jax.process_index() != 0:
    return
  workdir_lib.probe(workdir, what="workdir")
  workdir_lib.atomic_write(os.path.join(workdir, "config.json"),
                           json.dumps(to_dict(cfg), indent=2))
  target = os.path.join(workdir, data.TOKENIZER_FILE)
  if not os.path.exists(target):
    workdir_lib.atomic_copy(tokenizer.path, target)


def _prepared(cfg: Config, tokenizer, echo) -> Config:
  """Each family's work before training (e.g. corpus statistics a layer is built from)."""
  for family in registry.families():
    if family.prepare is not None:
      cfg = family.prepare(cfg, tokenizer, echo)
  return cfg


def _truncate_metrics(workdir: str, step: int) -> None:
  """Drops records after `step` (written before an interruption) so no step repeats; a line
  cut short by a kill is dropped too."""
  path = os.path.join(workdir, "metrics.jsonl")
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = [line for line in lines if (_record_step(line) or step + 1) <= step]  # steps >= 1
  if kept != lines:
    workdir_lib.atomic_write(path, "".join(kept))


def _record_step(line: str) -> int | None:
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None


def train(cfg: Config, workdir: str, *, echo=print) -> dict:
  """Trains `cfg` to `cfg.steps` in `workdir`, resuming if it holds checkpoints.

  `cfg` must already be validated (`zoo.config.validate`). Returns the last metrics. Holds
  the workdir's lock throughout; writes nothing there until the checkpoints are known to
  belong to this run.
  """
  if not distributed.is_primary():
    echo = _silent
  with workdir_lib.locked(workdir, enabled=jax.process_index() == 0, echo=echo):
    return _train(cfg, workdir, echo)


def _restore(cfg: Config, workdir: str, state, train_iter, tokenizer):
  """(first step, state, unreadable newer steps), read without writing anything."""
  reader = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=1 << 30,
                                   read_only=True)
  try:
    restored = reader.restore_latest(state, train_iter, cfg, tokenizer.fingerprint)
  finally:
    reader.close()
  first_step, state = restored or (0, state)
  return first_step, state, reader.unreadable


def _train(cfg: Config, workdir: str, echo) -> dict:
  mesh = sharding.make_mesh(cfg.mesh)
  tokenizer = data.load_tokenizer(cfg.data)  # fails early on a bad data config
  distributed.check_same(tokenizer.fingerprint, "the tokenizer")
  cfg = _prepared(cfg, tokenizer, echo)
  echo(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind} in "
       f"{jax.process_count()} process(es); mesh {dict(mesh.shape)}")
  echo(accounting.summary(cfg))

  trainer, state, shardings = step_lib.create(cfg, mesh)
  train_fn, eval_fn = step_lib.jit_steps(trainer, shardings, mesh)
  train_iter = data.make_train_iterator(
      cfg.data, tokenizer, seq_len=cfg.seq_len, global_batch_size=cfg.batch_size,
      seed=cfg.seed, rows=sharding.process_rows(mesh, cfg.batch_size))
  eval_set = None
  if cfg.eval_tokens:
    eval_set = data.make_eval_set(cfg.data, tokenizer, seq_len=cfg.seq_len,
                                  eval_tokens=cfg.eval_tokens)
    echo(f"validation: {len(eval_set.index):,} sequences of {cfg.seq_len} tokens drawn from "
         f"the {len(eval_set.windows):,} of split {eval_set.split!r}")
  first_step, state, unreadable = _restore(cfg, workdir, state, train_iter, tokenizer)
  if first_step >= cfg.steps:
    echo(f"nothing to do: the workdir is already at step {first_step} of {cfg.steps}")
    return {}
  _prepare_workdir(cfg, workdir, tokenizer, state)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 keep=cfg.keep_checkpoints)
  try:
    for step, path in ckpt.move_aside(unreadable) if jax.process_index() == 0 else ():
      echo(f"warning: checkpoint {step} does not read; moved it to {path}")
    _truncate_metrics(workdir, first_step)
    if first_step:
      echo(f"resumed from step {first_step} ({ckpt.directory})")
    meta = checkpoint.metadata(cfg, tokenizer.fingerprint)
    return _loop(cfg, workdir, mesh, state, train_iter, train_fn, eval_fn, eval_set, tokenizer,
                 ckpt, meta, first_step, echo)
  finally:
    ckpt.close()


def _silent(*args, **kwargs) -> None:
  del args, kwargs


def _loop(cfg, workdir, mesh, state, train_iter, train_fn, eval_fn, eval_set, tokenizer, ckpt,
          meta, first_step, echo) -> dict:
  flops_per_step = accounting.count_flops(cfg).train_per_step
  peak = peak_flops_per_device(cfg.peak_flops_per_device) * jax.device_count()
  tokens_per_step = cfg.batch_size * cfg.seq_len
  writer = MetricWriter(workdir)
  guard = _FiniteGuard(cfg, ckpt)
  profile = Profile(cfg, workdir, first_step)
  clock = Clock()
  last: dict = {}
  with sharding.activate(mesh):
    batch = sharding.global_batch(next(train_iter), mesh)
    start = time.perf_counter()
    train_fn = train_fn.lower(state, batch).compile()
    echo(f"compiled the train step in {time.perf_counter() - start:.1f} s")
    # disable=None hides the bar off a terminal; a notebook's kernel is not one, but shows it.
    interactive = False if "ipykernel" in sys.modules else None
    bar = tqdm.tqdm(total=cfg.steps, initial=first_step, unit="step",
                    disable=interactive if distributed.is_primary() else True)
    write = bar.write if distributed.is_primary() else _silent  # keeps the bar intact
    clock.reset(first_step)
    for step in range(first_step + 1, cfg.steps + 1):
      if step > first_step + 1:
        with clock.outside("data"):
          batch = sharding.global_batch(next(train_iter), mesh)
      profile.before(step)
      state, metrics = train_fn(state, batch)
      profile.after(step, state)
      guard.add(step, metrics)
      ckpt.check()  # a failed async save stops the run now, not at the next save
      bar.update(1)
      saving = step % cfg.checkpoint_every == 0 or step == cfg.steps
      if step % cfg.log_every == 0 or step == cfg.steps:
        skipped = guard.check()
        metrics = jax.device_get(metrics)
        times = clock.read(step)
        rate = tokens_per_step * times["steps"] / times["train_s"]
        last = {**{k: json_value(v) for k, v in metrics.items() if k != "finite"},
                "tokens_per_s": rate,
                "mfu": flops_per_step * times["steps"] / times["train_s"] / peak,
                "step_time_s": times["train_s"] / times["steps"], **times["shares"]}
        if cfg.nonfinite == "skip":
          last["skipped_updates"] = skipped  # since the previous record
        writer.add(step, last)
        bar.set_postfix(loss=f"{last['loss']:.3f}", tok_s=f"{rate:,.0f}")
        write(f"step {step}: loss {last['loss']:.4f} lr {last['lr']:.2e} "
              f"{rate:,.0f} tok/s mfu {last['mfu']:.1%} outside the step "
              f"{last['outside_step_share']:.0%}"
              + (f" ({skipped} non-finite updates skipped)" if skipped else ""))
      if eval_set is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
        eval_start = time.perf_counter()
        with clock.outside("eval"):
          result = evaluation.evaluate(eval_fn, state, eval_set, mesh, tokenizer,
                                       global_batch_size=cfg.batch_size)
        result = {f"eval_{k}": v for k, v in result.items()}
        result["eval_time_s"] = time.perf_counter() - eval_start
        writer.add(step, result)
        last.update(result)
        write(f"step {step}: validation loss {result['eval_loss']:.4f} "
              f"± {result['eval_loss_stderr']:.4f} (perplexity "
              f"{result['eval_perplexity']:.1f}, {result['eval_tokens']:,} tokens)")
      if saving:
        with clock.outside("checkpoint"):
          guard.check_state(step, state)
          ckpt.save(step, state, train_iter, meta)
        writer.add(step, {"checkpoint_block_s": ckpt.last_block_s})
      writer.flush()
    profile.close()
    bar.close()
  writer.close()
  return last


class _FiniteGuard:
  """Checks the steps' `finite` flags in batches (at log and save steps, so the device is
  not synchronised every step) and stops, or counts skipped updates, per `cfg.nonfinite`.
  The step itself never applies a non-finite update, so the state stays the last good one."""

  def __init__(self, cfg: Config, ckpt: checkpoint.Checkpointer):
    self.cfg, self.ckpt, self.pending = cfg, ckpt, []
    self._state_ok = jax.jit(step_lib.all_finite)

  def add(self, step: int, metrics: dict) -> None:
    self.pending.append((step, metrics["finite"], metrics["loss"], metrics["grad_norm"]))

  def check(self) -> int:
    """The number of skipped (non-finite) updates since the last check; raises Diverged at
    the first one unless nonfinite='skip'."""
    pending, self.pending = jax.device_get(self.pending), []
    bad = [(step, loss, norm) for step, ok, loss, norm in pending if not ok]
    if bad and self.cfg.nonfinite == "stop":
      step, loss, norm = bad[0]
      raise Diverged(f"step {step}: loss {float(loss)}, gradient norm {float(norm)} is not "
                     f"finite; stopped without applying it. {self._last_good()} (lower "
                     "optimizer.lr, or set nonfinite='skip' to skip such updates)")
    return len(bad)

  def check_state(self, step: int, state) -> None:
    self.check()
    if not bool(self._state_ok((state.params, state.opt_state))):
      raise Diverged(f"step {step}: the parameters or optimizer state are not finite; not "
                     f"saved. {self._last_good()}")

  def _last_good(self) -> str:
    steps = self.ckpt.steps()
    where = f"checkpoint {steps[-1]} in {self.ckpt.directory}" if steps else "none yet"
    return f"The last good checkpoint is {where}"
