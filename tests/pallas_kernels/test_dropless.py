"""Dropless MoE: sort, grouped matmul backends, (un)permute, the whole MLP, sharded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from kernel_checks import DTYPES, PALLAS, assert_close, normal, top_k_routing, upcast, value_and_vjp
from pallas_kernels import dropless as dl
from pallas_kernels.route_gather import BlockSizes

BLOCKS = BlockSizes(rows=16)


def test_sort_by_expert_is_a_stable_grouping():
  expert_idx, _ = top_k_routing(np.random.default_rng(0), 30, 5, 2)
  info = jax.jit(dl.sort_by_expert, static_argnums=1)(expert_idx, 5)
  flat = np.asarray(expert_idx).reshape(-1)
  np.testing.assert_array_equal(info.assign_M, np.argsort(flat, kind="stable"))
  np.testing.assert_array_equal(info.group_sizes_E, np.bincount(flat, minlength=5))
  np.testing.assert_array_equal(np.asarray(info.assign_M)[np.asarray(info.pos_TR).reshape(-1)],
                                np.arange(flat.size))


def test_no_expert_assignments_sort_last_and_add_nothing():
  """MoDE's no-op experts reach the kernels as expert -1: outside every group, output 0."""
  rng = np.random.default_rng(4)
  x, expert_idx, gate, w_in, w_out = _moe_inputs(24, 4, 2, 72, 40, seed=4)
  expert_idx = jnp.where(jnp.asarray(rng.random((24, 2)) < 0.3), -1, expert_idx)
  info = jax.jit(dl.sort_by_expert, static_argnums=1)(expert_idx, 4)
  flat = np.asarray(expert_idx).reshape(-1)
  key = np.where(flat >= 0, flat, 4)
  np.testing.assert_array_equal(info.assign_M, np.argsort(key, kind="stable"))
  np.testing.assert_array_equal(info.group_sizes_E, np.bincount(key, minlength=5)[:4])

  def moe(backend):
    return lambda x, gate: dl.dropless_moe(x, expert_idx, gate, w_in, w_out, residual_TD=x,
                                           backend=backend, block_sizes=BLOCKS)

  def dense_reference(x, gate):  # every token through every chosen expert, summed by loop
    out = x
    for k in range(2):
      e = expert_idx[:, k]
      h = jax.nn.gelu(jnp.einsum("td,tdf->tf", x, w_in[jnp.maximum(e, 0)]))
      y = jnp.einsum("tf,tfd->td", h, w_out[jnp.maximum(e, 0)])
      out = out + jnp.where((e >= 0)[:, None], gate[:, k:k + 1] * y, 0.0)
    return out

  want = value_and_vjp(dense_reference, 1, x, gate)
  for backend in ("xla", PALLAS):
    got = value_and_vjp(moe(backend), 1, x, gate)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      assert_close(g, w, jnp.float32)


# (M, K, N, group sizes): an empty group and odd widths; a single group holding every row.
GMM_CASES = [(40, 72, 130, (9, 0, 25, 6)), (24, 128, 128, (24,))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend,case", [("xla", GMM_CASES[0]), (PALLAS, GMM_CASES[0]),
                                          (PALLAS, GMM_CASES[1])])
def test_grouped_matmul_matches_reference(backend, case, dtype):
  m, k, n, sizes = case
  rng = np.random.default_rng(m + k + n)
  lhs = normal(rng, (m, k), dtype)
  rhs = normal(rng, (len(sizes), k, n), dtype, scale=1 / 8)
  sizes = jnp.array(sizes, jnp.int32)
  got = value_and_vjp(lambda a, b: dl.grouped_matmul(a, b, sizes, backend=backend), 1, lhs, rhs)
  want = value_and_vjp(lambda a, b: dl.grouped_matmul_reference(a, b, sizes), 1,
                       *upcast((lhs, rhs)))
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert g.dtype == dtype
    assert_close(g, w, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_permute_and_unpermute_match_reference(dtype):
  tokens, experts, k, width = 24, 4, 2, 72
  rng = np.random.default_rng(7)
  x = normal(rng, (tokens, width), dtype)
  expert_idx, gate = top_k_routing(rng, tokens, experts, k)
  info = jax.jit(dl.sort_by_expert, static_argnums=1)(expert_idx, experts)

  def roundtrip(backend):  # permute, a stand-in expert (exact doubling), unpermute + residual
    def fn(x, gate):
      x_MD = dl.permute(x, info, backend=backend, block_sizes=BLOCKS)
      return dl.unpermute(2 * x_MD, info, gate, x, backend=backend, block_sizes=BLOCKS)
    return fn

  got = value_and_vjp(roundtrip(PALLAS), 1, x, gate)
  want = value_and_vjp(roundtrip("xla"), 1, *upcast((x, gate)))
  for g, w, d in zip(jax.tree.leaves(got), jax.tree.leaves(want), [dtype, dtype, jnp.float32]):
    assert_close(g, w, d)
  permuted = jax.jit(lambda x: dl.permute(x, info, backend=PALLAS, block_sizes=BLOCKS))(x)
  np.testing.assert_array_equal(np.asarray(permuted, np.float32),
                                np.asarray(x, np.float32)[np.asarray(info.token_M)])


def _moe_inputs(tokens, experts, k, width, hidden, seed=0):
  rng = np.random.default_rng(seed)
  x = normal(rng, (tokens, width))
  expert_idx, gate = top_k_routing(rng, tokens, experts, k)
  w_in = normal(rng, (experts, width, hidden), scale=width ** -0.5)
  w_out = normal(rng, (experts, hidden, width), scale=hidden ** -0.5)
  return x, expert_idx, gate, w_in, w_out


def test_dropless_moe_matches_reference():
  # float32 only: in bfloat16 the composed MLP rounds between layers differently per backend;
  # the pieces are checked in bfloat16 above.
  x, expert_idx, gate, w_in, w_out = _moe_inputs(24, 4, 2, 72, 40)

  def moe(backend):
    return lambda x, gate, w_in, w_out: dl.dropless_moe(
        x, expert_idx, gate, w_in, w_out, residual_TD=x, backend=backend, block_sizes=BLOCKS)

  got = value_and_vjp(moe(PALLAS), 1, x, gate, w_in, w_out)
  want = value_and_vjp(moe("xla"), 1, x, gate, w_in, w_out)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert_close(g, w, jnp.float32)


@pytest.mark.slow
def test_sharded_tokens_under_shard_map(mesh8):
  groups, tokens = 8, 8
  x, expert_idx, gate, w_in, w_out = _moe_inputs(groups * tokens, 4, 2, 128, 128, seed=1)

  def moe(backend):
    return lambda x, gate, idx, w_in, w_out: dl.dropless_moe(
        x, idx, gate, w_in, w_out, residual_TD=x, backend=backend)

  # megablox's gmm declares its output without mesh-axis types, so shard_map's check_vma
  # must be off around it (our own kernels work either way).
  sharded = jax.shard_map(moe(PALLAS), mesh=mesh8, in_specs=(P("data"),) * 3 + (P(), P()),
                          out_specs=P("data"), check_vma=False)
  got = value_and_vjp(lambda x, gate, a, b: sharded(x, gate, expert_idx, a, b), 2,
                      x, gate, w_in, w_out)
  def reference(x, gate, a, b):  # group by group (ragged_dot has no vmap rule)
    part = lambda v, g: v[g * tokens:(g + 1) * tokens]
    return jnp.concatenate([moe("xla")(part(x, g), part(gate, g), part(expert_idx, g), a, b)
                            for g in range(groups)])
  want = value_and_vjp(reference, 2, x, gate, w_in, w_out)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert_close(g, w, jnp.float32)
