"""A study as data: which variants, sizes, compute budgets and seeds, and the shared settings;
and its expansion into runs whose steps spend each budget by the zoo's own FLOP count.

A variant is a preset (`configs/<family>.py:<arg>`) plus overrides; a size is a set of
overrides applied to every variant (width, depth, ...). Each run is variant x size x budget
x seed, with `steps = round(budget / count_flops(cfg).train_per_step)`, so every run of a
budget spends it to within one step (`isoflop_spread` reports how close).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable, Mapping, Sequence

import ml_collections

from zoo import accounting
from zoo import config as config_lib

SPEC_PREFIX = "configs/studies/"


@dataclasses.dataclass(frozen=True)
class Variant:
  name: str
  preset: str  # "configs/<family>.py:<arg>"; "{size}" in it is replaced by the size's name
  overrides: Mapping = dataclasses.field(default_factory=dict)  # dotted field -> value
  tags: Mapping = dataclasses.field(default_factory=dict)  # extra result columns, e.g. G
  # Runs of this variant spend budget x budget_scale.
  budget_scale: float = 1.0
  # Or: train on the tokens that variant `tokens_of` trains on at the same size, budget and
  # seed (its steps), whatever that costs: more compute at fixed parameters and data, as a
  # Ladder compared with its dense model (Ju et al. 2021). Not an isoFLOP run.
  tokens_of: str = ""
  sizes: tuple[str, ...] | None = None  # only these sizes (None: all of the study's)


@dataclasses.dataclass(frozen=True)
class Size:
  name: str
  overrides: Mapping = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class StudySpec:
  name: str
  claim: str  # the seed's claim, printed in the verdict table
  variants: Sequence[Variant]
  sizes: Sequence[Size]
  budgets: Sequence[float]  # training FLOPs per run
  seeds: Sequence[int] = (0,)
  shared: Mapping = dataclasses.field(default_factory=dict)  # overrides for every run
  warmup_fraction: float = 0.05  # of each run's steps (the schedule follows the run length)
  min_steps: int = 10  # fewer steps than this drops the run (its size is too big for the budget)
  verdict: Callable | None = None  # results DataFrame -> list of verdict rows


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  variant: Variant
  size: Size
  budget: float
  seed: int
  cfg: config_lib.Config

  @property
  def flops(self) -> float:
    return self.cfg.steps * accounting.count_flops(self.cfg).train_per_step

  @property
  def target(self) -> float:
    """The FLOPs the run is meant to spend (a `tokens_of` run: what its steps cost)."""
    return self.flops if self.variant.tokens_of else self.budget * self.variant.budget_scale


def load_preset(preset: str) -> ml_collections.ConfigDict:
  """`configs/dense.py:tiny` -> configs.dense.get_config("tiny")."""
  path, _, arg = preset.partition(":")
  module = path.removesuffix(".py").replace("/", ".")
  return importlib.import_module(module).get_config(*([arg] if arg else []))


def load_spec(spec: str) -> StudySpec:
  """`configs/studies/chatelain.py:cpu` -> configs.studies.chatelain.get_spec("cpu")."""
  path, _, arg = spec.partition(":")
  module = path.removesuffix(".py").replace("/", ".")
  return importlib.import_module(module).get_spec(*([arg] if arg else []))


def _apply(c: ml_collections.ConfigDict, overrides: Mapping) -> None:
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = c
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise config_lib.ConfigError(f"study override {key}", value, "an existing config field")
    node[leaf] = value


def _slug(x: float) -> str:
  return f"{x:.1e}".replace("e+", "e").replace(".0e", "e")


def run_name(variant: Variant, size: Size, budget: float, seed: int) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{variant.name}-{size.name}-C{_slug(budget)}-s{seed}")


def build_config(spec: StudySpec, variant: Variant, size: Size, budget: float, seed: int,
                 num_devices: int = 1) -> config_lib.Config | None:
  """The run's config, with its steps set by the budget; None when the budget buys fewer than
  `spec.min_steps` steps."""
  c = load_preset(variant.preset.format(size=size.name))
  for overrides in (spec.shared, size.overrides, variant.overrides):
    _apply(c, overrides)
  c.seed = seed
  if variant.tokens_of:
    others = [v for v in spec.variants if v.name == variant.tokens_of and not v.tokens_of]
    if not others:
      raise ValueError(f"variant {variant.name!r}: tokens_of={variant.tokens_of!r} is not a "
                       f"variant of study {spec.name!r} that sets its own steps")
    other = build_config(spec, others[0], size, budget, seed, num_devices)
    if other is None:
      return None
    steps = other.steps
  else:
    per_step = accounting.count_flops(config_lib.from_configdict(c)).train_per_step
    steps = int(round(budget * variant.budget_scale / per_step))
  if steps < spec.min_steps:
    return None
  c.steps = steps
  c.optimizer.warmup_steps = max(1, int(round(spec.warmup_fraction * steps)))
  c.eval_every = steps  # the result is the final validation loss
  c.checkpoint_every = max(1, min(c.checkpoint_every, steps))
  c.log_every = max(1, min(c.log_every, steps))
  cfg = config_lib.from_configdict(c)
  config_lib.validate(cfg, num_devices)
  return cfg


def expand(spec: StudySpec, num_devices: int = 1) -> tuple[list[Run], list[str]]:
  """All runs in a fixed order (shards index into it), and the skipped combinations."""
  runs, skipped = [], []
  for budget in spec.budgets:
    for variant in spec.variants:
      for size in spec.sizes:
        if variant.sizes is not None and size.name not in variant.sizes:
          continue
        for seed in spec.seeds:
          name = run_name(variant, size, budget, seed)
          cfg = build_config(spec, variant, size, budget, seed, num_devices)
          if cfg is None:
            skipped.append(f"{name}: fewer than {spec.min_steps} steps")
          else:
            runs.append(Run(name, variant, size, budget, seed, cfg))
  return runs, skipped


def isoflop_spread(runs: Sequence[Run]) -> dict[float, float]:
  """Per budget, (max - min) / target of the FLOPs the runs will spend over their target
  (budget x the variant's budget_scale)."""
  out = {}
  for budget in sorted({r.budget for r in runs}):
    spent = [r.flops / r.target for r in runs if r.budget == budget]
    out[budget] = max(spent) - min(spent)
  return out


def shard(runs: Sequence[Run], spec: str) -> list[Run]:
  """`i/n` (0 <= i < n): every n-th run from the i-th, so shards are disjoint and cover all."""
  m = re.fullmatch(r"(\d+)/(\d+)", spec or "0/1")
  if not m or not int(m.group(1)) < int(m.group(2)):
    raise ValueError(f"--shard={spec!r} is invalid: allowed i/n with 0 <= i < n, e.g. 3/8")
  i, n = int(m.group(1)), int(m.group(2))
  return list(runs[i::n])
