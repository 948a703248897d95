"""The training loop: data, the jitted step, periodic validation and metrics."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import numpy as np
import tqdm

from zoo import accounting, data, sharding
from zoo.config import Config
from zoo.training import step as step_lib
from zoo.training.metrics import MetricWriter, peak_flops_per_device


def evaluate(eval_fn, state, cfg: Config, tokenizer, mesh) -> dict:
  """Mean validation cross-entropy over `cfg.eval_batches` fixed batches."""
  batches = data.make_eval_iterator(
      cfg.data, tokenizer, seq_len=cfg.seq_len, global_batch_size=cfg.batch_size,
      num_batches=cfg.eval_batches)
  loss_sum, tokens = 0.0, 0.0
  for batch in batches:
    s, n = eval_fn(state, sharding.global_batch(batch, mesh))
    loss_sum, tokens = loss_sum + float(s), tokens + float(n)
  loss = loss_sum / max(tokens, 1.0)
  return {"eval_loss": loss, "eval_perplexity": float(np.exp(loss)), "eval_tokens": tokens}


def _save_config(cfg: Config, workdir: str) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(dataclasses.asdict(cfg), f, indent=2)


def train(cfg: Config, workdir: str, *, echo=print) -> dict:
  """Trains `cfg` to `cfg.steps`, writing metrics to `workdir`; returns the last metrics.

  `cfg` must already be validated (`zoo.config.validate`).
  """
  mesh = sharding.make_mesh(cfg.mesh)
  tokenizer = data.load_tokenizer(cfg.data)  # fails early on a bad data config
  os.makedirs(workdir, exist_ok=True)
  _save_config(cfg, workdir)
  echo(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; mesh "
       f"{dict(mesh.shape)}")
  echo(accounting.summary(cfg))

  trainer, state, shardings = step_lib.create(cfg, mesh)
  train_fn, eval_fn = step_lib.jit_steps(trainer, shardings, mesh)
  train_iter = data.make_train_iterator(
      cfg.data, tokenizer, seq_len=cfg.seq_len, global_batch_size=cfg.batch_size,
      seed=cfg.seed)
  flops_per_step = accounting.count_flops(cfg).train_per_step
  peak = peak_flops_per_device(cfg.peak_flops_per_device) * jax.device_count()
  tokens_per_step = cfg.batch_size * cfg.seq_len
  writer = MetricWriter(workdir)

  with sharding.activate(mesh):
    batch = sharding.global_batch(next(train_iter), mesh)
    start = time.perf_counter()
    train_fn = train_fn.lower(state, batch).compile()
    echo(f"compiled the train step in {time.perf_counter() - start:.1f} s")

    first_step = int(state.step)
    last = {}
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
        last = {**{k: float(v) for k, v in metrics.items()}, "tokens_per_s": rate,
                "mfu": flops_per_step * steps_done / elapsed / peak,
                "step_time_s": elapsed / steps_done}
        writer.add(step, last)
        bar.set_postfix(loss=f"{last['loss']:.3f}", tok_s=f"{rate:,.0f}")
        bar.write(f"step {step}: loss {last['loss']:.4f} lr {last['lr']:.2e} "
                  f"{rate:,.0f} tok/s mfu {last['mfu']:.1%}")
        tick, tick_step, paused = time.perf_counter(), step, 0.0
      if cfg.eval_batches and (step % cfg.eval_every == 0 or step == cfg.steps):
        eval_start = time.perf_counter()
        result = evaluate(eval_fn, state, cfg, tokenizer, mesh)
        writer.add(step, result)
        last.update(result)
        bar.write(f"step {step}: validation loss {result['eval_loss']:.4f} "
                  f"(perplexity {result['eval_perplexity']:.1f})")
        paused += time.perf_counter() - eval_start  # not training throughput
      writer.flush()
    bar.close()
  writer.close()
  return last
