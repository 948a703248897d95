"""How long an async checkpoint save blocks the train loop, against the step time.

  PYTHONPATH=. python benchmarks/checkpoint_cost.py [--sizes tiny,xxsmall] [--seq_len 128 --batch 4]

Builds each dense preset (Table-1 sizes lowered to a short context and small batch so they
step on a CPU; parameter and optimizer-state bytes are the preset's), times train steps,
then times `Checkpointer.save` (the blocking part: device-to-host copy and dispatch) and
the whole save until committed. Prints a table last and writes JSON.
"""

import argparse
import dataclasses
import json
import os
import tempfile
import time

import jax
import numpy as np

from configs import dense
from zoo import checkpoint, sharding
from zoo import config as config_lib
from zoo.training import step as step_lib
from zoo.testing import random_batch


def measure(size: str, seq_len: int, batch: int, steps: int) -> dict:
  cfg = config_lib.from_configdict(dense.get_config(size))
  cfg = dataclasses.replace(cfg, seq_len=seq_len, batch_size=batch, mesh=config_lib.MeshConfig(data=1),
                            model=dataclasses.replace(cfg.model, compute_dtype="float32",
                                                      dropout=0.0))
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  trainer, state, shardings = step_lib.create(cfg, mesh)
  train, _ = step_lib.jit_steps(trainer, shardings, mesh)
  batch_arrays = sharding.global_batch(random_batch(cfg), mesh)
  with sharding.activate(mesh):
    state, _ = train(state, batch_arrays)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(steps):
      state, _ = train(state, batch_arrays)
    jax.block_until_ready(state)
    step_s = (time.perf_counter() - start) / steps
  nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
  with tempfile.TemporaryDirectory() as directory:
    ckpt = checkpoint.Checkpointer(os.path.join(directory, "ckpt"), keep=2)
    meta = checkpoint.metadata(cfg, "0" * 64)
    blocks, totals = [], []
    for i in range(3):
      start = time.perf_counter()
      ckpt.save(i + 1, state, None, meta)
      blocks.append(ckpt.last_block_s)
      ckpt.wait()
      totals.append(time.perf_counter() - start)
    ckpt.close()
  return {"size": size, "state_mb": nbytes / 2**20, "step_s": step_s,
          "save_block_s": float(np.median(blocks)), "save_total_s": float(np.median(totals)),
          "block_over_step": float(np.median(blocks)) / step_s}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--sizes", default="tiny,xxsmall")
  parser.add_argument("--seq_len", type=int, default=128)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--out", default="benchmarks/checkpoint_cost.json")
  args = parser.parse_args()
  rows = [measure(s, args.seq_len, args.batch, args.steps) for s in args.sizes.split(",")]
  with open(args.out, "w") as f:
    json.dump({"device": jax.devices()[0].device_kind, "rows": rows}, f, indent=2)
  print(f"\ndevice: {jax.devices()[0].device_kind}; seq_len {args.seq_len}, batch {args.batch}")
  print(f"{'size':10} {'state MiB':>10} {'step s':>8} {'save blocks s':>14} "
        f"{'save total s':>13} {'block/step':>11}")
  for r in rows:
    print(f"{r['size']:10} {r['state_mb']:10.1f} {r['step_s']:8.3f} {r['save_block_s']:14.3f} "
          f"{r['save_total_s']:13.3f} {r['block_over_step']:11.2f}")


if __name__ == "__main__":
  main()
