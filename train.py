"""Trains a model from a config file.

  python train.py --config configs/dense.py:tiny --workdir /tmp/zoo/dense_tiny \
      [--config.steps=200 --config.model.d_model=128 ...]

Any config field can be overridden with --config.FIELD=VALUE. A bad value, a misspelled
field, a workdir another run holds or storage that cannot be written stops with one line,
before anything is compiled or written.

Several processes (a TPU pod slice: run the same command on every host; found automatically
on Cloud TPU VMs; elsewhere add --coordinator_address=HOST:PORT --num_processes=N
--process_id=I, or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).
"""

import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from zoo import cli
from zoo import config as config_lib
from zoo.training import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<family>.py:<size>")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where metrics (and checkpoints) go.")
_CLUSTER = distributed.define_flags()
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax and grain log every file at INFO
  try:
    distributed.initialize(**_CLUSTER())
  except ValueError as e:
    sys.exit(f"error: {e}")
  import jax

  from zoo import checkpoint, training, workdir

  with distributed.fail_fast():
    try:
      cfg = config_lib.from_configdict(cli.config_value(_CONFIG))
      config_lib.validate(cfg, jax.device_count())
      training.train(cfg, _WORKDIR.value)
    except checkpoint.SaveFailed as e:
      # orbax's threads of the failed save wait 300 s before the interpreter could exit.
      print(f"error: {e}", file=sys.stderr, flush=True)
      os._exit(1)
    except (config_lib.ConfigError, checkpoint.CheckpointError, workdir.WorkdirError,
            training.Diverged) as e:
      cli.fail(e, code=1)


if __name__ == "__main__":
  cli.run(main)
