"""The training loop: data, the jitted step, validation, metrics, checkpoints and resume.

Re-running the same command with the same workdir continues from the newest checkpoint
that reads: parameters, optimizer state, step, RNG and the data iterator are restored, so
the resumed run is the uninterrupted one (bitwise, on CPU).

With several processes (zoo.training.distributed) every process runs this loop on the same
mesh, reads its rows of each global batch and writes its shards of each checkpoint; process
0 alone prints and writes logs. Each log step reports the shares of wall time spent outside
the train step (data, evaluation, checkpoints: zoo.training.timing).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

import jax
import numpy as np
import tqdm

from zoo import accounting, checkpoint, data, sharding
from zoo.config import Config
from zoo.models import hashing
from zoo.training import distributed
from zoo.training import step as step_lib
from zoo.training.metrics import MetricWriter, json_value, peak_flops_per_device
from zoo.training.timing import Clock, Profile

TOKENIZER_FILE = "tokenizer.model"


def evaluate(eval_fn, state, cfg: Config, tokenizer, mesh) -> dict:
  """Mean validation cross-entropy over `cfg.eval_batches` fixed batches."""
  batches = data.make_eval_iterator(
      cfg.data, tokenizer, seq_len=cfg.seq_len, global_batch_size=cfg.batch_size,
      num_batches=cfg.eval_batches, rows=sharding.process_rows(mesh, cfg.batch_size))
  loss_sum, tokens = 0.0, 0.0
  for batch in batches:
    s, n = eval_fn(state, sharding.global_batch(batch, mesh))
    loss_sum, tokens = loss_sum + float(s), tokens + float(n)
  loss = loss_sum / max(tokens, 1.0)
  return {"eval_loss": loss, "eval_perplexity": float(np.exp(loss)), "eval_tokens": tokens}


def _prepare_workdir(cfg: Config, workdir: str, tokenizer) -> None:
  """config.json and a copy of the tokenizer, so eval.py needs nothing but the workdir."""
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() != 0:
    return
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(dataclasses.asdict(cfg), f, indent=2)
  target = os.path.join(workdir, TOKENIZER_FILE)
  if not os.path.exists(target):
    shutil.copyfile(tokenizer.path, target + ".tmp")
    os.replace(target + ".tmp", target)


def _with_corpus_counts(cfg: Config, tokenizer, echo) -> Config:
  """A balanced Hash layer without a counts file gets the training corpus's token counts
  (Roller et al. 2021 balance by training-data frequency); config.json records the file."""
  if not hashing.needs_corpus_counts(cfg.model):
    return cfg
  path = data.train_token_counts(cfg.data, tokenizer)
  echo(f"balanced hash: token counts of the training corpus in {path}")
  moe = dataclasses.replace(cfg.model.moe, hash_frequencies=path)
  return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, moe=moe))


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

  `cfg` must already be validated (`zoo.config.validate`). Returns the last metrics. In a
  multi-process run every process calls this; only process 0 echoes and writes logs.
  """
  if not distributed.is_primary():
    echo = _silent
  mesh = sharding.make_mesh(cfg.mesh)
  tokenizer = data.load_tokenizer(cfg.data)  # fails early on a bad data config
  distributed.check_same(tokenizer.fingerprint, "the tokenizer")
  cfg = _with_corpus_counts(cfg, tokenizer, echo)
  _prepare_workdir(cfg, workdir, tokenizer)
  echo(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind} in "
       f"{jax.process_count()} process(es); mesh {dict(mesh.shape)}")
  echo(accounting.summary(cfg))

  trainer, state, shardings = step_lib.create(cfg, mesh)
  train_fn, eval_fn = step_lib.jit_steps(trainer, shardings, mesh)
  train_iter = data.make_train_iterator(
      cfg.data, tokenizer, seq_len=cfg.seq_len, global_batch_size=cfg.batch_size,
      seed=cfg.seed, rows=sharding.process_rows(mesh, cfg.batch_size))
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
    return _loop(cfg, workdir, mesh, state, train_iter, train_fn, eval_fn, tokenizer, ckpt,
                 meta, first_step, echo)
  finally:
    ckpt.close()


def _silent(*args, **kwargs) -> None:
  del args, kwargs


def _loop(cfg, workdir, mesh, state, train_iter, train_fn, eval_fn, tokenizer, ckpt, meta,
          first_step, echo) -> dict:
  flops_per_step = accounting.count_flops(cfg).train_per_step
  peak = peak_flops_per_device(cfg.peak_flops_per_device) * jax.device_count()
  tokens_per_step = cfg.batch_size * cfg.seq_len
  writer = MetricWriter(workdir)
  profile = Profile(cfg, workdir, first_step)
  clock = Clock()
  last: dict = {}
  with sharding.activate(mesh):
    batch = sharding.global_batch(next(train_iter), mesh)
    start = time.perf_counter()
    train_fn = train_fn.lower(state, batch).compile()
    echo(f"compiled the train step in {time.perf_counter() - start:.1f} s")
    bar = tqdm.tqdm(total=cfg.steps, initial=first_step, unit="step",
                    disable=None if distributed.is_primary() else True)
    write = bar.write if distributed.is_primary() else _silent  # keeps the bar intact
    clock.reset(first_step)
    for step in range(first_step + 1, cfg.steps + 1):
      if step > first_step + 1:
        with clock.outside("data"):
          batch = sharding.global_batch(next(train_iter), mesh)
      profile.before(step)
      state, metrics = train_fn(state, batch)
      profile.after(step, state)
      bar.update(1)
      if step % cfg.log_every == 0 or step == cfg.steps:
        metrics = jax.device_get(metrics)
        times = clock.read(step)
        rate = tokens_per_step * times["steps"] / times["train_s"]
        last = {**{k: json_value(v) for k, v in metrics.items()}, "tokens_per_s": rate,
                "mfu": flops_per_step * times["steps"] / times["train_s"] / peak,
                "step_time_s": times["train_s"] / times["steps"], **times["shares"]}
        writer.add(step, last)
        bar.set_postfix(loss=f"{last['loss']:.3f}", tok_s=f"{rate:,.0f}")
        write(f"step {step}: loss {last['loss']:.4f} lr {last['lr']:.2e} "
              f"{rate:,.0f} tok/s mfu {last['mfu']:.1%} outside the step "
              f"{last['outside_step_share']:.0%}")
      if cfg.eval_batches and (step % cfg.eval_every == 0 or step == cfg.steps):
        with clock.outside("eval"):
          result = evaluate(eval_fn, state, cfg, tokenizer, mesh)
        writer.add(step, result)
        last.update(result)
        write(f"step {step}: validation loss {result['eval_loss']:.4f} "
              f"(perplexity {result['eval_perplexity']:.1f})")
      if step % cfg.checkpoint_every == 0 or step == cfg.steps:
        with clock.outside("checkpoint"):
          ckpt.save(step, state, train_iter, meta)
        writer.add(step, {"checkpoint_block_s": ckpt.last_block_s})
      writer.flush()
    profile.close()
    bar.close()
  writer.close()
  return last
