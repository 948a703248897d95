"""Compiles a config's train step for a TPU slice, from a CPU, and says whether it fits.

  python fit_check.py --config configs/dense.py:small --topology v5p-8
  python fit_check.py --config configs/moe.py:switch_small --topology v5e-8 --find_max_batch
  python fit_check.py --config configs/dense.py:medium --topology v5p-128 \
      --config.mesh.fsdp=-1 --config.mesh.data=1 --config.model.remat=full

Needs the `tpu` extra (libtpu), no TPU. Prints per chip: parameters, optimizer state, batch,
activations and temporaries, the total against the chip's HBM, the compiled FLOPs per step
against zoo.accounting's count, the MiB each kind of collective moves per step (from the
compiled HLO; a scanned layer's ops count once), the Mosaic kernels in the program, and the
compile time. Exits non-zero with one line when the
step does not fit. The batch is the config's, rounded up to a multiple the slice can split
(--batch_per_chip sets it); --find_max_batch searches the largest batch that fits.
"""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compile for the TPU; run nothing
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from zoo import config as config_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<family>.py:<size>")
_TOPOLOGY = flags.DEFINE_string("topology", None, "v5e-8, v5p-8, v5p-128, v6e-256, v5p:2x2x1 ...")
_BATCH = flags.DEFINE_integer("batch_per_chip", None, "Sequences per chip (default: config's).")
_FIND = flags.DEFINE_bool("find_max_batch", False, "Search the largest batch that fits.")
flags.mark_flags_as_required(["config", "topology"])


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  from zoo.training import fit

  try:
    cfg = config_lib.from_configdict(_CONFIG.value)
    topo = fit.topology(_TOPOLOGY.value)
    chips = len(fit.devices(topo))
    batch = _BATCH.value * chips if _BATCH.value else fit.fitting_batch(cfg, chips)
    cfg = fit.with_batch(cfg, batch)
    if _FIND.value:
      print(f"largest batch on {topo.name}:")
      report = fit.find_max_batch(cfg, topo)
      if report is None:
        sys.exit(f"does not fit: not even batch {fit.batch_step(cfg, chips)} fits {topo.name}")
    else:
      report = fit.check(cfg, topo)
  except config_lib.ConfigError as e:
    sys.exit(f"error: {e}")
  print(fit.describe(report))
  if not report.fits:
    sys.exit(f"does not fit: {report.error}")


if __name__ == "__main__":
  app.run(main)
