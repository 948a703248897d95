"""The device mesh and the logical-axis rules: the only module that names mesh axes.

Model code annotates parameters and activations with *logical* axes (`embed`, `mlp`,
`heads`, `vocab`, `expert`, `batch`, ...); `LOGICAL_RULES` maps them to the mesh axes
`data`, `fsdp`, `tensor` and `expert`. Batches are split over `data`, `fsdp` and `expert`
together: FSDP is data parallelism whose parameters are sharded too, and outside the experts
expert parallelism is data parallelism (GShard, Lepikhin et al. 2020), so a chip of the
`expert` axis holds its own tokens and its own experts' weights.

Kernels run per shard: `per_shard` wraps a function in `jax.shard_map` over the active mesh
(GSPMD cannot partition a Mosaic kernel: the compile fails), unless the run
asks for `partition="gspmd"`. Inside, `expert_shards` and `all_to_all_experts` move tokens
to the chips that hold their experts.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from zoo.config import MeshConfig, validate_mesh

MESH_AXES = ("data", "fsdp", "tensor", "expert")
BATCH_AXES = ("data", "fsdp", "expert")
EXPERT_AXIS = "expert"

# logical axis -> mesh axis (or tuple of mesh axes, or None for replicated).
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("length", None),
    ("embed", "fsdp"),
    ("act_embed", None),  # activations' width: replicated (parameters' is fsdp)
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("expert", "expert"),
    ("layers", None),
)


def make_mesh(mesh_cfg: MeshConfig, devices=None) -> jax.sharding.Mesh:
  """A mesh over `devices` (default: all) with Auto axis types, in MESH_AXES order."""
  devices = jax.devices() if devices is None else devices
  sizes = validate_mesh(mesh_cfg, len(devices))
  shape = tuple(sizes[a] for a in MESH_AXES)
  return jax.make_mesh(
      shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
      devices=devices)


_partition = contextvars.ContextVar("partition", default="shard_map")


@contextlib.contextmanager
def activate(mesh: jax.sharding.Mesh):
  """Mesh and logical rules in context: needed to create or trace sharded modules."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_RULES):
    yield


@contextlib.contextmanager
def partition(mode: str):
  """How `per_shard` functions traced in this context run: "shard_map" (the default) or
  "gspmd" (the config's `partition`)."""
  token = _partition.set(mode)
  try:
    yield
  finally:
    _partition.reset(token)


def logical_to_spec(logical: tuple[str | None, ...]) -> P:
  rules = dict(LOGICAL_RULES)
  return P(*(rules.get(name) if name else None for name in logical))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Sharding of [batch, length] arrays: batch over data and fsdp."""
  return NamedSharding(mesh, logical_to_spec(("batch", "length")))


def state_shardings(abstract_state, mesh: jax.sharding.Mesh):
  """NamedShardings for an (abstract) nnx.State, from its logical annotations."""
  with nnx.logical_axis_rules(LOGICAL_RULES):
    specs = nnx.get_partition_spec(abstract_state)
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs)


def constrain(x: jax.Array, logical: tuple[str | None, ...]) -> jax.Array:
  """Sharding constraint by logical names; a no-op outside a mesh context."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(logical))


def global_batch(local_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict:
  """Per-process numpy batches -> global jax arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return {
      k: jax.make_array_from_process_local_data(sharding, v)
      for k, v in local_batch.items()
  }


def process_rows(mesh: jax.sharding.Mesh, global_batch_size: int) -> np.ndarray:
  """The rows of a global batch that this process's devices hold, in order: the rows it must
  read (`global_batch` takes them in this order). All rows when the batch is not split over
  processes."""
  index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch_size, 1))
  rows = set()
  for index in index_map.values():
    rows.update(range(*index[0].indices(global_batch_size)))
  return np.asarray(sorted(rows), np.int64)


# ---- per-shard functions -------------------------------------------------------------------

Logical = tuple[str | None, ...]


def _is_logical(x) -> bool:
  return isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x)


def _splits(mesh, shape, spec: P) -> bool:
  for size, axes in zip(shape, spec):
    axes = (axes,) if isinstance(axes, str) else (axes or ())
    shards = 1
    for a in axes:
      shards *= mesh.shape[a]
    if size % shards:
      return False
  return True


def per_shard(fn: Callable, in_logical: tuple[Logical, ...], out_logical,
              *, check_vma: bool = True) -> Callable:
  """`fn`, run on every shard of its arguments under `jax.shard_map` on the active mesh.

  `in_logical` names each argument's logical axes as `fn` wants them *inside* (an axis not
  named is whole on every shard: expert weights `("expert", None, None)` arrive with all of
  their width, gathered at the boundary); `out_logical` does the same for the output, a
  logical tuple or a tuple of them. Where no mesh is active, the run asked for
  `partition="gspmd"`, or a batch does not split evenly (a one-sequence decode on a pod),
  it returns `fn` itself and XLA partitions it. `check_vma=False` is for kernels that do
  not declare how their outputs vary (megablox's gmm).
  """
  def call(*args):
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.manual_axes or _partition.get() != "shard_map":
      return fn(*args)
    in_specs = tuple(logical_to_spec(names) for names in in_logical)
    if not all(_splits(mesh, jnp.shape(a), s) for a, s in zip(args, in_specs)):
      return fn(*args)
    out_specs = jax.tree.map(logical_to_spec, out_logical, is_leaf=_is_logical)
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=check_vma)(*args)
  return call


def expert_shards() -> int:
  """How many chips the experts are split over, inside a `per_shard` function (1 outside
  one, or when the mesh has no expert axis)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or EXPERT_AXIS not in mesh.manual_axes:
    return 1
  return mesh.shape[EXPERT_AXIS]


def expert_shard_index() -> jax.Array:
  """This chip's place along the expert axis (inside a `per_shard` function)."""
  return jax.lax.axis_index(EXPERT_AXIS)


def all_to_all_experts(x: jax.Array, split_axis: int, concat_axis: int) -> jax.Array:
  """Splits `x` along `split_axis` into one piece per expert shard, sends piece i to shard i
  and concatenates what arrives along `concat_axis` (one all-to-all over the expert axis)."""
  return jax.lax.all_to_all(x, EXPERT_AXIS, split_axis, concat_axis, tiled=True)


def all_gather_experts(x: jax.Array, axis: int = 0) -> jax.Array:
  """Every expert shard's `x`, concatenated along `axis`."""
  return jax.lax.all_gather(x, EXPERT_AXIS, axis=axis, tiled=True)


def reduce_scatter_experts(x: jax.Array, axis: int = 0) -> jax.Array:
  """The sum of `x` over the expert shards, each keeping its piece along `axis`."""
  return jax.lax.psum_scatter(x, EXPERT_AXIS, scatter_dimension=axis, tiled=True)
