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
class LadderConfig:
  """Stack "ladder" (Ju et al. 2021): the whole stack applied `ladder_size` times."""

  ladder_size: int = 2


@dataclasses.dataclass(frozen=True)
class StaircaseConfig:
  """Stack "staircase" (Ju et al. 2021); defaults are the paper's algorithmic setting.

  forward_size F: new tokens per step; staircase_size S: tokens per pass (S/F passes per
  chunk); memory: cached tokens per layer from chunks already emitted (0: none);
  attention_span: how far back (positions) a query may attend (0: no limit).
  """

  forward_size: int = 64
  staircase_size: int = 128
  memory: int = 128
  attention_span: int = 128


@dataclasses.dataclass(frozen=True)
class DopedConfig:
  """Block "frozen_mlp" (Chatelain et al. 2021): hidden width = frozen_hidden_mult x d_model."""

  frozen_hidden_mult: int = 6


@dataclasses.dataclass(frozen=True)
class StructuredConfig:
  """Block "block_hadamard" (Chatelain et al. 2021): diagonal blocks of its two matrices."""

  num_blocks: int = 4


@dataclasses.dataclass(frozen=True)
class ModConfig:
  """Block "mod" (Raposo et al. 2024, Mixture-of-Depths): a dense block routed by capacity.

  capacity c: fraction of each sequence's tokens a routed block processes (k = ceil(c L));
  routing: "learned" (top-k of the router r = w.x) or "stochastic" (top-k of Gaussian
  noise, the paper's ablation); router_loss_weight: BCE of the router logits against the
  top-k decisions (the paper's sampling method a); predictor_loss_weight and
  predictor_hidden: the auxiliary MLP predictor on stop-gradient inputs (method b; hidden
  0: d_model // 4); decode: what decides causally when sampling, "predictor" (logit > 0)
  or "router" (r > decode_threshold).
  """

  capacity: float = 0.125
  routing: str = "learned"
  router_loss_weight: float = 0.01
  predictor_loss_weight: float = 0.1
  predictor_hidden: int = 0
  decode: str = "predictor"
  decode_threshold: float = 0.0


@dataclasses.dataclass(frozen=True)
class MoeConfig:
  """Block "moe" (zoo/models/moe.py): attention + a Mixture-of-Experts MLP.

  router: "switch" (top-1, Fedus et al. 2021), "topk" (top_k >= 2, normalised gates),
  "expert_choice" (Zhou et al. 2022; not causal), "base" (balanced assignment, Lewis et al.
  2021), "hash" (fixed token -> expert map, Roller et al. 2021). num_experts: experts per
  MoE layer (for fine-grained MoE, Krajewski et al. 2024: granularity x expansion rate).
  top_k: experts per token (token choice), or per token on average (expert choice, times
  capacity_factor). capacity_factor: slots per expert = capacity_factor x top_k x L / E
  (routing groups are sequences); 0 = dropless (token choice only). granularity G: each
  expert is d_ff / G wide. aux_loss_weight: alpha of the load-balance loss
  alpha E sum_i f_i P_i; z_loss_weight: the router z-loss (0: off). hash_kind: "random",
  "balanced", "bigram", "previous", "position" or "oracle" (next token: a leakage check,
  never for results); hash_frequencies: a .npy of token counts for "balanced" ('': the
  training corpus' counts, which train.py computes; a Zipf prior by token id where no corpus
  is at hand); hash_seed seeds the map. noop_experts N:
  integrated MoDE (Raposo et al. 2024): the router (switch or topk) chooses among the E
  experts and N no-op experts, a choice of a no-op expert adds nothing (the token keeps its
  residual), and each real expert has capacity_factor x top_k x L / (E + N) slots.
  output_norm: a norm on the MoE output before the residual add (Krajewski et al. 2024 use
  one for granularity > 1). backend: kernels' backend ('' picks by platform; "xla",
  "pallas_tpu", "pallas_interpret").
  """

  router: str = "switch"
  num_experts: int = 8
  top_k: int = 1
  capacity_factor: float = 1.25
  granularity: int = 1
  aux_loss_weight: float = 0.01
  z_loss_weight: float = 0.0
  hash_kind: str = "random"
  hash_frequencies: str = ""
  hash_seed: int = 0
  noop_experts: int = 0
  output_norm: bool = False
  backend: str = ""

  @property
  def num_choices(self) -> int:
    """What the router chooses among: the experts and the no-op experts."""
    return self.num_experts + self.noop_experts

  @property
  def expansion(self) -> float:
    """Krajewski et al.'s expansion rate E: total expert parameters / dense MLP parameters."""
    return self.num_experts / self.granularity


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
  _validate_families(m, prefix)
  _validate_moe(m, prefix)


def _validate_families(m: ModelConfig, prefix: str) -> None:
  """The nested groups of the recurrent, doped and structured families."""
  _positive(prefix + "ladder.ladder_size", m.ladder.ladder_size)
  sc, scp = m.staircase, prefix + "staircase."
  _positive(scp + "forward_size", sc.forward_size)
  _positive(scp + "staircase_size", sc.staircase_size)
  if sc.staircase_size % sc.forward_size:
    raise ConfigError(scp + "staircase_size", sc.staircase_size,
                      f"a multiple of {scp}forward_size={sc.forward_size}")
  _positive(scp + "memory", sc.memory, allow_zero=True)
  if sc.memory % sc.forward_size:
    raise ConfigError(scp + "memory", sc.memory,
                      f"a multiple of {scp}forward_size={sc.forward_size} (0: no memory)")
  _positive(scp + "attention_span", sc.attention_span, allow_zero=True)
  if m.stack == "staircase":
    for kind in m.pattern:
      _one_of(prefix + "pattern", kind, ("dense",))  # layers attend over a cached memory
    if m.scan_layers:
      raise ConfigError(prefix + "scan_layers", True, "False with model.stack='staircase'")
  _validate_mod(m.mod, prefix + "mod.")
  _positive(prefix + "doped.frozen_hidden_mult", m.doped.frozen_hidden_mult)
  blocks = m.structured.num_blocks
  if blocks <= 0 or blocks & (blocks - 1):
    raise ConfigError(prefix + "structured.num_blocks", blocks, "a power of two")
  if "block_hadamard" in m.pattern:
    for width in (m.d_model, m.hidden_size):
      if width % blocks:
        raise ConfigError(prefix + "structured.num_blocks", blocks,
                          f"a divisor of model.d_model={m.d_model} and of the MLP hidden "
                          f"size {m.hidden_size}")


def _validate_mod(mod: ModConfig, prefix: str) -> None:
  if not 0.0 < mod.capacity <= 1.0:
    raise ConfigError(prefix + "capacity", mod.capacity, "0 < capacity <= 1")
  _one_of(prefix + "routing", mod.routing, MOD_ROUTING)
  _one_of(prefix + "decode", mod.decode, MOD_DECODE)
  _positive(prefix + "router_loss_weight", mod.router_loss_weight, allow_zero=True)
  _positive(prefix + "predictor_loss_weight", mod.predictor_loss_weight, allow_zero=True)
  _positive(prefix + "predictor_hidden", mod.predictor_hidden, allow_zero=True)


def _validate_moe(m: ModelConfig, prefix: str) -> None:
  """Block "moe": router kind, expert counts, capacity, hash map."""
  mo, p = m.moe, prefix + "moe."
  _one_of(p + "router", mo.router, MOE_ROUTERS)
  _positive(p + "num_experts", mo.num_experts)
  if mo.router in ("switch", "base", "hash") and mo.top_k != 1:
    raise ConfigError(p + "top_k", mo.top_k, f"1 with {p}router={mo.router!r}")
  if mo.router == "topk" and not 2 <= mo.top_k <= mo.num_experts:
    raise ConfigError(p + "top_k", mo.top_k,
                      f"2 <= top_k <= {p}num_experts={mo.num_experts} with router 'topk'")
  if mo.router == "expert_choice" and mo.top_k < 1:
    raise ConfigError(p + "top_k", mo.top_k, ">= 1")
  _positive(p + "capacity_factor", mo.capacity_factor, allow_zero=True)
  if mo.capacity_factor == 0 and mo.router == "expert_choice":
    raise ConfigError(p + "capacity_factor", 0.0,
                      "> 0 with router 'expert_choice' (0, dropless, is for token choice)")
  _positive(p + "granularity", mo.granularity)
  if m.hidden_size % mo.granularity:
    raise ConfigError(p + "granularity", mo.granularity,
                      f"a divisor of the MLP hidden size {m.hidden_size}")
  _positive(p + "aux_loss_weight", mo.aux_loss_weight, allow_zero=True)
  _positive(p + "z_loss_weight", mo.z_loss_weight, allow_zero=True)
  _positive(p + "noop_experts", mo.noop_experts, allow_zero=True)
  if mo.noop_experts and mo.router not in ("switch", "topk"):
    raise ConfigError(p + "noop_experts", mo.noop_experts,
                      f"0 with {p}router={mo.router!r} (no-op experts need 'switch' or 'topk')")
  if mo.router == "topk" and mo.top_k > mo.num_choices:
    raise ConfigError(p + "top_k", mo.top_k, f"<= {p}num_experts + {p}noop_experts")
  _one_of(p + "hash_kind", mo.hash_kind, HASH_KINDS)
  if mo.hash_frequencies and not os.path.isfile(mo.hash_frequencies):
    raise ConfigError(p + "hash_frequencies", mo.hash_frequencies, "an existing .npy file, or ''")
  _one_of(p + "backend", mo.backend, KERNEL_BACKENDS)


def _validate_base_groups(cfg: Config) -> None:
  """BASE gives each expert exactly G / E tokens of a routing group of G tokens: a sequence
  in block "moe", the k routed tokens in block "mode_staged"."""
  m = cfg.model
  if m.moe.router != "base":
    return
  from zoo.models.mod import capacity_tokens

  groups = {"moe": cfg.seq_len, "mode_staged": capacity_tokens(m.mod.capacity, cfg.seq_len)}
  for kind, group in groups.items():
    if kind in m.pattern and group % m.moe.num_experts:
      raise ConfigError("model.moe.num_experts", m.moe.num_experts,
                        f"a divisor of the {group} tokens a block {kind!r} routes (seq_len="
                        f"{cfg.seq_len}, model.mod.capacity={m.mod.capacity}) with router 'base'")


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
  _validate_base_groups(cfg)
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
