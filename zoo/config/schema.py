"""The run's typed, frozen configuration, and the values each choice field allows."""

from __future__ import annotations

import dataclasses

from zoo.config.families import (DopedConfig, LadderConfig, ModConfig, MoeConfig,
                                 StaircaseConfig, StructuredConfig)


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
  ladder: LadderConfig = LadderConfig()
  staircase: StaircaseConfig = StaircaseConfig()
  doped: DopedConfig = DopedConfig()
  structured: StructuredConfig = StructuredConfig()
  mod: ModConfig = ModConfig()
  moe: MoeConfig = MoeConfig()

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
  profile_start: int = 5  # first step of a jax.profiler trace into WORKDIR/profile
  profile_steps: int = 0  # steps traced; 0: no trace
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
MOE_ROUTERS = ("switch", "topk", "expert_choice", "base", "hash")
HASH_KINDS = ("random", "balanced", "bigram", "previous", "position", "oracle")
KERNEL_BACKENDS = ("", "xla", "pallas_tpu", "pallas_interpret")
DATA_SOURCES = ("stdlib", "local_text", "tfds")
MOD_ROUTING = ("learned", "stochastic")
MOD_DECODE = ("predictor", "router")
