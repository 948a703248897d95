"""Helpers shared by the kernel tests (imported by file name; tests/ has no packages)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

PALLAS = "pallas_interpret"
DTYPES = (jnp.float32, jnp.bfloat16)


def tolerance(dtype) -> dict:
  """float32: rounding-order noise. bfloat16: one bfloat16 ulp (2^-8 relative, 2^-7 at worst)."""
  if jnp.dtype(dtype) == jnp.bfloat16:
    return dict(rtol=2**-7, atol=2**-7)
  return dict(rtol=1e-5, atol=1e-5)


def assert_close(actual, expected, dtype=None):
  dtype = dtype or jnp.asarray(expected).dtype
  np.testing.assert_allclose(np.asarray(actual, np.float32), np.asarray(expected, np.float32),
                             **tolerance(dtype))


def assert_trees_close(actual, expected, dtypes):
  for a, e, d in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), dtypes, strict=True):
    assert a.dtype == e.dtype, (a.dtype, e.dtype)
    assert_close(a, e, d)


def upcast(tree):
  """float32 copies of the floating leaves, for a float32 reference of a bfloat16 run."""
  return jax.tree.map(
      lambda a: a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


# Inputs come from numpy (a fresh seed per test case): eager jax.random would compile a
# program per shape, which dominated these tests' time.


def normal(rng: np.random.Generator, shape, dtype=jnp.float32, scale: float = 1.0) -> jax.Array:
  x = rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
  return jnp.asarray(x.astype(ml_dtypes.bfloat16) if dtype == jnp.bfloat16 else x)


def uniform(rng: np.random.Generator, shape) -> jax.Array:
  """float32 values in [0, 1) that bfloat16 represents exactly."""
  return jnp.asarray(rng.random(shape, dtype=np.float32).astype(ml_dtypes.bfloat16), jnp.float32)


def sorted_positions(rng: np.random.Generator, batch: int, length: int, capacity: int):
  """Random sorted unique kept positions per row: idx_BC."""
  rows = [np.sort(rng.permutation(length)[:capacity]) for _ in range(batch)]
  return jnp.asarray(np.stack(rows), jnp.int32)


def top_k_routing(rng: np.random.Generator, tokens: int, experts: int, k: int):
  """Softmax router, top-k: (expert_idx_TR int32, gate_TR float32, bfloat16-exact)."""
  logits = rng.standard_normal((tokens, experts))
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  expert_idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
  gate = np.take_along_axis(probs, expert_idx, axis=1).astype(ml_dtypes.bfloat16)
  return jnp.asarray(expert_idx, jnp.int32), jnp.asarray(gate, jnp.float32)


def value_and_vjp(fn, seed: int, *primals):
  """Jitted (output, gradients of <output, random cotangent>); blocks until ready.

  The cotangent holds bfloat16-representable values, so a bfloat16 run and a float32
  reference see the same one. Blocking matters: an interpreted kernel dispatched
  asynchronously next to other CPU work can starve on a 2-core machine.
  """
  def run(*primals):
    out, vjp = jax.vjp(fn, *primals)
    cot = jax.random.normal(jax.random.key(seed), out.shape, jnp.float32).astype(jnp.bfloat16)
    return out, vjp(cot.astype(out.dtype))
  return jax.block_until_ready(jax.jit(run)(*primals))
