"""The training loop: data, the jitted step, validation, metrics, checkpoints and resume.

Re-running the same command with the same workdir continues from the newest checkpoint
that reads: parameters, optimizer state, step, RNG and the data iterator are restored, so
the resumed run is the uninterrupted one (bitwise, on CPU).
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax
import tqdm

from zoo import accounting, checkpoint, data, evaluation, registry, sharding
from zoo.config import Config, to_dict
from zoo.training import step as step_lib
from zoo.training.metrics import MetricWriter, json_value, peak_flops_per_device


def _prepare_workdir(cfg: Config, workdir: str, tokenizer) -> None:
  """config.json and a copy of the tokenizer, so eval.py needs nothing but the workdir."""
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() != 0:
    return
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(to_dict(cfg), f, indent=2)
  target = os.path.join(workdir, data.TOKENIZER_FILE)
  if not os.path.exists(target):
    shutil.copyfile(tokenizer.path, target + ".tmp")
    os.replace(target + ".tmp", target)


def _prepared(cfg: Config, tokenizer, echo) -> Config:
  """Each family's work before training (e.g. corpus statistics a layer is built from)."""
  for family in registry.families():
    if family.prepare is not None:
      cfg = family.prepare(cfg, tokenizer, echo)
  return cfg


def _truncate_metrics(workdir: str, step: int) -> None:
  """Drops records after `step` (written before an interruption) so no step repeats."""
  path = os.path.join(workdir, "metrics.jsonl")
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  with open(path) as f:
    kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
  with open(path + ".tmp", "w") as f:
    f.writelines(kept)
  os.replace(path + ".tmp", path)


def train(cfg: Config, workdir: str, *, echo=print) -> dict:
  """Trains `cfg` to `cfg.steps` in `workdir`, resuming if it holds checkpoints.

  `cfg` must already be validated (`zoo.config.validate`). Returns the last metrics.
  """
  mesh = sharding.make_mesh(cfg.mesh)
  tokenizer = data.load_tokenizer(cfg.data)  # fails early on a bad data config
  cfg = _prepared(cfg, tokenizer, echo)
  _prepare_workdir(cfg, workdir, tokenizer)
  echo(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; mesh "
       f"{dict(mesh.shape)}")
  echo(accounting.summary(cfg))

  trainer, state, shardings = step_lib.create(cfg, mesh)
  train_fn, eval_fn = step_lib.jit_steps(trainer, shardings, mesh)
  train_iter = data.make_train_iterator(
      cfg.data, tokenizer, seq_len=cfg.seq_len, global_batch_size=cfg.batch_size,
      seed=cfg.seed)
  eval_set = None
  if cfg.eval_tokens:
    eval_set = data.make_eval_set(cfg.data, tokenizer, seq_len=cfg.seq_len,
                                  eval_tokens=cfg.eval_tokens)
    echo(f"validation: {len(eval_set.index):,} sequences of {cfg.seq_len} tokens drawn from "
         f"the {len(eval_set.windows):,} of split {eval_set.split!r}")
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 keep=cfg.keep_checkpoints)
  meta = checkpoint.metadata(cfg, tokenizer.fingerprint)
  restored = ckpt.restore_latest(state, train_iter, cfg, tokenizer.fingerprint)
  if restored:
    first_step, state = restored
    _truncate_metrics(workdir, first_step)
    echo(f"resumed from step {first_step} ({ckpt.directory})")
  else:
    first_step = 0
  if first_step >= cfg.steps:
    echo(f"nothing to do: the workdir is already at step {first_step} of {cfg.steps}")
    ckpt.close()
    return {}
  try:
    return _loop(cfg, workdir, mesh, state, train_iter, train_fn, eval_fn, eval_set, tokenizer,
                 ckpt, meta, first_step, echo)
  finally:
    ckpt.close()


def _loop(cfg, workdir, mesh, state, train_iter, train_fn, eval_fn, eval_set, tokenizer, ckpt,
          meta, first_step, echo) -> dict:
  flops_per_step = accounting.count_flops(cfg).train_per_step
  peak = peak_flops_per_device(cfg.peak_flops_per_device) * jax.device_count()
  tokens_per_step = cfg.batch_size * cfg.seq_len
  writer = MetricWriter(workdir)
  last: dict = {}
  with sharding.activate(mesh):
    batch = sharding.global_batch(next(train_iter), mesh)
    start = time.perf_counter()
    train_fn = train_fn.lower(state, batch).compile()
    echo(f"compiled the train step in {time.perf_counter() - start:.1f} s")
    bar = tqdm.tqdm(total=cfg.steps, initial=first_step, unit="step", disable=None)
    tick, tick_step, paused = time.perf_counter(), first_step, 0.0
    for step in range(first_step + 1, cfg.steps + 1):
      if step > first_step + 1:
        batch = sharding.global_batch(next(train_iter), mesh)
      state, metrics = train_fn(state, batch)
      bar.update(1)
      if step % cfg.log_every == 0 or step == cfg.steps:
        metrics = jax.device_get(metrics)
        elapsed = time.perf_counter() - tick - paused
        steps_done = step - tick_step
        rate = tokens_per_step * steps_done / elapsed
        last = {**{k: json_value(v) for k, v in metrics.items()}, "tokens_per_s": rate,
                "mfu": flops_per_step * steps_done / elapsed / peak,
                "step_time_s": elapsed / steps_done}
        writer.add(step, last)
        bar.set_postfix(loss=f"{last['loss']:.3f}", tok_s=f"{rate:,.0f}")
        bar.write(f"step {step}: loss {last['loss']:.4f} lr {last['lr']:.2e} "
                  f"{rate:,.0f} tok/s mfu {last['mfu']:.1%}")
        tick, tick_step, paused = time.perf_counter(), step, 0.0
      pause_start = time.perf_counter()
      if eval_set is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
        result = evaluation.evaluate(eval_fn, state, eval_set, mesh, tokenizer,
                                     global_batch_size=cfg.batch_size)
        result = {f"eval_{k}": v for k, v in result.items()}
        result["eval_time_s"] = time.perf_counter() - pause_start
        writer.add(step, result)
        last.update(result)
        bar.write(f"step {step}: validation loss {result['eval_loss']:.4f} "
                  f"± {result['eval_loss_stderr']:.4f} (perplexity "
                  f"{result['eval_perplexity']:.1f}, {result['eval_tokens']:,} tokens)")
      if step % cfg.checkpoint_every == 0 or step == cfg.steps:
        ckpt.save(step, state, train_iter, meta)
        writer.add(step, {"checkpoint_block_s": ckpt.last_block_s})
      paused += time.perf_counter() - pause_start  # not training throughput
      writer.flush()
    bar.close()
  writer.close()
  return last
