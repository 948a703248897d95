"""route_scatter: every backend against the reference, forward and gradients for x, y and w."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from kernel_checks import (PALLAS, assert_trees_close, normal, sorted_positions, uniform,
                           value_and_vjp)
from pallas_kernels import _common
from pallas_kernels.route_gather import BlockSizes
from pallas_kernels.route_scatter import route_scatter, route_scatter_reference, scatter_add_rows

# As in test_route_gather. float32 residuals are updated in place, bfloat16 ones densely.
CASES = [((2, 48, 20, 128), jnp.float32), ((2, 40, 40, 72), jnp.float32),
         ((2, 40, 40, 72), jnp.bfloat16), ((1, 33, 1, 130), jnp.bfloat16)]


def _inputs(shape, dtype, seed=0):
  batch, length, capacity, width = shape
  rng = np.random.default_rng(seed)
  return (normal(rng, (batch, length, width), dtype), normal(rng, (batch, capacity, width), dtype),
          uniform(rng, (batch, capacity)), sorted_positions(rng, batch, length, capacity))


@pytest.mark.parametrize("shape,dtype", CASES)
def test_matches_reference(shape, dtype):
  x, y, w, idx = _inputs(shape, dtype, seed=sum(shape))
  fn = lambda x, y, w: route_scatter(x, y, w, idx, backend=PALLAS,
                                     block_sizes=BlockSizes(rows=16))
  got = value_and_vjp(fn, 1, x, y, w)
  want = value_and_vjp(lambda x, y, w: route_scatter_reference(x, y, w, idx), 1, x, y, w)
  # out, dx, dy in the activation dtype; dw in float32.
  assert_trees_close(got, want, [dtype, dtype, dtype, jnp.float32])
  kept = np.zeros(x.shape[:2], bool)
  kept[np.arange(x.shape[0])[:, None], np.asarray(idx)] = True
  np.testing.assert_array_equal(np.asarray(got[0], np.float32)[~kept],
                                np.asarray(x, np.float32)[~kept])  # untouched, bit for bit


def test_parallel_grid_on_two_cores_has_no_race(two_cores):
  x, y, w, idx = _inputs((2, 40, 24, 128), jnp.float32)
  got = value_and_vjp(lambda x, y, w: route_scatter(x, y, w, idx, backend=PALLAS,
                                                    block_sizes=BlockSizes(rows=16)), 1, x, y, w)
  want = value_and_vjp(lambda x, y, w: route_scatter_reference(x, y, w, idx), 1, x, y, w)
  assert_trees_close(got, want, [jnp.float32] * 4)


def test_race_detector_reports_a_real_race(races, capfd):
  # Eight updates of row 3 in one grid step: their write-back DMAs race. (The detector puts
  # each DMA in a random clock slot; with 8 writes it misses only if all share one.)
  x = jnp.zeros((1, 16, 128), jnp.float32)
  y = jnp.ones((1, 8, 128), jnp.float32)
  idx = jnp.full((1, 8), 3, jnp.int32)
  jax.block_until_ready(scatter_add_rows(x, idx, y, interpret=_common.interpret_arg(PALLAS)))
  out, _ = capfd.readouterr()
  assert races and "RACE DETECTED" in out
  races.clear()


def test_sharded_batch_under_shard_map(mesh8):
  x, y, w, idx = _inputs((8, 24, 6, 128), jnp.float32)
  sharded = jax.shard_map(lambda x, y, w, i: route_scatter(x, y, w, i, backend=PALLAS),
                          mesh=mesh8, in_specs=(P("data"),) * 4, out_specs=P("data"))
  got = value_and_vjp(lambda x, y, w: sharded(x, y, w, idx), 2, x, y, w)
  want = value_and_vjp(lambda x, y, w: route_scatter_reference(x, y, w, idx), 2, x, y, w)
  assert got[0].sharding.spec == P("data")
  assert_trees_close(got, want, [jnp.float32] * 4)


def test_shapes_are_validated():
  x, y = jnp.zeros((1, 8, 128)), jnp.zeros((1, 2, 128))
  w, idx = jnp.zeros((1, 2)), jnp.zeros((1, 2), jnp.int32)
  with pytest.raises(ValueError, match="shapes do not match"):
    route_scatter(x, y[:, :1], w, idx)
  with pytest.raises(ValueError, match="backend must be one of"):
    route_scatter(x, y, w, idx, backend="gpu")
