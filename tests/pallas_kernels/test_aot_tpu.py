"""Ahead-of-time compile of every Pallas TPU kernel, forward and backward, for TPU topologies.

TPU interpret mode ignores Mosaic's tiling rules (block shapes, (8, 128) tiles, packed
bfloat16 rows, VMEM limits); compiling for a real topology with libtpu checks them, with no TPU
attached. Needs the `tpu` extra (libtpu); fails, rather than skips, without it. Marked
`tpu_aot`: the default test command deselects these tests (a machine without the extra), and
CI installs the extra and runs them with `pytest --tpu-aot -m tpu_aot` (see .ci/run).
"""

import os

# Another process (an xdist worker, a second test run) may hold libtpu's lock file.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.experimental import topologies  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from kernel_checks import DTYPES  # noqa: E402
from pallas_kernels import dropless, expert_dispatch, route_gather, route_scatter  # noqa: E402

pytestmark = pytest.mark.tpu_aot

TPU = "pallas_tpu"
TOPOLOGIES = ["v5e:2x2", "v5p:2x2x1"]
# (B, L, C, D): partial last blocks of C and L; C = L with a width that is not a multiple of
# 128; C = 1 with an odd length; a real model width with the default blocks (VMEM budget).
ROUTE_SHAPES = [(2, 200, 100, 256), (2, 64, 64, 200), (1, 33, 1, 130), (2, 1024, 128, 4096)]


@pytest.fixture(scope="module", params=TOPOLOGIES)
def devices(request):
  try:
    import libtpu  # noqa: F401
  except ImportError:
    pytest.fail("libtpu is missing: install the tpu extra, pip install -e '.[tpu]'")
  return topologies.get_topology_desc(platform="tpu", topology_name=request.param).devices


def _compile(fn, *specs):
  """Compiles fn(*args) and its vjp; specs are ShapeDtypeStructs (ints never differentiated)."""
  def fwd_bwd(*args):
    floats = [i for i, a in enumerate(args) if jnp.issubdtype(a.dtype, jnp.floating)]

    def of_floats(*fl):
      full = list(args)
      for i, f in zip(floats, fl):
        full[i] = f
      return fn(*full)

    out, vjp = jax.vjp(of_floats, *[args[i] for i in floats])
    return out, vjp(out)
  jax.jit(fwd_bwd).lower(*specs).compile()


def _route_ops(sds, dtype):
  for batch, length, cap, width in ROUTE_SHAPES:
    x, y = sds((batch, length, width), dtype), sds((batch, cap, width), dtype)
    w, idx = sds((batch, cap), jnp.float32), sds((batch, cap), jnp.int32)
    _compile(lambda x, i: route_gather.route_gather(x, i, backend=TPU), x, idx)
    _compile(lambda x, y, w, i: route_scatter.route_scatter(x, y, w, i, backend=TPU),
             x, y, w, idx)


def _dispatch_ops(sds, dtype):
  tokens, experts, k, cap, width = 512, 8, 2, 96, 256
  x = sds((tokens, width), dtype)

  def token_choice(x, gate, idx):
    x_ECD, info = expert_dispatch.dispatch(x, idx, gate, experts, cap, backend=TPU)
    return expert_dispatch.combine(x_ECD * 2, info, x, backend=TPU)

  def expert_choice(x, gate, idx):
    x_ECD, info = expert_dispatch.expert_choice_dispatch(x, idx, gate, backend=TPU)
    return expert_dispatch.combine(x_ECD * 2, info, x, backend=TPU)

  _compile(token_choice, x, sds((tokens, k), jnp.float32), sds((tokens, k), jnp.int32))
  _compile(expert_choice, x, sds((experts, cap), jnp.float32), sds((experts, cap), jnp.int32))


def _dropless_ops(sds, dtype):
  tokens, experts, k, width, hidden = 512, 8, 2, 256, 512

  def moe(x, gate, w_in, w_out, idx):
    return dropless.dropless_moe(x, idx, gate, w_in, w_out, residual_TD=x, backend=TPU)

  _compile(moe, sds((tokens, width), dtype), sds((tokens, k), jnp.float32),
           sds((experts, width, hidden), dtype), sds((experts, hidden, width), dtype),
           sds((tokens, k), jnp.int32))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_compile_for_tpu(devices, dtype):
  one = jax.sharding.SingleDeviceSharding(devices[0])
  sds = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt, sharding=one)
  _route_ops(sds, dtype)
  _dispatch_ops(sds, dtype)
  _dropless_ops(sds, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sharded_step_compiles_for_tpu(devices, dtype):
  mesh = jax.sharding.Mesh(np.array(devices), ("data",))
  sharded = NamedSharding(mesh, P("data"))
  sds = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt, sharding=sharded)
  batch, length, cap, width = 4 * len(devices), 256, 64, 512

  def mod_block(x, w, idx):  # gather, a stand-in block, weighted scatter back
    y = route_gather.route_gather(x, idx, backend=TPU) * 2
    return route_scatter.route_scatter(x, y, w, idx, backend=TPU)

  step = jax.shard_map(mod_block, mesh=mesh, in_specs=(P("data"),) * 3, out_specs=P("data"))
  _compile(step, sds((batch, length, width), dtype), sds((batch, cap), jnp.float32),
           sds((batch, cap), jnp.int32))
