"""Validation of a whole config against the devices that exist, before anything compiles.

Each check raises `ConfigError` naming the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import glob
import os

from zoo import registry
from zoo.config.errors import ConfigError
from zoo.config.schema import (ACTIVATIONS, DATA_SOURCES, DTYPES, NONFINITE, NORMS, OPTIMIZERS,
                               PARTITIONS, REMAT_POLICIES, SCHEDULES, Config, DataConfig, MeshConfig,
                               ModelConfig)


def positive(field: str, value, *, allow_zero: bool = False):
  if value < 0 or (value == 0 and not allow_zero):
    raise ConfigError(field, value, ">= 0" if allow_zero else "> 0")


def one_of(field: str, value, allowed):
  if value not in allowed:
    raise ConfigError(field, value, f"one of {list(allowed)}")


def validate_model(m: ModelConfig, prefix: str = "model.") -> None:
  """The backbone's fields; each family checks its own options (`validate`)."""
  for name in ("num_layers", "d_model", "num_heads", "vocab_size"):
    positive(prefix + name, getattr(m, name))
  for name in ("head_dim", "d_ff"):
    positive(prefix + name, getattr(m, name), allow_zero=True)
  if not m.head_dim and m.d_model % m.num_heads:
    raise ConfigError(
        prefix + "num_heads", m.num_heads,
        f"a divisor of model.d_model={m.d_model} (or set model.head_dim)")
  if not 0.0 <= m.dropout < 1.0:
    raise ConfigError(prefix + "dropout", m.dropout, "0 <= dropout < 1")
  if m.head_size % 2:
    raise ConfigError(prefix + "head_dim", m.head_size, "an even head size (rotary pairs)")
  one_of(prefix + "activation", m.activation, ACTIVATIONS)
  one_of(prefix + "norm", m.norm, NORMS)
  one_of(prefix + "remat", m.remat, REMAT_POLICIES)
  one_of(prefix + "compute_dtype", m.compute_dtype, DTYPES)
  if not m.pattern:
    raise ConfigError(prefix + "pattern", m.pattern, "a non-empty tuple of block kinds")
  for kind in m.pattern:
    one_of(prefix + "pattern", kind, registry.block_kinds())
  one_of(prefix + "stack", m.stack, registry.stack_kinds())


def validate_data(d: DataConfig) -> None:
  one_of("data.source", d.source, DATA_SOURCES)
  positive("data.vocab_size", d.vocab_size)
  if d.vocab_size < 16:
    raise ConfigError("data.vocab_size", d.vocab_size, ">= 16")
  positive("data.num_workers", d.num_workers, allow_zero=True)
  if d.source == "local_text":
    if not d.path:
      raise ConfigError("data.path", d.path, "a file, directory or glob when data.source='local_text'")
    if not (os.path.exists(d.path) or glob.glob(d.path, recursive=True)):
      raise ConfigError("data.path", d.path, "an existing file, directory or glob that matches files")
  if d.source == "tfds" and not d.name:
    raise ConfigError("data.name", d.name, "a registered TFDS dataset name when data.source='tfds'")
  if d.tokenizer and not os.path.isfile(d.tokenizer):
    raise ConfigError("data.tokenizer", d.tokenizer, "an existing SentencePiece .model file, or ''")


def validate_mesh(mesh: MeshConfig, num_devices: int) -> dict[str, int]:
  """Checks the mesh against the devices; returns the resolved axis sizes."""
  values = dataclasses.asdict(mesh)
  fills = [k for k, v in values.items() if v == -1]
  if len(fills) > 1:
    raise ConfigError(f"mesh.{fills[1]}", -1, "-1 on at most one mesh axis")
  for name, size in values.items():
    if size != -1 and size <= 0:
      raise ConfigError(f"mesh.{name}", size, "a positive size or -1")
  sizes = mesh.axis_sizes(num_devices)
  total = 1
  for size in sizes.values():
    total *= size
  if total != num_devices or any(s <= 0 for s in sizes.values()):
    raise ConfigError(
        "mesh", values,
        f"axis sizes whose product is the device count {num_devices} (-1 fills the rest)")
  return sizes


def validate(cfg: Config, num_devices: int) -> None:
  """Raises ConfigError for the first bad value; touches no file and compiles nothing."""
  for name in ("steps", "batch_size", "seq_len", "grad_accum_steps", "log_every",
               "eval_every", "checkpoint_every", "keep_checkpoints"):
    positive(name, getattr(cfg, name))
  positive("eval_tokens", cfg.eval_tokens, allow_zero=True)
  positive("peak_flops_per_device", cfg.peak_flops_per_device, allow_zero=True)
  one_of("nonfinite", cfg.nonfinite, NONFINITE)
  one_of("partition", cfg.partition, PARTITIONS)
  positive("profile_start", cfg.profile_start)
  positive("profile_steps", cfg.profile_steps, allow_zero=True)
  validate_model(cfg.model)
  for family in registry.families():
    if family.validate is not None:
      family.validate(cfg)
  validate_data(cfg.data)
  sizes = validate_mesh(cfg.mesh, num_devices)
  batch_shards = sizes["data"] * sizes["fsdp"] * sizes["expert"]
  if cfg.batch_size % (batch_shards * cfg.grad_accum_steps):
    raise ConfigError(
        "batch_size", cfg.batch_size,
        f"a multiple of mesh data*fsdp*expert={batch_shards} times grad_accum_steps="
        f"{cfg.grad_accum_steps}")
  o = cfg.optimizer
  one_of("optimizer.name", o.name, OPTIMIZERS)
  one_of("optimizer.schedule", o.schedule, SCHEDULES)
  positive("optimizer.lr", o.lr)
  positive("optimizer.warmup_steps", o.warmup_steps, allow_zero=True)
  positive("optimizer.grad_clip", o.grad_clip, allow_zero=True)
  positive("optimizer.weight_decay", o.weight_decay, allow_zero=True)
  if not 0.0 <= o.min_lr_ratio <= 1.0:
    raise ConfigError("optimizer.min_lr_ratio", o.min_lr_ratio, "0 <= ratio <= 1")
  for name in ("b1", "b2"):
    if not 0.0 <= getattr(o, name) < 1.0:
      raise ConfigError(f"optimizer.{name}", getattr(o, name), "0 <= beta < 1")
