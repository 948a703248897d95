"""Evaluating a run's checkpoint: loss, perplexity and bits per byte, and sampling.

`load_run` restores a workdir's checkpoint onto whatever devices exist (CPU, one GPU, a TPU
slice) through an abstract target built for the current mesh. Bits per byte divide the
summed cross-entropy (nats) by ln 2 and by the UTF-8 bytes of the target text, so they
compare across tokenizers. Sampling decodes with a KV cache, one token per step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import sentencepiece as spm
from flax import nnx
from jax.experimental import multihost_utils

from zoo import checkpoint, data, sharding
from zoo import config as config_lib
from zoo.config import Config, ConfigError
from zoo.training import step as step_lib
from zoo.training.loop import TOKENIZER_FILE


@dataclasses.dataclass
class Run:
  cfg: Config
  step: int
  mesh: jax.sharding.Mesh
  trainer: step_lib.Trainer
  state: step_lib.TrainState
  tokenizer: data.Tokenizer
  eval_fn: object

  def model(self) -> nnx.Module:
    return self.trainer.model(self.state)


def load_config(workdir: str, data_overrides: dict | None = None, **overrides) -> Config:
  """The run's config (its config.json) with the run's tokenizer and any overrides."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise ConfigError("workdir", workdir, "a directory written by train.py (no config.json)")
  with open(path) as f:
    raw = json.load(f)
  raw["data"].update(data_overrides or {})
  raw["data"]["tokenizer"] = os.path.join(workdir, TOKENIZER_FILE)
  # A balanced hash's map is restored from the checkpoint; its counts file (in the training
  # machine's data cache) need not exist here.
  raw["model"].get("moe", {})["hash_frequencies"] = ""
  # Whatever devices exist, all on the data axis; the batch rounded up to fill them.
  raw["mesh"] = {"data": -1, "fsdp": 1, "tensor": 1, "expert": 1}
  devices = jax.device_count()
  raw["batch_size"] = -(-raw["batch_size"] // devices) * devices
  raw["grad_accum_steps"] = 1
  raw.update(overrides)
  return config_lib.from_configdict(raw)


def load_run(workdir: str, *, step: int | None = None, data_overrides: dict | None = None,
             **overrides) -> Run:
  """Restores `step` (default: the newest that reads) of the run in `workdir`."""
  cfg = load_config(workdir, data_overrides, **overrides)
  config_lib.validate(cfg, jax.device_count())
  tokenizer = data.load_tokenizer(cfg.data)
  mesh = sharding.make_mesh(cfg.mesh)
  trainer, state, shardings = step_lib.create(cfg, mesh)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=1 << 30)
  try:
    if step is None:
      restored = ckpt.restore_latest(state, None, cfg, tokenizer.fingerprint)
      if restored is None:
        raise checkpoint.CheckpointError(f"no checkpoint in {ckpt.directory}")
      step, state = restored
    else:
      if step not in ckpt.steps():
        raise checkpoint.CheckpointError(
            f"no checkpoint {step} in {ckpt.directory}; there are {ckpt.steps()}")
      checkpoint.check_compatible(ckpt.read_meta(step), cfg, tokenizer.fingerprint,
                                  f"checkpoint {step} in {ckpt.directory}")
      state = ckpt.restore(step, state)
  finally:
    ckpt.close()
  _, eval_fn = step_lib.jit_steps(trainer, shardings, mesh)
  return Run(cfg, step, mesh, trainer, state, tokenizer, eval_fn)


def token_bytes(tokenizer: data.Tokenizer) -> np.ndarray:
  """UTF-8 bytes each token id stands for (byte-fallback pieces are one byte)."""
  sp = spm.SentencePieceProcessor(model_file=tokenizer.path)
  lengths = np.zeros(tokenizer.vocab_size, np.int64)
  for i in range(tokenizer.vocab_size):
    if sp.is_control(i) or sp.is_unknown(i):
      continue
    piece = sp.id_to_piece(i)
    lengths[i] = 1 if re.fullmatch(r"<0x[0-9A-F]{2}>", piece) else len(
        piece.replace("\u2581", " ").encode("utf-8"))
  return lengths


def evaluate(run: Run, *, num_batches: int | None = None) -> dict:
  """Loss, perplexity and bits per byte on `run.cfg.data.eval_split`."""
  cfg = run.cfg
  lengths = token_bytes(run.tokenizer)
  batches = data.make_eval_iterator(
      cfg.data, run.tokenizer, seq_len=cfg.seq_len, global_batch_size=cfg.batch_size,
      num_batches=num_batches or cfg.eval_batches,
      rows=sharding.process_rows(run.mesh, cfg.batch_size))
  loss_sum, tokens, n_bytes = 0.0, 0.0, 0
  with sharding.activate(run.mesh):
    for batch in batches:
      s, n = run.eval_fn(run.state, sharding.global_batch(batch, run.mesh))
      loss_sum, tokens = loss_sum + float(s), tokens + float(n)
      n_bytes += int(lengths[batch["targets"][batch["segment_ids"] > 0]].sum())
  if jax.process_count() > 1:  # each process counted the bytes of its own rows
    n_bytes = int(np.sum(multihost_utils.process_allgather(np.int64(n_bytes))))
  loss = loss_sum / max(tokens, 1.0)
  return {"step": run.step, "split": cfg.data.eval_split, "loss": loss,
          "perplexity": math.exp(loss), "bits_per_byte": loss_sum / math.log(2) / max(n_bytes, 1),
          "tokens": int(tokens)}


def sample(model: nnx.Module, tokenizer: data.Tokenizer, prompt: str, *,
           max_new_tokens: int = 64, temperature: float = 0.0, top_k: int = 0,
           seed: int = 0) -> str:
  """Continues `prompt`: greedy when temperature is 0, else softmax(logits / T) over top-k.

  Decodes with a KV cache, one token per call; a stack that applies its layers more than
  once per token (Ladder, Staircase: `kv_cache = False`) instead reruns the whole window,
  padded to its final length with segment-0 tokens (exact, as the model is causal).
  """
  ids = [tokenizer.bos_id] + tokenizer.encode(prompt)
  total = len(ids) + max_new_tokens
  if getattr(model.stack, "kv_cache", True):
    model.init_cache(1, total)
    step = _cached_step(model)
  else:
    step = _recompute_step(model, total)

  def pick(logits, key):
    if temperature <= 0:
      return int(jnp.argmax(logits))
    logits = logits / temperature
    if top_k:
      logits = jnp.where(logits < jax.lax.top_k(logits, top_k)[0][-1], -jnp.inf, logits)
    return int(jax.random.categorical(key, logits))

  key = jax.random.key(seed)
  logits = step(ids, 0)
  out = []
  for t in range(len(ids), total):
    key, sub = jax.random.split(key)
    token = pick(logits, sub)
    if token == tokenizer.eos_id:
      break
    out.append(token)
    logits = step([token], t)
  return tokenizer.decode(out)


def _cached_step(model: nnx.Module):
  """fn(new token ids, position of the first) -> next-token logits, extending the cache."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def forward(state, tokens_1L, positions_1L):
    m = nnx.merge(graphdef, state)
    logits, _ = m(tokens_1L, positions_1L, jnp.ones_like(tokens_1L))
    return logits[0, -1], nnx.state(m)

  def step(new_ids, start):
    nonlocal state
    tokens = jnp.asarray([new_ids], jnp.int32)
    logits, state = forward(state, tokens, start + jnp.arange(len(new_ids))[None])
    return logits
  return step


def _recompute_step(model: nnx.Module, total: int):
  """Like `_cached_step`, for stacks without a cache: one compile for the padded window."""
  graphdef, state = nnx.split(model)
  window = np.zeros((1, total), np.int32)
  filled = 0

  @jax.jit
  def forward(tokens_1T, segments_1T, last):
    logits, _ = nnx.merge(graphdef, state)(tokens_1T, None, segments_1T)
    return logits[0, last]

  def step(new_ids, start):
    nonlocal filled
    window[0, start:start + len(new_ids)] = new_ids
    filled = start + len(new_ids)
    segments = (np.arange(total) < filled).astype(np.int32)[None]
    return forward(jnp.asarray(window), jnp.asarray(segments), filled - 1)
  return step
