"""Validation loss with its standard error, perplexity and bits per byte; sampling.

`evaluate` is the one evaluation of the zoo: the training loop calls it every eval_every
steps and eval.py on a restored checkpoint, on the same fixed validation sample
(`zoo.data.make_eval_set`). Statistics are over the sample's sequences (windows): with s_i
the summed cross-entropy (nats) and n_i the target tokens of sequence i, the loss is the
ratio L = sum s_i / sum n_i, and its standard error is the ratio estimator's,
sqrt(K / (K - 1) * sum (s_i - L n_i)^2) / sum n_i over the K sequences, so a study can tell
a real difference from noise. Bits per byte divide sum s_i by ln 2 and by the UTF-8 bytes
of the target text, so they compare across tokenizers. Sampling decodes with a KV cache.

This module imports nothing from zoo.training (the loop imports it); restoring a run's
checkpoint is zoo.training.restore.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import sentencepiece as spm
from flax import nnx

from zoo import data, registry, sharding
from zoo.config import Config

_TOKEN_BYTES: dict[str, np.ndarray] = {}


def token_bytes(tokenizer: data.Tokenizer) -> np.ndarray:
  """UTF-8 bytes each token id stands for (byte-fallback pieces are one byte)."""
  if tokenizer.fingerprint in _TOKEN_BYTES:
    return _TOKEN_BYTES[tokenizer.fingerprint]
  sp = spm.SentencePieceProcessor(model_file=tokenizer.path)
  lengths = np.zeros(tokenizer.vocab_size, np.int64)
  for i in range(tokenizer.vocab_size):
    if sp.is_control(i) or sp.is_unknown(i):
      continue
    piece = sp.id_to_piece(i)
    lengths[i] = 1 if re.fullmatch(r"<0x[0-9A-F]{2}>", piece) else len(
        piece.replace("\u2581", " ").encode("utf-8"))
  _TOKEN_BYTES[tokenizer.fingerprint] = lengths
  return lengths


def statistics(sums: np.ndarray, counts: np.ndarray) -> dict:
  """Loss, its standard error, perplexity and tokens from per-sequence sums and counts."""
  keep = counts > 0
  sums, counts = np.asarray(sums, np.float64)[keep], np.asarray(counts, np.float64)[keep]
  k, total = len(sums), math.fsum(counts)
  loss = math.fsum(sums) / max(total, 1.0)
  residual = math.fsum((sums - loss * counts) ** 2)
  stderr = math.sqrt(k / (k - 1) * residual) / total if k > 1 else math.nan
  return {"loss": loss, "loss_stderr": stderr, "perplexity": math.exp(loss),
          "tokens": int(total), "sequences": k}


def evaluate(eval_fn, state, eval_set: data.EvalSet, mesh, tokenizer: data.Tokenizer, *,
             global_batch_size: int) -> dict:
  """loss, loss_stderr, perplexity, bits_per_byte, tokens and sequences on `eval_set`.

  `eval_fn(state, global batch)` returns per-sequence summed cross-entropy and token
  counts, replicated (zoo.training.step.jit_steps); every process gets the same result.
  """
  sums, counts = [], []
  with sharding.activate(mesh):
    rows = sharding.process_rows(mesh, global_batch_size)
    for batch in eval_set.batches(global_batch_size, rows=rows):
      s, n = jax.device_get(eval_fn(state, sharding.global_batch(batch, mesh)))
      sums.append(s)
      counts.append(n)
  result = statistics(np.concatenate(sums), np.concatenate(counts))
  rows = eval_set.rows()
  n_bytes = int(token_bytes(tokenizer)[rows["targets"][rows["segment_ids"] > 0]].sum())
  result["bits_per_byte"] = result["loss"] * result["tokens"] / math.log(2) / max(n_bytes, 1)
  return result


class SamplingError(ValueError):
  """A sampling argument that cannot be used; the message is one line."""


def check_sampling(cfg: Config, *, max_new_tokens: int, temperature: float, top_k: int):
  """Raises SamplingError naming the argument: the run's context bounds the new tokens."""
  if not 1 <= max_new_tokens < cfg.seq_len:
    raise SamplingError(f"--max_new_tokens={max_new_tokens} is invalid: allowed 1.."
                        f"{cfg.seq_len - 1} (the run's context is seq_len={cfg.seq_len})")
  if not (math.isfinite(temperature) and temperature >= 0):
    raise SamplingError(f"--temperature={temperature} is invalid: allowed >= 0 (0: greedy)")
  if not 0 <= top_k <= cfg.model.vocab_size:
    raise SamplingError(f"--top_k={top_k} is invalid: allowed 0..{cfg.model.vocab_size} "
                        "(the vocabulary; 0: all)")


def sample(model: nnx.Module, tokenizer: data.Tokenizer, prompt: str, *,
           max_new_tokens: int = 64, temperature: float = 0.0, top_k: int = 0,
           seed: int = 0, context: int | None = None, warn=None) -> str:
  """Continues `prompt`: greedy when temperature is 0, else softmax(logits / T) over top-k.

  Decodes with a KV cache, one token per call; a stack that applies its layers more than
  once per token (a stack registered with `kv_cache=False`, e.g. Ladder) instead reruns the
  whole window, padded to its final length with segment-0 tokens (exact, as the model is
  causal). A prompt that leaves less than `max_new_tokens` of the `context` the model was
  trained on is cut from the left (the model never saw longer windows), with a call to `warn`.
  """
  ids = [tokenizer.bos_id] + tokenizer.encode(prompt)
  if context and len(ids) + max_new_tokens > context:
    keep = max(context - max_new_tokens - 1, 0)
    (print if warn is None else warn)(
        f"warning: the prompt is {len(ids) - 1} tokens; kept its last {keep} so that prompt "
        f"and {max_new_tokens} new tokens fit the context of {context}")
    ids = [tokenizer.bos_id] + (ids[len(ids) - keep:] if keep else [])
  total = len(ids) + max_new_tokens
  if registry.stack(model.cfg.stack).kv_cache:
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
