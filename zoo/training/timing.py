"""Where a run's wall time goes: the share spent outside the train step, and profiler traces.

`Clock` splits the wall time between two log steps into data (the next batch: reading,
packing, the transfer to the devices), evaluation, checkpoint saves (the part that blocks;
orbax writes the rest in the background), and the rest, which is the train step: its
dispatch and the wait for its results. With asynchronous dispatch the host reads the next
batch while the devices still run the previous step, so the data share is what the host
spent, an upper bound on what the data costs the devices.

`Profile` records a `jax.profiler` trace of the steps `profile_start` ..
`profile_start + profile_steps - 1` into WORKDIR/profile/process_<i> (TensorBoard's profile
plugin or Perfetto read it).
"""

from __future__ import annotations

import collections
import contextlib
import os
import time

import jax

PARTS = ("data", "eval", "checkpoint")


class Clock:
  """Wall time since the last `read`, and the part of it spent in each of PARTS."""

  def __init__(self):
    self.reset(0)

  def reset(self, step: int) -> None:
    self.start, self.step = time.perf_counter(), step
    self.spent: dict[str, float] = collections.defaultdict(float)

  @contextlib.contextmanager
  def outside(self, part: str):
    start = time.perf_counter()
    try:
      yield
    finally:
      self.spent[part] += time.perf_counter() - start

  def read(self, step: int) -> dict:
    """Steps done, seconds of training (all but eval and checkpoints: tokens/s and MFU count
    the data time, as a user waits for it) and each part's share of the wall time."""
    wall = max(time.perf_counter() - self.start, 1e-9)
    shares = {f"{part}_share": self.spent[part] / wall for part in PARTS}
    shares["outside_step_share"] = sum(shares.values())
    out = {"steps": step - self.step, "shares": shares,
           "train_s": wall - self.spent["eval"] - self.spent["checkpoint"]}
    self.reset(step)
    return out


class Profile:
  """Starts and stops a jax.profiler trace around the configured step range."""

  def __init__(self, cfg, workdir: str, first_step: int):
    self.first = cfg.profile_start
    self.last = cfg.profile_start + cfg.profile_steps - 1
    self.enabled = cfg.profile_steps > 0 and self.first > first_step
    self.directory = os.path.join(workdir, "profile", f"process_{jax.process_index()}")
    self.running = False

  def before(self, step: int) -> None:
    if self.enabled and step == self.first:
      jax.profiler.start_trace(self.directory)
      self.running = True

  def after(self, step: int, state) -> None:
    if self.running and step == self.last:
      jax.block_until_ready(state)  # the trace holds the whole of the last step
      self.close()

  def close(self) -> None:
    if self.running:
      jax.profiler.stop_trace()
      self.running = False
