"""Validation of a whole config against the devices that exist, before anything compiles.

Each check raises `ConfigError` naming the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import glob
import os

from zoo.config.errors import ConfigError
from zoo.config.families import ModConfig
from zoo.config.schema import (ACTIVATIONS, DATA_SOURCES, DTYPES, HASH_KINDS, KERNEL_BACKENDS,
                               MOD_DECODE, MOD_ROUTING, MOE_ROUTERS, NORMS, OPTIMIZERS,
                               REMAT_POLICIES, SCHEDULES, Config, DataConfig, MeshConfig,
                               ModelConfig)


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
  _positive("profile_start", cfg.profile_start)
  _positive("profile_steps", cfg.profile_steps, allow_zero=True)
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
