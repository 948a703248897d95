"""GSPMD vs shard_map: what the MoE and MoD train steps' collectives move on a TPU slice.

  python benchmarks/partition_collectives.py [--topologies v5e:2x2,v5p:2x2x1] [--size xxsmall]

Compiles (from a CPU, with the `tpu` extra) the train step of Switch MoE (the preset's
experts, 8 at `tiny` and 64 at Table-1 sizes, over an expert axis of 4 chips) and MoD (capacity 12.5%, data parallel over 4 chips) four ways:
`partition=gspmd` (dispatch left to XLA's partitioner) and `partition=shard_map` (per shard,
slots moved to their experts by all-to-all), each with the Mosaic kernels
(`backend=pallas_tpu`) and with the XLA reference ops (`xla`). GSPMD cannot partition a
Mosaic kernel at all (the compile fails and says so), so its comparison is with the XLA ops.
Prints, per chip and per step (layers unrolled, so that no op hides in a loop body), the MiB
each kind of collective leaves, the Mosaic kernels in the program, and the all-gathers of
whole [B, L, D] activations. Writes benchmarks/partition_collectives.json.
"""

import argparse
import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

from configs import mod as mod_configs  # noqa: E402
from configs import moe as moe_configs  # noqa: E402
from zoo import config as config_lib  # noqa: E402
from zoo.training import fit  # noqa: E402

MODELS = {  # label: (preset loader, mesh, kernel backend field)
    "Switch MoE": (lambda size: moe_configs.get_config(f"switch_{size}"),
                   {"data": 1, "expert": 4}, "moe"),
    "MoD, capacity 12.5%": (lambda size: mod_configs.get_config(size), {"data": 4}, "mod"),
}
WAYS = (("gspmd", "pallas_tpu"), ("gspmd", "xla"), ("shard_map", "xla"),
        ("shard_map", "pallas_tpu"))  # (partition, kernel backend)


def build(label: str, size: str, partition: str, backend: str, batch_per_chip: int,
          chips: int):
  load, mesh, group = MODELS[label]
  cd = load(size)
  cd.model.scan_layers = False  # one op per layer in the HLO text: collectives per step
  cd.model[group].backend = backend
  cd.mesh.update(mesh)
  cd.partition = partition
  cd.batch_size = batch_per_chip * chips
  return config_lib.from_configdict(cd)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--topologies", default="v5e:2x2,v5p:2x2x1")
  parser.add_argument("--size", default="xxsmall")
  parser.add_argument("--batch_per_chip", type=int, default=8)
  args = parser.parse_args()
  rows = []
  for name in args.topologies.split(","):
    topo = fit.topology(name)
    devs = fit.devices(topo)
    for label in MODELS:
      for partition, backend in WAYS:
        cfg = build(label, args.size, partition, backend, args.batch_per_chip, len(devs))
        start = time.perf_counter()
        try:
          report = fit.check(cfg, topo, devs)
        except NotImplementedError as e:  # GSPMD meets a Mosaic kernel
          line = str(e).strip().splitlines()[0]
          rows.append({"topology": name, "model": label, "size": args.size,
                       "partition": partition, "backend": backend, "error": line})
          print(f"{name} | {label} | {partition}, {backend}: does not compile: {line}",
                flush=True)
          continue
        row = {"topology": name, "model": label, "size": args.size, "partition": partition,
               "backend": backend,
               "batch": cfg.batch_size, "compile_s": round(time.perf_counter() - start, 1),
               "fits": report.fits, "error": report.error,
               "collective_mib": {k: round(v / 2**20, 3)
                                  for k, v in report.collective_bytes.items()},
               "total_collective_mib": round(sum(report.collective_bytes.values()) / 2**20, 3),
               "mosaic_kernels": report.mosaic_kernels,
               "activation_gathers": report.activation_gathers,
               "gib_per_chip": round(report.total / fit.GiB, 3)}
        rows.append(row)
        print(f"{name} | {label} | {partition}, {backend}: {fit.describe_collectives(report)}; "
              f"total {row['total_collective_mib']} MiB; {row['gib_per_chip']} GiB per chip "
              f"(compiled in {row['compile_s']} s)", flush=True)
  print("\n| slice | model | partition, kernels | collectives per chip per step (MiB) "
        "| total MiB | Mosaic kernels | [B, L, D] all-gathers | GiB per chip |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    if "collective_mib" not in r:
      print(f"| {r['topology']} | {r['model']} | {r['partition']}, {r['backend']} | "
            f"does not compile: {r['error']} | | | | |")
      continue
    moved = ", ".join(f"{k} {v:g}" for k, v in r["collective_mib"].items() if v) or "none"
    print(f"| {r['topology']} | {r['model']} | {r['partition']}, {r['backend']} | {moved} | "
          f"{r['total_collective_mib']:g} | {r['mosaic_kernels']} | {r['activation_gathers']} "
          f"| {r['gib_per_chip']:g} |")
  out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "partition_collectives.json")
  with open(out, "w") as f:
    json.dump({"size": args.size, "batch_per_chip": args.batch_per_chip, "rows": rows}, f,
              indent=1)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
