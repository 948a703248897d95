"""Block kinds by name: each family registers the blocks a config's `model.pattern` names.

A block factory is `factory(cfg: ModelConfig, *, rngs) -> nnx.Module`; the module is
called as `block(x_BLD, ctx: Context) -> (x_BLD, aux)` where `aux` maps names to scalars:
names starting with "aux_loss/" are added to the training objective, the rest are
statistics.
"""

from __future__ import annotations

from typing import Callable

_BLOCKS: dict[str, Callable] = {}
_STACKS: dict[str, Callable] = {}


def register(kind: str):
  def wrap(factory):
    if kind in _BLOCKS:
      raise ValueError(f"block kind {kind!r} registered twice")
    _BLOCKS[kind] = factory
    return factory
  return wrap


def block_kinds() -> tuple[str, ...]:
  import zoo.models  # noqa: F401  (importing the package registers every family)
  return tuple(sorted(_BLOCKS))


def make_block(kind: str, cfg, *, rngs):
  import zoo.models  # noqa: F401
  return _BLOCKS[kind](cfg, rngs=rngs)


def register_stack(kind: str):
  """Registers a layer stack (`model.stack`): how the blocks are applied to the sequence.

  A stack factory is `factory(cfg, *, rngs)`; the module is called as
  `stack(x_BLD, ctx) -> (x_BLD, aux)` with aux keyed "layer_<i>/<name>".
  """
  def wrap(factory):
    if kind in _STACKS:
      raise ValueError(f"stack kind {kind!r} registered twice")
    _STACKS[kind] = factory
    return factory
  return wrap


def stack_kinds() -> tuple[str, ...]:
  import zoo.models  # noqa: F401
  return tuple(sorted(_STACKS))


def make_stack(kind: str, cfg, *, rngs):
  import zoo.models  # noqa: F401
  return _STACKS[kind](cfg, rngs=rngs)
