"""route_gather: every backend against the reference, forward and gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from kernel_checks import PALLAS, normal, sorted_positions, value_and_vjp
from pallas_kernels import _common
from pallas_kernels.route_gather import BlockSizes, route_gather, route_gather_reference

# (B, L, C, D), dtype: several grid steps with a partial last one; C = L with a width that is
# not a multiple of 128, in both dtypes; C = 1 with an odd length (bfloat16 reads whole row
# pairs, so odd lengths are padded) and odd width.
CASES = [((2, 48, 20, 128), jnp.float32), ((2, 40, 40, 72), jnp.float32),
         ((2, 40, 40, 72), jnp.bfloat16), ((1, 33, 1, 130), jnp.bfloat16)]


@pytest.mark.parametrize("shape,dtype", CASES)
def test_matches_reference(shape, dtype):
  batch, length, capacity, width = shape
  rng = np.random.default_rng(sum(shape))
  x = normal(rng, (batch, length, width), dtype)
  idx = sorted_positions(rng, batch, length, capacity)
  got = value_and_vjp(lambda x: route_gather(x, idx, backend=PALLAS,
                                             block_sizes=BlockSizes(rows=16)), 1, x)
  want = value_and_vjp(lambda x: route_gather_reference(x, idx), 1, x)
  # A gather and its transpose (placing rows back) are exact in any dtype.
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert g.dtype == w.dtype == dtype
    np.testing.assert_array_equal(np.asarray(g, np.float32), np.asarray(w, np.float32))


def test_sharded_batch_under_shard_map(mesh8):
  batch, length, capacity, width = 8, 24, 6, 128
  rng = np.random.default_rng(0)
  x = normal(rng, (batch, length, width))
  idx = sorted_positions(rng, batch, length, capacity)
  sharded = jax.shard_map(lambda x, i: route_gather(x, i, backend=PALLAS), mesh=mesh8,
                          in_specs=(P("data"), P("data")), out_specs=P("data"))
  out, (dx,) = value_and_vjp(lambda x: sharded(x, idx), 2, x)
  want, (want_dx,) = value_and_vjp(lambda x: route_gather_reference(x, idx), 2, x)
  assert out.sharding.spec == P("data")
  np.testing.assert_array_equal(out, want)
  np.testing.assert_array_equal(dx, want_dx)


def test_backend_is_validated_and_defaults_to_xla_on_cpu():
  x = jnp.zeros((1, 4, 8))
  idx = jnp.zeros((1, 2), jnp.int32)
  with pytest.raises(ValueError, match=r"backend must be one of \('xla', 'pallas_tpu', "):
    route_gather(x, idx, backend="triton")
  assert _common.resolve_backend(None) == "xla"
  np.testing.assert_array_equal(route_gather(x, idx), route_gather_reference(x, idx))
