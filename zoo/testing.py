"""Tiny configs shared by tests and notebooks: they build and run in a second on a CPU."""

from __future__ import annotations

import dataclasses

import numpy as np

import zoo.families  # noqa: F401  (registers every family)
from zoo import registry
from zoo.config import Config, DataConfig, MeshConfig, ModelConfig, OptimizerConfig


def tiny_model(**overrides) -> ModelConfig:
  base = dict(vocab_size=64, num_layers=2, d_model=32, num_heads=4, d_ff=64)
  return ModelConfig(**{**base, **overrides})


def tiny_config(*, model: ModelConfig | None = None, mesh: MeshConfig | None = None,
                **overrides) -> Config:
  model = model or tiny_model()
  base = dict(steps=20, batch_size=8, seq_len=16, log_every=5, eval_every=10,
              eval_tokens=64, model=model, mesh=mesh or MeshConfig(data=1),
              optimizer=OptimizerConfig(lr=3e-3, warmup_steps=2),
              data=DataConfig(vocab_size=model.vocab_size))
  return Config(**{**base, **overrides})


def random_batch(cfg: Config, seed: int = 0, *, packed: bool = True) -> dict[str, np.ndarray]:
  """A batch in the pipeline's format; `packed` puts two documents in each row."""
  rng = np.random.default_rng(seed)
  b, l = cfg.batch_size, cfg.seq_len
  tokens = rng.integers(1, cfg.model.vocab_size, (b, l + 1))
  segment_ids = np.ones((b, l), np.int32)
  positions = np.tile(np.arange(l), (b, 1))
  if packed:
    cut = l // 3
    segment_ids[:, cut:] = 2
    segment_ids[:, l - 2:] = 0  # padding at the end
    positions[:, cut:] -= cut
    positions[:, l - 2:] = 0
  return {"inputs": tokens[:, :-1].astype(np.int32), "targets": tokens[:, 1:].astype(np.int32),
          "segment_ids": segment_ids, "positions": positions.astype(np.int32)}


def with_model(cfg: Config, **model_overrides) -> Config:
  return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **model_overrides))


def with_overrides(model_cfg: ModelConfig, overrides: dict) -> ModelConfig:
  """`model_cfg` with fields replaced; an option group given as a dict updates its fields."""
  changes = {}
  for name, value in overrides.items():
    if isinstance(value, dict):
      value = dataclasses.replace(getattr(model_cfg, name), **value)
    changes[name] = value
  return dataclasses.replace(model_cfg, **changes)


def kinds() -> list:
  """Every registered block and stack kind (zoo/registry.py), e.g. for a conformance suite."""
  return ([registry.block(k) for k in registry.block_kinds()]
          + [registry.stack(k) for k in registry.stack_kinds()])


def example_model(kind, *, decoding: bool = False, **base) -> ModelConfig:
  """The tiny model a registered kind declares as its example (plus `decode_example` when
  `decoding`), on top of `tiny_model(**base)`."""
  model = with_overrides(tiny_model(**base), kind.example)
  if decoding:
    model = with_overrides(model, getattr(kind, "decode_example", {}))
  return model
