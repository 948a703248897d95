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
ROW = ("| {model} | {size} | {slice} | {batch} ({per_chip:g}) | {gib_per_chip:.1f} | {fits_word} "
       "| {largest_batch} ({largest_per_chip:g}) |")


def load(module: str, arg: str):
  cd = importlib.import_module(module).get_config(arg)
  if module == "configs.ladder":
    cd.model.ladder.ladder_size = 3
  return config_lib.from_configdict(cd)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--sizes", default="small,medium")
  parser.add_argument("--topologies", default="v5e-8,v5p-8,v5p-128")
  parser.add_argument("--search", default="v5e-8,v5p-8",
                      help="slices on which to search the largest batch (many compiles)")
  parser.add_argument("--models", default="", help="only models whose label contains this")
  parser.add_argument("--out", default="benchmarks/fit_table.json")  # also read: resumes
  args = parser.parse_args()
  rows = []
  if os.path.exists(args.out):  # resumable: cells already in the file are kept
    with open(args.out) as f:
      rows = json.load(f)["rows"]
  done = {(r["model"], r["size"], r["slice"]) for r in rows}
  print("| model | size | slice | batch (per chip) | GiB per chip | fits | largest batch "
        "(per chip) |\n|---|---|---|---|---|---|---|", flush=True)
  for size in args.sizes.split(","):
    for label, (module, pattern) in MODELS.items():
      if args.models not in label:
        continue
      for name in args.topologies.split(","):
        if (label, size, name) not in done:
          rows.append(cell(label, module, pattern.format(size=size), size, name,
                           search=name in args.search.split(",")))
          with open(args.out, "w") as f:
            json.dump({"mode": "quick (XLA's first memory check)", "rows": rows}, f, indent=2)
        row = next(r for r in rows if (r["model"], r["size"], r["slice"]) == (label, size, name))
        print(_line(row), flush=True)


def _line(row: dict) -> str:
  largest = row["largest_batch"]
  text = ROW.format(**{**row, "largest_batch": largest or 0}, per_chip=row["batch"] / row["chips"],
                    largest_per_chip=(largest or 0) / row["chips"],
                    fits_word="yes" if row["fits"] else "no")
  return text.replace("| 0 (0) |", "| not searched |") if largest is None else text


def cell(label, module, arg, size, name, search) -> dict:
  start = time.perf_counter()
  topo = fit.topology(name)
  devs = fit.devices(topo)
  cfg = load(module, arg)
  cfg = fit.with_batch(cfg, fit.fitting_batch(cfg, len(devs)))
  need = fit.quick_estimate(cfg, topo, devs)
  largest, seen = fit.quick_max_batch(cfg, topo, devs) if search else (None, {})
  return dict(model=label, size=size, slice=name, chips=len(devs), batch=cfg.batch_size,
              gib_per_chip=need / fit.GiB, fits=need <= topo.chip.hbm_bytes - 0.25 * fit.GiB,
              largest_batch=largest, probes=len(seen), seconds=time.perf_counter() - start)

if __name__ == "__main__":
  main()
