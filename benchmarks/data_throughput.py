"""Does the data pipeline keep up with a TPU host? Tokens per CPU-second, old and new,
against what one TPU host consumes training Table-1 models at 50% MFU.

  JAX_PLATFORMS=cpu python benchmarks/data_throughput.py [--batches 200]

Pipelines read the offline stdlib corpus (vocabulary 8,192) in Table-1 batches of
80 x 1024 on one JAX process, with data.num_workers=0. "Tokens" are target tokens (padding
excluded); the rate is per CPU-second of this process (time.process_time, every thread
counted), i.e. per core, so it holds on a loaded machine. "old" is zoo/data/pipeline.py as
it was before the tokenized store (commit OLD_COMMIT, read with git): SentencePiece on every
document every epoch, then grain first-fit packing in Python. "new" is the store's
globally shuffled windows; "new, rows only" times `Windows.rows` alone (numpy assembly of
a batch), the rest of "new" is grain (index shuffle, batching, the reader thread).

Demand: one host of 4 chips at 50% of the bf16 peak, divided by zoo.accounting's training
FLOPs per token of configs/dense.py:xxsmall and :small. Writes data_throughput.json.
"""

import json
import os
import subprocess
import sys
import time
import types

from absl import app, flags
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import dense  # noqa: E402
from zoo import accounting  # noqa: E402
from zoo import config as config_lib  # noqa: E402
from zoo import data  # noqa: E402

OLD_COMMIT = "70aefaa"
HOSTS = {"TPU v5p host (4 chips)": 4 * 459e12, "TPU v5e host (4 chips)": 4 * 197e12}
MFU = 0.5
SEQ, BATCH = 1024, 80

_BATCHES = flags.DEFINE_integer("batches", 100, "Batches timed per pipeline (after warm-up).")
_OUT = flags.DEFINE_string("out", os.path.join(ROOT, "benchmarks", "data_throughput.json"),
                           "Where the JSON goes.")


def old_pipeline() -> types.ModuleType:
  source = subprocess.run(["git", "show", f"{OLD_COMMIT}:zoo/data/pipeline.py"], cwd=ROOT,
                          check=True, capture_output=True, text=True).stdout
  module = types.ModuleType("old_pipeline")
  exec(compile(source, "old_pipeline.py", "exec"), module.__dict__)  # noqa: S102
  return module


def cpu_rate(next_batch, batches: int) -> float:
  """Target tokens per CPU-second over `batches` batches, after two warm-up batches."""
  for _ in range(2):
    next_batch()
  cpu, tokens = time.process_time(), 0
  for _ in range(batches):
    tokens += int((next_batch()["segment_ids"] > 0).sum())
  return tokens / (time.process_time() - cpu)


def demand(size: str) -> float:
  """FLOPs per trained token of configs/dense.py:size."""
  cfg = config_lib.from_configdict(dense.get_config(size))
  return accounting.count_flops(cfg).train_per_token


def main(argv):
  del argv
  cfg = config_lib.DataConfig(source="stdlib", vocab_size=8192)
  tokenizer = data.load_tokenizer(cfg)
  start = time.perf_counter()
  windows = data.train_windows(cfg, tokenizer, SEQ)  # builds the store on first use
  store_s = time.perf_counter() - start
  new = data.make_train_iterator(cfg, tokenizer, seq_len=SEQ, global_batch_size=BATCH, seed=0)
  old = old_pipeline().make_train_iterator(cfg, tokenizer, seq_len=SEQ,
                                           global_batch_size=BATCH, seed=0)
  rng = np.random.default_rng(0)
  rates = {
      "old": cpu_rate(lambda: next(old), max(10, _BATCHES.value // 10)),
      "new": cpu_rate(lambda: next(new), _BATCHES.value),
      "new, rows only": cpu_rate(lambda: windows.rows(rng.integers(0, len(windows), BATCH)),
                                 _BATCHES.value),
  }
  needs = {(host, size): peak * MFU / demand(size)
           for host, peak in HOSTS.items() for size in ("xxsmall", "small")}
  print(f"pipelines: stdlib corpus, batch {BATCH} x {SEQ}, tokens per CPU-second (one core)")
  for name, rate in rates.items():
    print(f"  {name:<16} {rate:>14,.0f} tokens/s")
  print(f"demand at {MFU:.0%} MFU (zoo.accounting training FLOPs per token)")
  v5p_xxsmall = needs[("TPU v5p host (4 chips)", "xxsmall")]
  for (host, size), need in needs.items():
    print(f"  {host} {size:<8} {need:>14,.0f} tokens/s   new/demand "
          f"{rates['new'] / need:5.2f}   old/demand {rates['old'] / need:6.3f}")
  load = os.getloadavg()
  print(f"new pipeline on one core / v5p host xxsmall: {rates['new'] / v5p_xxsmall:.2f}; "
        f"store built in {store_s:.1f} s; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"on {os.cpu_count()} cores")
  with open(_OUT.value, "w") as f:
    json.dump({"tokens_per_cpu_s": rates, "batch": [BATCH, SEQ], "mfu": MFU,
               "demand_tokens_per_s": {f"{h} {s}": v for (h, s), v in needs.items()},
               "new_over_v5p_xxsmall": rates["new"] / v5p_xxsmall, "store_build_s": store_s,
               "load_average": load, "cpu_count": os.cpu_count()}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
