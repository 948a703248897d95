"""The registry of model families: one `Family` object per family module.

A family module (zoo/families/<name>.py, imported automatically) calls `register(Family(...))`
once. The object carries everything specific to the family, so shared code (config parsing
and checks, accounting, the train loop, checkpoints, evaluation, the entry points) reads it
from here and never names a family:

- `options`: typed dataclasses with defaults, one config group each (`model.<group>`);
- `validate(cfg)`: raises `zoo.config.ConfigError` (one line naming the field);
- `blocks` / `stacks`: the kinds `model.pattern` and `model.stack` name, each with its
  builder, its analytic FLOPs and parameter terms, what the conformance suite may expect of
  it (causal sampling, KV-cache decoding, FLOP tolerance) and a tiny example config;
- `prepare(cfg, tokenizer, echo) -> cfg`: work before training (e.g. corpus statistics);
- `statistics(run, num_batches) -> dict` and `figures(run, directory) -> [paths]`: what
  eval.py reports and draws for a run that uses the family;
- `local_fields`: option fields that name files on the training machine (free to differ
  when a checkpoint is restored elsewhere, reset to their defaults by eval.py).

This module imports nothing from the zoo: it sits below the config, so the config can list
the registered option groups and block kinds without importing any family.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class BlockKind:
  """A block `model.pattern` can name.

  build(model_cfg, *, rngs) -> module called as `block(x_BLD, ctx) -> (x_BLD, aux)`.
  forward_flops(model_cfg, seq_len) -> forward FLOPs per token; train_flops likewise
  (default 3 x forward: trainable weights). inactive_params(model_cfg): parameters of one
  block a token does not use (MoE experts it is not routed to); emulated_params(model_cfg):
  dense parameters one block stands in for (structured layers).
  lookahead: training-time routing looks at later tokens by design (the sampling path must
  still be causal). kv_cache: one-token decoding with a cache equals the full forward.
  flops_rtol: how close the analytic FLOPs must be to XLA's count of the compiled model.
  uses: the option groups the block reads.
  example: model-config overrides (dict; groups as nested dicts) of a tiny model that
  exercises this kind; the conformance suite runs it. decode_example: further overrides for
  the decoding check (e.g. dropless experts: a capacity can overflow in a prefill and not in
  one-token steps).
  """

  name: str
  build: Callable
  forward_flops: Callable[[Any, int], float]
  train_flops: Callable[[Any, int], float] | None = None
  inactive_params: Callable[[Any], float] | None = None
  emulated_params: Callable[[Any], int] | None = None
  lookahead: bool = False
  kv_cache: bool = True
  flops_rtol: float = 0.05
  uses: tuple[str, ...] = ()
  example: dict = dataclasses.field(default_factory=dict)
  decode_example: dict = dataclasses.field(default_factory=dict)

  def train(self, model_cfg, seq_len: int) -> float:
    """Training (forward + backward) FLOPs per token."""
    if self.train_flops is not None:
      return self.train_flops(model_cfg, seq_len)
    return 3 * self.forward_flops(model_cfg, seq_len)


@dataclasses.dataclass(frozen=True)
class StackKind:
  """How the blocks are applied to the sequence (`model.stack`).

  build(model_cfg, *, rngs) -> module called as `stack(x_BLD, ctx) -> (x_BLD, aux)` with aux
  keyed "layer_<i>/<name>". flops(model_cfg, seq_len, block_flops) -> FLOPs per token of the
  whole stack, where `block_flops(kind, keys)` gives one block's FLOPs per processed token
  when its attention sees `keys` keys. kv_cache: False when the stack runs its layers more
  than once per token (sampling then recomputes the window). cost_analysis_context: a
  context manager under which XLA's cost analysis sees every step of the stack's loops (it
  counts a loop body once), for checking `flops` against it.
  """

  name: str
  build: Callable
  flops: Callable
  kv_cache: bool = True
  lookahead: bool = False
  flops_rtol: float = 0.05
  example: dict = dataclasses.field(default_factory=dict)
  cost_analysis_context: Callable | None = None


@dataclasses.dataclass(frozen=True)
class Family:
  """Everything specific to one model family (see the module docstring)."""

  name: str
  options: dict[str, type] = dataclasses.field(default_factory=dict)
  blocks: tuple[BlockKind, ...] = ()
  stacks: tuple[StackKind, ...] = ()
  validate: Callable | None = None
  prepare: Callable | None = None
  statistics: Callable | None = None
  figures: Callable | None = None
  local_fields: tuple[str, ...] = ()  # "group.field"


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
  """Adds a family; a block, stack or option group name may be claimed only once."""
  if family.name in _FAMILIES:
    raise ValueError(f"family {family.name!r} registered twice")
  for kind, taken in (("block", block_kinds()), ("stack", stack_kinds()),
                      ("option group", tuple(option_groups()))):
    names = {"block": [b.name for b in family.blocks], "stack": [s.name for s in family.stacks],
             "option group": list(family.options)}[kind]
    for name in names:
      if name in taken:
        raise ValueError(f"{kind} {name!r} of family {family.name!r} is already registered")
  _FAMILIES[family.name] = family
  return family


def families() -> tuple[Family, ...]:
  return tuple(_FAMILIES.values())


def option_groups() -> dict[str, type]:
  """Config group name -> its options dataclass, over every family."""
  return {name: cls for f in _FAMILIES.values() for name, cls in f.options.items()}


def block_kinds() -> tuple[str, ...]:
  return tuple(sorted(b.name for f in _FAMILIES.values() for b in f.blocks))


def stack_kinds() -> tuple[str, ...]:
  return tuple(sorted(s.name for f in _FAMILIES.values() for s in f.stacks))


def block(kind: str) -> BlockKind:
  return _find("block", kind)


def stack(kind: str) -> StackKind:
  return _find("stack", kind)


def _find(what: str, kind: str):
  for f in _FAMILIES.values():
    for entry in (f.blocks if what == "block" else f.stacks):
      if entry.name == kind:
        return entry
  known = block_kinds() if what == "block" else stack_kinds()
  raise KeyError(f"no {what} kind {kind!r}; registered: {list(known)} (importing "
                 "zoo.families registers the zoo's own)")
