"""Expert dispatch with capacity: routing semantics, and every backend against the reference.

bfloat16 runs are compared with a float32 reference on the same (bfloat16-representable)
inputs: the kernels sum in float32 and round once, so they are within one bfloat16 ulp of it.
The stand-in expert multiplies by a power of two, exact in either dtype.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from kernel_checks import PALLAS, assert_close, normal, top_k_routing, upcast, value_and_vjp
from pallas_kernels import expert_dispatch as ed
from pallas_kernels.route_gather import BlockSizes

BLOCKS = BlockSizes(rows=16)


def _expert(x_ECD):
  scale = 2.0 ** (jnp.arange(x_ECD.shape[0]) - 1)  # exact in bfloat16
  return x_ECD * scale[:, None, None].astype(x_ECD.dtype)


def _token_choice_moe(num_experts, capacity, expert_idx, backend):
  def moe(x, gate):
    x_ECD, info = ed.dispatch(x, expert_idx, gate, num_experts, capacity, backend=backend,
                              block_sizes=BLOCKS)
    return ed.combine(_expert(x_ECD), info, x, backend=backend, block_sizes=BLOCKS)
  return moe


def _expert_choice_moe(token_idx, backend):
  def moe(x, gate):
    x_ECD, info = ed.expert_choice_dispatch(x, token_idx, gate, backend=backend,
                                            block_sizes=BLOCKS)
    return ed.combine(_expert(x_ECD), info, x, backend=backend, block_sizes=BLOCKS)
  return moe


def _slots_by_loop(expert_idx, num_experts, capacity):
  """Switch/flaxformer order: all first choices (by token), then all second choices..."""
  tokens, k = expert_idx.shape
  fill = [0] * num_experts
  slot = np.full((tokens, k), -1)
  for rank in range(k):
    for t in range(tokens):
      e = int(expert_idx[t, rank])
      if e >= 0 and fill[e] < capacity:  # e < 0: no expert (a no-op expert), never placed
        slot[t, rank] = e * capacity + fill[e]
        fill[e] += 1
  return slot


def test_token_choice_fills_slots_first_come_by_rank_then_token():
  expert_idx, gate = top_k_routing(np.random.default_rng(1), 40, 4, 2)
  info = jax.jit(ed.route_token_choice, static_argnums=(2, 3))(expert_idx, gate, 4, 7)
  want = _slots_by_loop(np.asarray(expert_idx), 4, 7)
  np.testing.assert_array_equal(info.slot_TR, want)
  tokens, ranks = np.nonzero(want >= 0)
  slot_token = np.full(4 * 7, -1)
  slot_token[want[tokens, ranks]] = tokens
  np.testing.assert_array_equal(info.slot_token_EC.reshape(-1), slot_token)
  np.testing.assert_array_equal(info.slot_gate_EC.reshape(-1)[want[tokens, ranks]],
                                gate[tokens, ranks])
  assert float(info.dropped_fraction()) == pytest.approx(np.mean(want < 0))


def test_no_expert_choices_take_no_slot_and_add_nothing():
  """MoDE's no-op experts reach the kernels as expert -1: the token keeps its residual."""
  rng = np.random.default_rng(2)
  expert_idx, gate = top_k_routing(rng, 40, 4, 2)
  expert_idx = jnp.where(jnp.asarray(rng.random((40, 2)) < 0.3), -1, expert_idx)
  info = jax.jit(ed.route_token_choice, static_argnums=(2, 3))(expert_idx, gate, 4, 7)
  np.testing.assert_array_equal(info.slot_TR, _slots_by_loop(np.asarray(expert_idx), 4, 7))
  x = normal(rng, (40, 128))
  got = value_and_vjp(_token_choice_moe(4, 7, expert_idx, PALLAS), 1, x, gate)
  want = value_and_vjp(_token_choice_moe(4, 7, expert_idx, "xla"), 1, x, gate)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert_close(g, w, jnp.float32)
  skipped = np.all(np.asarray(expert_idx) < 0, axis=1)
  np.testing.assert_array_equal(np.asarray(got[0])[skipped], np.asarray(x)[skipped])


# (T, E, K, C, D), dtype: top-2 with drops (capacity factor 0.5) in both dtypes; Switch top-1
# with C = T and a width that is not a multiple of 128; C = 1 with an odd width.
TOKEN_CHOICE = [((24, 4, 2, 6, 128), jnp.float32), ((24, 4, 2, 6, 128), jnp.bfloat16),
                ((16, 4, 1, 16, 72), jnp.bfloat16), ((16, 8, 2, 1, 130), jnp.float32)]


@pytest.mark.parametrize("case,dtype", TOKEN_CHOICE)
def test_token_choice_matches_reference(case, dtype):
  tokens, experts, k, capacity, width = case
  rng = np.random.default_rng(sum(case))
  x = normal(rng, (tokens, width), dtype)
  expert_idx, gate = top_k_routing(rng, tokens, experts, k)
  got = value_and_vjp(_token_choice_moe(experts, capacity, expert_idx, PALLAS), 1, x, gate)
  want = value_and_vjp(_token_choice_moe(experts, capacity, expert_idx, "xla"), 1,
                       *upcast((x, gate)))
  for g, w, d in zip(jax.tree.leaves(got), jax.tree.leaves(want), [dtype, dtype, jnp.float32]):
    assert_close(g, w, d)


def test_dropped_tokens_pass_through_unchanged():
  tokens, experts, width = 32, 4, 128
  x = normal(np.random.default_rng(0), (tokens, width))
  expert_idx = jnp.zeros((tokens, 1), jnp.int32)  # everyone wants expert 0, which keeps 3
  gate = jnp.ones((tokens, 1), jnp.float32)
  out = jax.block_until_ready(jax.jit(_token_choice_moe(experts, 3, expert_idx, PALLAS))(x, gate))
  np.testing.assert_array_equal(out[3:], x[3:])
  np.testing.assert_allclose(out[:3], 1.5 * x[:3], rtol=1e-6)  # x + gate * (x / 2)


# (T, E, C, D), dtype: a typical choice in both dtypes; every expert takes every token (C = T)
# with a width that is not a multiple of 128; C = 1 with an odd width.
EXPERT_CHOICE = [((24, 4, 6, 128), jnp.float32), ((24, 4, 6, 128), jnp.bfloat16),
                 ((16, 4, 16, 72), jnp.bfloat16), ((16, 8, 1, 130), jnp.float32)]


def _expert_choice_inputs(rng, tokens, experts, capacity, width, dtype=jnp.float32):
  """Each expert's top-C tokens by (token-softmaxed) score: token_idx_EC, gate_EC."""
  x = normal(rng, (tokens, width), dtype)
  token_idx_EC, gate_EC = top_k_routing(rng, experts, tokens, capacity)
  return x, gate_EC, token_idx_EC


@pytest.mark.parametrize("case,dtype", EXPERT_CHOICE)
def test_expert_choice_matches_reference(case, dtype):
  x, gate, token_idx = _expert_choice_inputs(np.random.default_rng(sum(case)), *case, dtype)
  got = value_and_vjp(_expert_choice_moe(token_idx, PALLAS), 1, x, gate)
  want = value_and_vjp(_expert_choice_moe(token_idx, "xla"), 1, *upcast((x, gate)))
  for g, w, d in zip(jax.tree.leaves(got), jax.tree.leaves(want), [dtype, dtype, jnp.float32]):
    assert_close(g, w, d)


def test_expert_choice_scatter_is_race_free_on_two_cores(two_cores):
  # Tokens repeat across experts: the combine's read-modify-write must stay sequential.
  x, gate, token_idx = _expert_choice_inputs(np.random.default_rng(0), 16, 4, 8, 128)
  got = value_and_vjp(_expert_choice_moe(token_idx, PALLAS), 1, x, gate)
  want = value_and_vjp(_expert_choice_moe(token_idx, "xla"), 1, x, gate)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert_close(g, w, jnp.float32)


@pytest.mark.parametrize("kind", ["token_choice", "expert_choice"])
def test_sharded_groups_under_shard_map(mesh8, kind):
  groups, tokens, experts, width = 8, 16, 4, 128
  rng = np.random.default_rng(3)
  x = normal(rng, (groups * tokens, width))
  if kind == "token_choice":
    idx, gate = top_k_routing(rng, groups * tokens, experts, 2)
    moe = lambda be: lambda x, gate, idx: _token_choice_moe(experts, 5, idx, be)(x, gate)
  else:  # each group's experts choose among the group's tokens
    idx, gate = top_k_routing(rng, groups * experts, tokens, 6)
    moe = lambda be: lambda x, gate, idx: _expert_choice_moe(idx, be)(x, gate)
  sharded = jax.shard_map(moe(PALLAS), mesh=mesh8, in_specs=(P("data"),) * 3,
                          out_specs=P("data"))
  got = value_and_vjp(lambda x, gate: sharded(x, gate, idx), 2, x, gate)
  per_group = lambda a: a.reshape(groups, -1, *a.shape[1:])
  reference = lambda x, gate: jax.vmap(moe("xla"))(per_group(x), per_group(gate),
                                                   per_group(idx)).reshape(x.shape)
  want = value_and_vjp(reference, 2, x, gate)
  assert got[0].sharding.spec == P("data")
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert_close(g, w, jnp.float32)
