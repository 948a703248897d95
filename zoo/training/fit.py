"""Compile-and-fit: does a config's train step fit a TPU slice? Answered from a CPU.

The real train step (the config's model, mesh, remat, batch and optimizer) is compiled ahead
of time for a named TPU topology with libtpu (the `tpu` extra; no TPU needed) through
`jax.experimental.topologies`. The compiled program's memory analysis gives the bytes each
chip holds: its shards of the parameters and optimizer state (from the shardings), the
batch, and XLA's temporaries (the activations kept for the backward pass and the scratch of
every op: XLA reports them as one number). A program larger than a chip's HBM does not
compile ("RESOURCE_EXHAUSTED ... exceeds available HBM"); that line is the answer then.

Kernels: the compile runs on a CPU process, so a config whose kernel backend is "" (by
platform) gets the `xla` reference ops; set the backend to `pallas_tpu` to compile the
Mosaic kernels. FLOPs: XLA's cost analysis counts a scanned loop's body once, so with
`model.scan_layers` the compiled count holds one layer of the scan.

Slice names follow Cloud TPU: v5e-N and v6e-N count chips, v4-N and v5p-N count TensorCores
(two per chip: v5p-8 is 4 chips). "v5p:2x2x1"-style topology names are accepted as well.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from zoo import accounting, sharding
from zoo import config as config_lib
from zoo.config import Config, ConfigError
from zoo.data import KEYS
from zoo.training import collectives, step as step_lib

GiB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
  hbm_bytes: int
  dims: int  # of the chip grid: 2 (v5e, v6e) or 3 (v4, v5p)
  cores: int  # TensorCores per chip counted by the slice name


CHIPS = {"v5e": Chip(16 * GiB, 2, 1), "v6e": Chip(32 * GiB, 2, 1),
         "v5p": Chip(95 * GiB, 3, 2), "v4": Chip(32 * GiB, 3, 2)}


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str  # as the user wrote it
  kind: str  # key of CHIPS
  grid: str  # libtpu's topology name, e.g. "v5p:2x2x1"

  @property
  def chip(self) -> Chip:
    return CHIPS[self.kind]


def topology(name: str) -> Topology:
  """"v5p-8" / "v5e-256" / "v5p:2x2x1" -> Topology; ConfigError (one line) otherwise."""
  allowed = f"a slice like v5e-8, v5p-128, v6e-256 or a grid like v5p:2x2x1 ({', '.join(CHIPS)})"
  match = re.fullmatch(r"(v\d+[a-z]?)([-:])([\dx]+)", name)
  if not match or match.group(1) not in CHIPS:
    raise ConfigError("topology", name, allowed)
  kind, sep, size = match.groups()
  chip = CHIPS[kind]
  if sep == ":":
    return Topology(name, kind, name)
  cores = int(size) if size.isdigit() else 0
  chips = cores // chip.cores
  if cores <= 0 or cores % chip.cores or chips & (chips - 1):
    raise ConfigError("topology", name, f"{allowed}; a power of two")
  return Topology(name, kind, f"{kind}:{_grid(chips, chip.dims)}")


def _grid(chips: int, dims: int) -> str:
  """4 chips, 3 dims -> "2x2x1"; 8 chips, 2 dims -> "2x4": as square as possible."""
  sides = [1] * dims
  for i in range(int(math.log2(chips))):
    sides[i % dims] *= 2
  if dims == 3:  # Cloud TPU grows v5p/v4 slices as 2x2x1, 2x2x2, 2x2x4, 2x4x4, 4x4x4, ...
    sides = sorted(sides[:2]) + [sides[2]] if chips < 8 else sorted(sides)
  else:
    sides = sorted(sides)
  return "x".join(map(str, sides))


def devices(topo: Topology):
  from jax.experimental import topologies
  return topologies.get_topology_desc(platform="tpu", topology_name=topo.grid).devices


@dataclasses.dataclass
class Report:
  """One compile of the train step; bytes are per chip."""

  topology: Topology
  chips: int
  batch_size: int
  compile_s: float
  fits: bool
  error: str = ""  # the compiler's out-of-memory line when it does not fit
  params: int = 0
  optimizer: int = 0
  other_state: int = 0  # frozen weights, buffers, step, RNG
  batch: int = 0
  temporaries: int = 0
  code: int = 0
  total: int = 0
  compiled_flops: float = 0.0  # per chip, XLA's count
  analytic_flops: float = 0.0  # per chip, zoo.accounting
  scanned: bool = False  # model.scan_layers: XLA's FLOP count holds one layer of the scan
  collective_bytes: dict = dataclasses.field(default_factory=dict)  # per kind, per chip
  mosaic_kernels: int = 0  # Mosaic custom calls in the compiled program
  activation_gathers: int = 0  # all-gathers of whole [B, L, D] (or [B L, D]) activations

  @property
  def batch_per_chip(self) -> float:
    return self.batch_size / self.chips


def _shard_bytes(tree) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs with shardings (the largest)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    total += int(np.prod(shape)) * jnp.dtype(leaf.dtype).itemsize
  return total


def with_batch(cfg: Config, batch_size: int) -> Config:
  return dataclasses.replace(cfg, batch_size=batch_size)


def check(cfg: Config, topo: Topology, devs=None) -> Report:
  """Compiles `cfg`'s train step for `topo`; the config must validate for its chip count."""
  devs = devices(topo) if devs is None else devs
  config_lib.validate(cfg, len(devs))
  mesh = sharding.make_mesh(cfg.mesh, devices=devs)
  trainer, state, shardings = step_lib.create_abstract(cfg, mesh)
  train_fn, _ = step_lib.jit_steps(trainer, shardings, mesh)
  spec = jax.ShapeDtypeStruct((cfg.batch_size, cfg.seq_len), jnp.int32,
                              sharding=sharding.batch_sharding(mesh))
  batch = {key: spec for key in KEYS}
  report = Report(topo, len(devs), cfg.batch_size, 0.0, False,
                  scanned=cfg.model.scan_layers)
  report.params = _shard_bytes(state.params)
  report.optimizer = _shard_bytes(state.opt_state)
  report.other_state = _shard_bytes(state) - report.params - report.optimizer
  report.batch = _shard_bytes(batch)
  start = time.perf_counter()
  try:
    with sharding.activate(mesh):
      compiled = train_fn.lower(state, batch).compile()
  except Exception as e:  # noqa: BLE001  (XLA raises JaxRuntimeError; match its text)
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    report.compile_s = time.perf_counter() - start
    report.error = _first_line(str(e))
    return report
  report.compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  report.temporaries = memory.temp_size_in_bytes
  report.code = memory.generated_code_size_in_bytes
  report.total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                  - memory.alias_size_in_bytes + memory.temp_size_in_bytes + report.code)
  report.fits = report.total <= topo.chip.hbm_bytes
  if not report.fits:
    report.error = (f"needs {report.total / GiB:.2f} GiB per chip, more than the "
                    f"{topo.chip.hbm_bytes / GiB:.0f} GiB of HBM")
  report.compiled_flops = float((compiled.cost_analysis() or {}).get("flops", 0.0))
  text = compiled.as_text()
  report.collective_bytes = collectives.bytes_by_kind(text)
  report.mosaic_kernels = collectives.custom_calls(text)["tpu_custom_call"]
  b, l, d = cfg.batch_size, cfg.seq_len, cfg.model.d_model
  report.activation_gathers = len(collectives.gathers_of(text, [(b, l, d), (b * l, d)]))
  report.analytic_flops = accounting.count_flops(cfg).train_per_step / len(devs)
  return report


def _first_line(text: str) -> str:
  for line in text.splitlines():
    if "RESOURCE_EXHAUSTED" in line:
      return line.strip()[:300]
  return text.strip().splitlines()[0][:300]


def batch_step(cfg: Config, chips: int) -> int:
  """The smallest batch increment the config's mesh and accumulation can split."""
  sizes = config_lib.validate_mesh(cfg.mesh, chips)
  return sizes["data"] * sizes["fsdp"] * sizes["expert"] * cfg.grad_accum_steps


def fitting_batch(cfg: Config, chips: int) -> int:
  """The config's batch, rounded up to a multiple the slice can split."""
  step = batch_step(cfg, chips)
  return -(-cfg.batch_size // step) * step


def find_max_batch(cfg: Config, topo: Topology, *, echo=print,
                   limit: int = 1 << 16) -> Report | None:
  """The full report of the largest batch that fits (a multiple of `batch_step`), or None.

  Brackets the answer around the config's batch, then bisects. A batch that does not fit
  fails early in the compile, so the probes that cost are the ones that fit.
  """
  devs = devices(topo)
  unit = batch_step(cfg, len(devs))
  reports: dict[int, Report] = {}

  def fits(n: int) -> bool:
    if n not in reports:
      reports[n] = check(with_batch(cfg, n * unit), topo, devs)
      echo(f"  batch {n * unit}: {'fits' if reports[n].fits else 'does not fit'} "
           f"({reports[n].compile_s:.0f} s)")
    return reports[n].fits

  best = _search(fits, max(fitting_batch(cfg, len(devs)) // unit, 1), limit // unit)
  return reports[best] if best else None


def describe(report: Report) -> str:
  """The per-chip memory and FLOPs lines fit_check.py prints."""
  topo, g = report.topology, lambda b: f"{b / GiB:8.3f} GiB"  # noqa: E731
  head = (f"{topo.name} ({topo.grid}, {report.chips} chips): batch {report.batch_size} "
          f"({report.batch_per_chip:g} per chip), compiled in {report.compile_s:.1f} s")
  if not report.total:
    return head  # the caller prints the compiler's line
  ratio = report.compiled_flops / report.analytic_flops if report.analytic_flops else 0.0
  flops_note = f"ratio {ratio:.3f}"
  if report.scanned:  # XLA's cost analysis counts a while loop's body once
    flops_note += "; layers are scanned and XLA counts the scanned body once"
  return "\n".join([
      head, "per chip:",
      f"  parameters          {g(report.params)}",
      f"  optimizer state     {g(report.optimizer)}",
      f"  other state         {g(report.other_state)}",
      f"  batch               {g(report.batch)}",
      f"  activations + temps {g(report.temporaries)}  (XLA temporaries)",
      f"  program code        {g(report.code)}",
      f"  total               {g(report.total)}  of {topo.chip.hbm_bytes / GiB:.0f} GiB HBM "
      f"({report.total / topo.chip.hbm_bytes:.0%})",
      f"  FLOPs per step      {report.compiled_flops:.4g} compiled vs {report.analytic_flops:.4g}"
      f" analytic ({flops_note})",
      "  collectives         " + describe_collectives(report),
  ])


def describe_collectives(report: Report) -> str:
  """MiB each kind of collective leaves on a chip, the Mosaic kernels, whole-activation
  gathers (ops in a scanned loop body count once)."""
  moved = ", ".join(f"{k} {v / 2**20:.2f}" for k, v in report.collective_bytes.items() if v)
  return (f"MiB {moved or 'none'}; {report.mosaic_kernels} Mosaic kernels; "
          f"{report.activation_gathers} all-gathers of [B, L, D] activations")


# Quick mode: with HBM capped at 1 MiB every compile stops at XLA's first memory check, whose
# message states the temporaries the program needs. Seconds instead of minutes per probe,
# but an estimate: the later passes of a full compile shrink the temporaries (dense small on
# v5e-8, 2 per chip: 4.67 GiB estimated, 3.96 GiB compiled).
QUICK_LIBTPU_ARGS = "--xla_tpu_max_hbm_size_mib=1"
_UNITS = {"B": 1, "K": 1024, "M": 1024**2, "G": GiB, "T": 1024 * GiB}


def quick_estimate(cfg: Config, topo: Topology, devs=None) -> int:
  """Estimated bytes per chip (state, batch, temporaries); needs QUICK_LIBTPU_ARGS set in
  LIBTPU_INIT_ARGS before libtpu loads."""
  report = check(cfg, topo, devs)
  match = re.search(r"temporaries \(([\d.]+)([BKMGT])\)", report.error)
  if report.fits or not match:
    raise RuntimeError(f"quick mode needs LIBTPU_INIT_ARGS={QUICK_LIBTPU_ARGS} (got: "
                       f"{report.error or 'a full compile'})")
  temporaries = float(match.group(1)) * _UNITS[match.group(2)]
  return int(report.params + report.optimizer + report.other_state + report.batch + temporaries)


def quick_max_batch(cfg: Config, topo: Topology, devs=None, *, headroom: float = 0.25 * GiB
                    ) -> tuple[int, dict[int, int]]:
  """(largest batch whose quick estimate fits HBM minus `headroom`, {batch: bytes} probed).

  Memory grows linearly with the batch: two probes give the line, and probes around its
  crossing with the HBM size find the boundary."""
  devs = devices(topo) if devs is None else devs
  unit = batch_step(cfg, len(devs))
  budget = topo.chip.hbm_bytes - headroom
  seen: dict[int, int] = {}

  def size(n: int) -> int:
    if n * unit not in seen:
      seen[n * unit] = quick_estimate(with_batch(cfg, n * unit), topo, devs)
    return seen[n * unit]

  slope = max(size(2) - size(1), 1)
  guess = max(int((budget - size(1)) // slope) + 1, 1)
  fits = lambda n: size(n) <= budget  # noqa: E731
  return _search(fits, guess, (1 << 16) // unit) * unit, seen


def _search(fits, guess: int, most: int) -> int:
  """The largest n in 1..most with fits(n) (fits is monotone), 0 if none; probes near guess."""
  lo, hi = _bracket(fits, guess, most)
  while hi - lo > 1:
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if fits(mid) else (lo, mid)
  return lo


def _bracket(fits, guess: int, most: int) -> tuple[int, int]:
  """(lo, hi) with fits(lo) (or lo = 0) and not fits(hi) (or hi = most + 1), near `guess`."""
  step = max(guess // 8, 1)
  if fits(guess):
    lo = guess
    while lo + step <= most and fits(lo + step):
      lo, step = lo + step, step * 2
    return lo, min(lo + step, most + 1)
  hi = guess
  while hi - step >= 1 and not fits(hi - step):
    hi, step = hi - step, step * 2
  return max(hi - step, 0), hi
