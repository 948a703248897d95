"""The compile-and-fit table of BENCHMARKS.md: Table-1 models on TPU slices, from a CPU.

  python benchmarks/fit_table.py [--sizes small,medium] [--topologies v5e-8,v5p-8,v5p-128]

For each config and slice: the per-chip memory of the train step at the config's batch
(rounded up to a multiple the slice splits), whether it fits, and the largest batch that
fits. Uses fit.py's quick mode (XLA's first memory check, seconds per probe; an estimate a
little above a full compile's figure); `fit_check.py` gives the full compile for one cell.
"""

import argparse
import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

from zoo.training import fit  # noqa: E402

os.environ["LIBTPU_INIT_ARGS"] = (os.environ.get("LIBTPU_INIT_ARGS", "") + " "
                                  + fit.QUICK_LIBTPU_ARGS).strip()

import importlib  # noqa: E402

from zoo import config as config_lib  # noqa: E402

MODELS = {  # label: (config module, arg pattern)
    "dense": ("configs.dense", "{size}"),
    "Switch MoE, 64 experts": ("configs.moe", "switch_{size}"),
    "MoD": ("configs.mod", "{size}"),
    "fine-grained MoE, G = 8": ("configs.moe", "fine_grained_{size}"),
    "Ladder x3": ("configs.ladder", "{size}"),
}


def load(module: str, arg: str):
  cd = importlib.import_module(module).get_config(arg)
  if module == "configs.ladder":
    cd.model.ladder.ladder_size = 3
  return config_lib.from_configdict(cd)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--sizes", default="small,medium")
  parser.add_argument("--topologies", default="v5e-8,v5p-8,v5p-128")
  parser.add_argument("--out", default="benchmarks/fit_table.json")
  args = parser.parse_args()
  rows = []
  print("| model | size | slice | batch (per chip) | GiB per chip | fits | largest batch "
        "(per chip) |\n|---|---|---|---|---|---|---|", flush=True)
  for size in args.sizes.split(","):
    for label, (module, pattern) in MODELS.items():
      for name in args.topologies.split(","):
        start = time.perf_counter()
        topo = fit.topology(name)
        devs = fit.devices(topo)
        cfg = load(module, pattern.format(size=size))
        cfg = fit.with_batch(cfg, fit.fitting_batch(cfg, len(devs)))
        need = fit.quick_estimate(cfg, topo, devs)
        largest, _ = fit.quick_max_batch(cfg, topo, devs)
        row = dict(model=label, size=size, slice=name, chips=len(devs),
                   batch=cfg.batch_size, gib_per_chip=need / fit.GiB,
                   fits=need <= topo.chip.hbm_bytes - 0.25 * fit.GiB,
                   largest_batch=largest, seconds=time.perf_counter() - start)
        rows.append(row)
        print(f"| {label} | {size} | {name} | {row['batch']} ({row['batch'] / len(devs):g}) "
              f"| {row['gib_per_chip']:.1f} | {'yes' if row['fits'] else 'no'} | "
              f"{largest} ({largest / len(devs):g}) |", flush=True)
        with open(args.out, "w") as f:
          json.dump({"mode": "quick (XLA's first memory check)", "rows": rows}, f, indent=2)


if __name__ == "__main__":
  main()
