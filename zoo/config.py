"""Typed, frozen configuration built from an ml_collections ConfigDict; all validation.

`from_configdict` turns the ConfigDict of a `configs/*.py` file into nested frozen
dataclasses, and `validate` checks every value against the devices that exist, before
anything is compiled or written. A bad value raises `ConfigError`, whose message is one
line naming the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import types
import typing
from typing import Any

import ml_collections


class ConfigError(ValueError):
  """A config value that cannot be used; the message names field, value and allowed."""

  def __init__(self, field: str, value: Any, allowed: str):
    self.field, self.value, self.allowed = field, value, allowed
    super().__init__(f"config.{field}={value!r} is invalid: allowed {allowed}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The decoder stack. `pattern` is tiled over `num_layers`; each entry is a block kind."""

  num_layers: int = 2
  d_model: int = 128
  num_heads: int = 4
  head_dim: int = 0  # 0: d_model // num_heads
  d_ff: int = 0  # 0: 4 * d_model
  activation: str = "gelu"
  dropout: float = 0.0
  tie_embeddings: bool = True
  pattern: tuple[str, ...] = ("dense",)
  stack: str = "plain"  # how the blocks are applied: a registered stack kind
  norm: str = "rmsnorm"
  rope_base: float = 10_000.0
  init_std: float = 0.02
  scan_layers: bool = False
  remat: str = "none"
  compute_dtype: str = "float32"
  param_dtype: str = "float32"
  vocab_size: int = 0  # filled from data.vocab_size

  @property
  def head_size(self) -> int:
    return self.head_dim or self.d_model // self.num_heads

  @property
  def hidden_size(self) -> int:
    return self.d_ff or 4 * self.d_model

  @property
  def layer_kinds(self) -> tuple[str, ...]:
    """The block kind of every layer: the pattern tiled over the depth."""
    return tuple(self.pattern[i % len(self.pattern)] for i in range(self.num_layers))


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device-mesh axis sizes; one of them may be -1 to take the remaining devices."""

  data: int = -1
  fsdp: int = 1
  tensor: int = 1
  expert: int = 1

  def axis_sizes(self, num_devices: int) -> dict[str, int]:
    sizes = dataclasses.asdict(self)
    fixed = 1
    for size in sizes.values():
      fixed *= size if size != -1 else 1
    return {
        name: (num_devices // fixed if size == -1 else size)
        for name, size in sizes.items()
    }


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW with linear warmup then a decay schedule, and global-norm clipping."""

  name: str = "adamw"
  lr: float = 1e-3
  warmup_steps: int = 100
  schedule: str = "cosine"
  min_lr_ratio: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.0
  grad_clip: float = 1.0


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where text comes from and how it is tokenized.

  source: "stdlib" (offline default: the running Python's standard-library sources),
  "local_text" (`path` is a file, directory or glob), or "tfds" (`name` a registered TFDS
  dataset, `text_feature` its text field, `path` an optional TFDS data_dir).
  """

  source: str = "stdlib"
  path: str = ""
  name: str = ""
  text_feature: str = "text"
  train_split: str = "train"
  eval_split: str = "validation"
  vocab_size: int = 8192
  tokenizer: str = ""  # a SentencePiece .model; empty: train one on the train split
  cache_dir: str = ""  # empty: $ZOO_CACHE or ~/.cache/zoo
  num_workers: int = 0


@dataclasses.dataclass(frozen=True)
class Config:
  """A whole run."""

  seed: int = 0
  steps: int = 1000
  batch_size: int = 16
  seq_len: int = 256
  grad_accum_steps: int = 1
  log_every: int = 10
  eval_every: int = 200
  eval_batches: int = 8
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  peak_flops_per_device: float = 0.0  # 0: look up the device kind (measured on CPU)
  model: ModelConfig = ModelConfig()
  mesh: MeshConfig = MeshConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  data: DataConfig = DataConfig()


ACTIVATIONS = ("gelu", "relu", "silu", "swiglu", "geglu")
NORMS = ("rmsnorm", "layernorm")
REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims")
DTYPES = ("float32", "bfloat16")
SCHEDULES = ("cosine", "linear", "constant")
OPTIMIZERS = ("adamw", "adam", "sgd")
DATA_SOURCES = ("stdlib", "local_text", "tfds")


# ----------------------------------------------------------------------------------------
# ConfigDict -> dataclasses


def _convert(cls, values: Any, prefix: str):
  if isinstance(values, ml_collections.ConfigDict):
    values = values.to_dict()
  if not isinstance(values, dict):
    raise ConfigError(prefix.rstrip("."), values, f"a group of fields of {cls.__name__}")
  fields = {f.name: f for f in dataclasses.fields(cls)}
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for key, value in values.items():
    if key not in fields:
      raise ConfigError(prefix + key, value, f"one of the fields {sorted(fields)}")
    kwargs[key] = _coerce(hints[key], value, prefix + key)
  return cls(**kwargs)


def _coerce(hint, value, field: str):
  if dataclasses.is_dataclass(hint):
    return _convert(hint, value, field + ".")
  origin = typing.get_origin(hint)
  if origin is tuple:
    if isinstance(value, str):
      value = tuple(v.strip() for v in value.split(",") if v.strip())
    if not isinstance(value, (list, tuple)):
      raise ConfigError(field, value, "a tuple of strings")
    return tuple(value)
  if hint is bool:
    if not isinstance(value, bool):
      raise ConfigError(field, value, "True or False")
    return value
  if hint is int:
    if isinstance(value, bool) or not isinstance(value, int):
      if isinstance(value, float) and value.is_integer():
        return int(value)
      raise ConfigError(field, value, "an integer")
    return value
  if hint is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(field, value, "a number")
    return float(value)
  if hint is str:
    if not isinstance(value, str):
      raise ConfigError(field, value, "a string")
    return value
  if isinstance(hint, types.UnionType):
    return value
  return value


def from_configdict(cd: ml_collections.ConfigDict) -> Config:
  """Builds the typed config; model.vocab_size follows data.vocab_size."""
  cfg = _convert(Config, cd, "")
  model = dataclasses.replace(cfg.model, vocab_size=cfg.data.vocab_size)
  return dataclasses.replace(cfg, model=model)


# ----------------------------------------------------------------------------------------
# Validation


def _positive(field: str, value, *, allow_zero: bool = False):
  if value < 0 or (value == 0 and not allow_zero):
    raise ConfigError(field, value, ">= 0" if allow_zero else "> 0")


def _one_of(field: str, value, allowed):
  if value not in allowed:
    raise ConfigError(field, value, f"one of {list(allowed)}")


def validate_model(m: ModelConfig, prefix: str = "model.") -> None:
  from zoo.models import registry  # the block kinds every family registered

  for name in ("num_layers", "d_model", "num_heads", "vocab_size"):
    _positive(prefix + name, getattr(m, name))
  for name in ("head_dim", "d_ff"):
    _positive(prefix + name, getattr(m, name), allow_zero=True)
  if not m.head_dim and m.d_model % m.num_heads:
    raise ConfigError(
        prefix + "num_heads", m.num_heads,
        f"a divisor of model.d_model={m.d_model} (or set model.head_dim)")
  if not 0.0 <= m.dropout < 1.0:
    raise ConfigError(prefix + "dropout", m.dropout, "0 <= dropout < 1")
  if m.head_size % 2:
    raise ConfigError(prefix + "head_dim", m.head_size, "an even head size (rotary pairs)")
  _one_of(prefix + "activation", m.activation, ACTIVATIONS)
  _one_of(prefix + "norm", m.norm, NORMS)
  _one_of(prefix + "remat", m.remat, REMAT_POLICIES)
  _one_of(prefix + "compute_dtype", m.compute_dtype, DTYPES)
  _one_of(prefix + "param_dtype", m.param_dtype, DTYPES)
  if not m.pattern:
    raise ConfigError(prefix + "pattern", m.pattern, "a non-empty tuple of block kinds")
  for kind in m.pattern:
    _one_of(prefix + "pattern", kind, registry.block_kinds())
  _one_of(prefix + "stack", m.stack, registry.stack_kinds())


def validate_data(d: DataConfig) -> None:
  _one_of("data.source", d.source, DATA_SOURCES)
  _positive("data.vocab_size", d.vocab_size)
  if d.vocab_size < 16:
    raise ConfigError("data.vocab_size", d.vocab_size, ">= 16")
  _positive("data.num_workers", d.num_workers, allow_zero=True)
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
    _positive(name, getattr(cfg, name))
  _positive("eval_batches", cfg.eval_batches, allow_zero=True)
  _positive("peak_flops_per_device", cfg.peak_flops_per_device, allow_zero=True)
  validate_model(cfg.model)
  validate_data(cfg.data)
  sizes = validate_mesh(cfg.mesh, num_devices)
  batch_shards = sizes["data"] * sizes["fsdp"]
  if cfg.batch_size % (batch_shards * cfg.grad_accum_steps):
    raise ConfigError(
        "batch_size", cfg.batch_size,
        f"a multiple of mesh data*fsdp={batch_shards} times grad_accum_steps="
        f"{cfg.grad_accum_steps}")
  o = cfg.optimizer
  _one_of("optimizer.name", o.name, OPTIMIZERS)
  _one_of("optimizer.schedule", o.schedule, SCHEDULES)
  _positive("optimizer.lr", o.lr)
  _positive("optimizer.warmup_steps", o.warmup_steps, allow_zero=True)
  _positive("optimizer.grad_clip", o.grad_clip, allow_zero=True)
  _positive("optimizer.weight_decay", o.weight_decay, allow_zero=True)
  if not 0.0 <= o.min_lr_ratio <= 1.0:
    raise ConfigError("optimizer.min_lr_ratio", o.min_lr_ratio, "0 <= ratio <= 1")
  for name in ("b1", "b2"):
    if not 0.0 <= getattr(o, name) < 1.0:
      raise ConfigError(f"optimizer.{name}", getattr(o, name), "0 <= beta < 1")
