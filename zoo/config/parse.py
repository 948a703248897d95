"""ConfigDict (a `configs/*.py` file plus command-line overrides) -> typed dataclasses."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

import ml_collections

from zoo.config.errors import ConfigError
from zoo.config.schema import Config


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


def from_configdict(cd: ml_collections.ConfigDict) -> Config:
  """Builds the typed config; model.vocab_size follows data.vocab_size."""
  cfg = _convert(Config, cd, "")
  model = dataclasses.replace(cfg.model, vocab_size=cfg.data.vocab_size)
  return dataclasses.replace(cfg, model=model)
