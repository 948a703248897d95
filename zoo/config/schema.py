"""The run's typed, frozen configuration, and the values each choice field allows."""

from __future__ import annotations

import dataclasses

from typing import Any

from zoo import registry


@dataclasses.dataclass(frozen=True, init=False)
class ModelConfig:
  """The decoder stack. `pattern` is tiled over `num_layers`; each entry is a block kind.

  Besides these fields a model config holds one option group per registered family
  (`model.moe`, `model.mod`, ...: the families' own dataclasses, see zoo/registry.py), read
  as attributes (`cfg.moe.num_experts`) and set by keyword (`ModelConfig(moe=MoeConfig())`,
  `dataclasses.replace(cfg, moe=...)`). A group not given takes its defaults.
  """

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
  compute_dtype: str = "float32"  # parameters are float32; activations in this dtype
  vocab_size: int = 0  # filled from data.vocab_size
  options: tuple[tuple[str, Any], ...] = ()  # (group, options) of every family, sorted

  def __init__(self, options=(), **values):
    groups = dict(options)
    known = registry.option_groups()
    for name in [n for n in values if n in known]:
      groups[name] = values.pop(name)
    for f in dataclasses.fields(self):
      if f.name == "options":
        continue
      object.__setattr__(self, f.name, values.pop(f.name, f.default))
    if values:
      raise TypeError(f"ModelConfig has no field {sorted(values)[0]!r}")
    for name, cls in known.items():
      groups.setdefault(name, cls())
    object.__setattr__(self, "options", tuple(sorted(groups.items())))

  def __getattr__(self, name: str):
    """A family's option group, e.g. `cfg.moe`."""
    for group, value in self.__dict__.get("options", ()):
      if group == name:
        return value
    raise AttributeError(f"ModelConfig has no field or option group {name!r}")

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
  eval_tokens: int = 131_072  # validation sample size in tokens; 0: no validation
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  peak_flops_per_device: float = 0.0  # 0: look up the device kind (measured on CPU)
  nonfinite: str = "stop"  # non-finite loss or grad norm: "stop" the run, or "skip" the update
  profile_start: int = 5  # first step of a jax.profiler trace into WORKDIR/profile
  profile_steps: int = 0  # steps traced; 0: no trace
  # How a sharded model runs its kernels (MoD's gather/scatter, MoE dispatch): "shard_map",
  # per shard with explicit collectives (all-to-all expert parallelism), or "gspmd", left to
  # XLA's partitioner (for comparison; it cannot partition a Mosaic kernel).
  partition: str = "shard_map"
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
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
NONFINITE = ("stop", "skip")
PARTITIONS = ("shard_map", "gspmd")
