"""The device mesh and the logical-axis rules: the only module that names mesh axes.

Model code annotates parameters and activations with *logical* axes (`embed`, `mlp`,
`heads`, `vocab`, `expert`, `batch`, ...); `LOGICAL_RULES` maps them to the mesh axes
`data`, `fsdp`, `tensor` and `expert`. Batches are split over `data` and `fsdp` together
(FSDP is data parallelism whose parameters are sharded too).
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from zoo.config import MeshConfig, validate_mesh

MESH_AXES = ("data", "fsdp", "tensor", "expert")
BATCH_AXES = ("data", "fsdp")

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


@contextlib.contextmanager
def activate(mesh: jax.sharding.Mesh):
  """Mesh and logical rules in context: needed to create or trace sharded modules."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_RULES):
    yield


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
