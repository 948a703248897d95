"""Backend selection and small helpers shared by the kernels in this package.

Backends (every public op takes ``backend: str | None``):

* ``"xla"``: the op's pure-jnp ``*_reference``; always available, the default on CPU and GPU.
* ``"pallas_tpu"``: the Mosaic (TPU) kernels; the default on TPU.
* ``"pallas_interpret"``: the same Mosaic kernels run in TPU interpret mode on any platform,
  with race detection; slow, for tests.

The GPU path is XLA until a Pallas GPU kernel is measured to beat it on an H100 (not yet
measured; see BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from jax.experimental.pallas import tpu as pltpu

BACKENDS = ("xla", "pallas_tpu", "pallas_interpret")

# Race detection on by default. The detector gives each DMA a random slot of a vector clock of
# ``vector_clock_size`` entries (default: 2 x cores); DMAs sharing a slot look ordered, so with
# the default every DMA-DMA race on one core is missed. 64 slots make a miss unlikely and
# cover 8 devices x 2 cores. One simulated core: with two (as on v4/v5p megacore, v7x),
# interpreted kernels under a multi-device shard_map deadlocked on a 2-core CPU in jax 0.11.2,
# so tests opt into two cores (``interpret_params``) on one device only.
VECTOR_CLOCK_SIZE = 64
_interpret_params = pltpu.InterpretParams(detect_races=True, vector_clock_size=VECTOR_CLOCK_SIZE)


def resolve_backend(backend: str | None, *, name: str = "backend") -> str:
  """Returns the backend to use: ``backend`` if given (validated), else by platform."""
  if backend is None:
    return "pallas_tpu" if jax.default_backend() == "tpu" else "xla"
  if backend not in BACKENDS:
    raise ValueError(f"{name} must be one of {BACKENDS} or None, got {backend!r}")
  return backend


def interpret_arg(backend: str) -> pltpu.InterpretParams | bool:
  """The ``interpret=`` argument of ``pallas_call`` for a Pallas backend."""
  return _interpret_params if backend == "pallas_interpret" else False


@contextlib.contextmanager
def interpret_params(params: pltpu.InterpretParams) -> Iterator[None]:
  """Overrides the TPU-interpret-mode parameters of the ``pallas_interpret`` backend.

  Takes effect for functions traced inside the context (jit caches keep earlier traces).
  """
  global _interpret_params
  previous, _interpret_params = _interpret_params, params
  try:
    yield
  finally:
    _interpret_params = previous


def out_struct(shape, dtype, *operands) -> jax.ShapeDtypeStruct:
  """A ``pallas_call`` output type that varies over the manual mesh axes of its operands.

  Inside ``jax.shard_map`` (with its default ``check_vma=True``) Pallas needs to be told how
  an output varies across the mesh; outside it this is an empty set and ignored.
  """
  varying = frozenset().union(*(jax.typeof(op).manual_axis_type.varying for op in operands))
  return jax.ShapeDtypeStruct(shape, dtype,
                              manual_axis_type=jax.sharding.ManualAxisType(varying=varying))


def vary_like(x: jax.Array, *operands) -> jax.Array:
  """Marks ``x`` as varying over the manual mesh axes the operands vary over (shard_map).

  Needed where a fresh array (zeros) is updated in place from sharded operands: an aliased
  kernel output takes the type of its input.
  """
  have = jax.typeof(x).manual_axis_type.varying
  want = frozenset().union(*(jax.typeof(op).manual_axis_type.varying for op in operands))
  missing = tuple(sorted(want - have))
  return jax.lax.pcast(x, missing, to="varying") if missing else x


def check_float_dtype(x: jax.Array, name: str) -> None:
  """The Mosaic row kernels move 32-bit rows, or bfloat16 rows as packed 32-bit pairs."""
  if x.dtype not in (jnp.float32, jnp.bfloat16):
    raise ValueError(f"{name} must be float32 or bfloat16 for the Pallas backends, got {x.dtype}")


def rows_per_step(n: int, rows: int) -> int:
  """Rows handled per grid step: ``rows``, or all ``n`` when fewer (a full-dimension block)."""
  if rows % 16:
    raise ValueError(f"BlockSizes.rows must be a multiple of 16 (bfloat16 tile), got {rows}")
  return n if n <= rows else rows


def inverse_positions(idx_BC: jax.Array, length: int) -> jax.Array:
  """``inv_BL[b, l] = c`` where ``idx_BC[b, c] == l``, else -1 (positions must be unique)."""
  batch, capacity = idx_BC.shape
  inv = jnp.full((batch, length), -1, jnp.int32)
  rows = jnp.arange(batch)[:, None]
  return inv.at[rows, idx_BC].set(jnp.arange(capacity, dtype=jnp.int32)[None, :])
