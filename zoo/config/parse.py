"""ConfigDict (a `configs/*.py` file plus command-line overrides) <-> typed dataclasses.

`defaults()` is the ConfigDict every preset starts from: it is made from the dataclasses'
defaults (and every registered family's option group), so no default is written twice.
`to_dict` is the inverse of `from_configdict`: the nested layout of config.json and of the
checkpoints' metadata, with each option group under `model.<group>`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any

import ml_collections

from zoo import registry
from zoo.config.errors import ConfigError
from zoo.config.schema import Config, ModelConfig

# Fields that older code wrote and this code no longer has, by group ("" the top level):
# dropped when a saved config is read.
REMOVED_FIELDS = {"": ("eval_batches",), "model": ("param_dtype",)}


def _fields(cls) -> dict[str, Any]:
  """Field name -> type hint; a model config's option groups count as fields."""
  hints = typing.get_type_hints(cls)
  fields = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
  if cls is ModelConfig:
    del fields["options"]
    fields.update(registry.option_groups())
  return fields


def _unknown(field: str, allowed) -> str:
  close = difflib.get_close_matches(field.rsplit(".", 1)[-1], allowed, n=1)
  hint = f"did you mean {close[0]!r}? " if close else ""
  return f"{hint}fields here: {sorted(allowed)}"


def _convert(cls, values: Any, prefix: str):
  if isinstance(values, ml_collections.ConfigDict):
    values = values.to_dict()
  if dataclasses.is_dataclass(values):
    return values
  if not isinstance(values, dict):
    raise ConfigError(prefix.rstrip("."), values, f"a group of fields of {cls.__name__}")
  fields = _fields(cls)
  kwargs = {}
  for key, value in values.items():
    if key not in fields:
      raise ConfigError(prefix + key, value, _unknown(key, fields))
    kwargs[key] = _coerce(fields[key], value, prefix + key)
  return cls(**kwargs)


def _coerce(hint, value, field: str):
  if dataclasses.is_dataclass(hint):
    return _convert(hint, value, field + ".")
  origin = typing.get_origin(hint)
  if origin is tuple:
    if isinstance(value, str):
      value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
      raise ConfigError(field, value, "a tuple of strings, or one comma-separated string")
    # "dense,mod" on the command line is two entries, not one named 'dense,mod'.
    parts = (part.strip(" ()'\"") for v in value for part in v.split(","))
    return tuple(part for part in parts if part)
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
    if not math.isfinite(value):  # NaN compares false everywhere: it would pass every check
      raise ConfigError(field, value, "a finite number")
    return float(value)
  if hint is str:
    if not isinstance(value, str):
      raise ConfigError(field, value, "a string")
    return value
  if isinstance(hint, types.UnionType):
    return value
  return value


def from_configdict(cd: ml_collections.ConfigDict | dict) -> Config:
  """Builds the typed config; model.vocab_size follows data.vocab_size."""
  cfg = _convert(Config, cd, "")
  model = dataclasses.replace(cfg.model, vocab_size=cfg.data.vocab_size)
  return dataclasses.replace(cfg, model=model)


def from_saved(raw: dict) -> Config:
  """A config read back from config.json or a checkpoint, written by this or older code."""
  raw = dict(raw, model=dict(raw["model"]))
  for group, names in REMOVED_FIELDS.items():
    for name in names:
      (raw[group] if group else raw).pop(name, None)
  return from_configdict(raw)


def to_dict(value) -> Any:
  """Config (or any part of it) -> nested dicts and lists, option groups under their names."""
  if isinstance(value, ModelConfig):
    out = {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)
           if f.name != "options"}
    out.update({name: to_dict(group) for name, group in value.options})
    return out
  if dataclasses.is_dataclass(value):
    return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
  if isinstance(value, tuple):
    return list(value)
  return value


def defaults() -> ml_collections.ConfigDict:
  """Every field at its default, as the ConfigDict a preset file starts from."""
  def convert(value):
    if isinstance(value, dict):
      return ml_collections.ConfigDict({k: convert(v) for k, v in value.items()})
    return tuple(value) if isinstance(value, list) else value
  return convert(to_dict(Config()))
