"""Metric sinks (metrics.jsonl and TensorBoard event files) and device peak FLOP/s for MFU."""

from __future__ import annotations

import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

# Dense bfloat16 peak FLOP/s per chip (vendor figures), matched as substrings of device_kind.
PEAK_FLOPS = (
    ("TPU v6", 918e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 197e12),  # v5e / "TPU v5 lite"
    ("TPU v4", 275e12),
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
)


def measured_matmul_flops(n: int = 1024, repeats: int = 5) -> float:
  """Best float32 matmul FLOP/s of this device: the CPU's stand-in for a vendor peak."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


def peak_flops_per_device(override: float = 0.0) -> float:
  if override:
    return override
  kind = jax.devices()[0].device_kind
  for name, flops in PEAK_FLOPS:
    if name in kind:
      return flops
  return measured_matmul_flops()


class MetricWriter:
  """Writes one JSON object per step to `metrics.jsonl` and the same values to TensorBoard.

  Scalars become TensorBoard scalars; a vector statistic (an MoE layer's per-expert load)
  is a list in the JSON record and a TensorBoard histogram of its entries.

  Only process 0 writes. Each step appears once: records for the same step are merged
  before they are written (`flush` at the end of a step).
  """

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self.pending: dict[int, dict] = {}
    if self.enabled:
      from tensorboardX import SummaryWriter  # no TensorFlow needed
      self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def add(self, step: int, values: dict) -> None:
    self.pending.setdefault(step, {}).update(
        {k: json_value(v) for k, v in values.items()})

  def flush(self) -> None:
    if not self.enabled:
      self.pending.clear()
      return
    for step in sorted(self.pending):
      record = {"step": step, **self.pending[step]}
      self.jsonl.write(json.dumps(record) + "\n")
      for name, value in record.items():
        if name == "step" or value is None:
          continue
        if isinstance(value, list):
          self.tb.add_histogram(name, np.asarray(value), step)
        else:
          self.tb.add_scalar(name, value, step)
    self.pending.clear()
    self.jsonl.flush()
    self.tb.flush()

  def close(self) -> None:
    self.flush()
    if self.enabled:
      self.jsonl.close()
      self.tb.close()


def json_value(value) -> float | list[float]:
  """A metric as JSON: a float, or a list of floats for a vector statistic."""
  value = np.asarray(value)  # NaN stays NaN: a diverged run must show it
  return float(value) if value.ndim == 0 else value.astype(float).tolist()


def add_images(workdir: str, step: int, paths: list[str]) -> None:
  """The PNG figures at `paths` as TensorBoard images of `step` (tag: the file's name), in
  an events file of their own beside the training run's."""
  if not paths:
    return
  from matplotlib import image as mpimg  # only where figures are drawn
  from tensorboardX import SummaryWriter  # no TensorFlow needed
  with SummaryWriter(os.path.join(workdir, "tensorboard"), filename_suffix=".figures") as tb:
    for path in paths:
      pixels = mpimg.imread(path)[..., :3]  # RGB floats in [0, 1]
      tb.add_image(os.path.splitext(os.path.basename(path))[0], pixels, step,
                   dataformats="HWC")
