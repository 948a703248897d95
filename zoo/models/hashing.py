"""Hash-layer routing maps (Roller et al. 2021, "Hash Layers For Large Sparse Models",
arXiv:2106.04426): the expert of a token is a fixed function of token ids, never learned.

    random    e(t) = R[x_t]            R: V -> E drawn once from `hash_seed` (paper's code)
    balanced  e(t) = B[x_t]            B: greedy by token frequency, so loads are even
                                       (train.py counts the training corpus for it)
    previous  e(t) = R[x_{t-1}]        (x_{-1} = 0 at the start of every document)
    bigram    e(t) = h(x_{t-1}, x_t)   a fixed integer hash of the pair
    position  e(t) = h(pos_t)
    oracle    e(t) = R[x_{t+1}]        the *target*: a leakage check, never for results

Maps are numpy arrays built from the config alone (seeded `numpy.random.default_rng`,
integer hashes with fixed constants), so every process and every restart builds the same
map; the model also stores the table as a non-trainable `HashTable` variable, so a
checkpoint carries it. During cached decoding a call sees only its new tokens, so
previous/bigram use 0 as the previous token of the first new token of a call.
"""

from __future__ import annotations

import heapq

import jax
import jax.numpy as jnp
import numpy as np



def random_table(vocab_size: int, num_experts: int, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, num_experts, vocab_size).astype(np.int32)


def balanced_table(freq_V: np.ndarray, num_experts: int) -> np.ndarray:
  """Greedy balancing: tokens in decreasing frequency (ties: lower id first) each go to
  the expert with the least total frequency so far (ties: lower expert index)."""
  freq_V = np.asarray(freq_V, np.float64)
  order = np.lexsort((np.arange(freq_V.size), -freq_V))
  table = np.zeros(freq_V.size, np.int32)
  heap = [(0.0, e) for e in range(num_experts)]
  for token in order:
    load, e = heapq.heappop(heap)
    table[token] = e
    heapq.heappush(heap, (load + freq_V[token], e))
  return table


def zipf_prior(vocab_size: int) -> np.ndarray:
  """Frequency ~ 1 / (id + 1): BPE ids roughly follow frequency; used without a count file."""
  return 1.0 / np.arange(1, vocab_size + 1)


def token_table(kind: str, frequencies: str, num_experts: int, seed: int,
                vocab_size: int) -> np.ndarray:
  """The [V] token -> expert map of a hash router (unused by "bigram" and "position");
  `frequencies` is a .npy of token counts for "balanced" ('': a Zipf prior)."""
  if kind == "balanced":
    if frequencies:
      freq = np.load(frequencies, allow_pickle=False)  # no pickle: data only
      if freq.shape != (vocab_size,):
        raise ValueError(f"{frequencies}: shape {freq.shape}, expected ({vocab_size},)")
    else:
      freq = zipf_prior(vocab_size)
    return balanced_table(freq, num_experts)
  return random_table(vocab_size, num_experts, seed)


def mix32(x: jax.Array, seed: int) -> jax.Array:
  """A fixed 32-bit integer hash (murmur3's finaliser) of x + seed."""
  x = x.astype(jnp.uint32) + jnp.uint32((seed * 0x9E3779B9) & 0xFFFFFFFF)
  x = (x ^ (x >> 16)) * jnp.uint32(0x85EBCA6B)
  x = (x ^ (x >> 13)) * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def route(kind: str, table_V, tokens_BL, positions_BL, num_experts: int,
          seed: int = 0) -> jax.Array:
  """Expert of every token, [B, L] int32."""
  starts = positions_BL == 0
  prev_BL = jnp.where(starts, 0, jnp.pad(tokens_BL, ((0, 0), (1, 0)))[:, :-1])
  if kind in ("random", "balanced"):
    out = table_V[tokens_BL]
  elif kind == "previous":
    out = table_V[prev_BL]
  elif kind == "oracle":
    out = table_V[jnp.pad(tokens_BL, ((0, 0), (0, 1)))[:, 1:]]
  elif kind == "bigram":
    out = mix32(prev_BL.astype(jnp.uint32) * jnp.uint32(1_000_003) + tokens_BL.astype(jnp.uint32),
                seed) % jnp.uint32(num_experts)
  elif kind == "position":
    out = mix32(positions_BL, seed) % jnp.uint32(num_experts)
  else:
    raise ValueError(f"unknown hash kind {kind!r}")
  return out.astype(jnp.int32)
