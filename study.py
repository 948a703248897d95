"""Scaling studies: run one (resumable, shardable), report on it, or fit a law to any CSV.

  python study.py run --spec configs/studies/chatelain.py:cpu --dir runs/chatelain [--dry_run]
  python study.py run --spec configs/studies/raposo.py:table1 --dir gs://B/raposo --shard 3/8
  python study.py report --spec configs/studies/raposo.py:cpu --dir runs/raposo
  python study.py fit --csv runs/chatelain/results.csv --law kaplan --n_column params_trainable
  python study.py fit --csv my_runs.csv --law chinchilla3        # columns N, D, loss
  python study.py plan --json my_runs.krajewski.json --compute 1e20 1e22

The logic lives in zoo/studies (cli.py); the command parses and calls it.
"""

import sys

from absl import logging

from zoo import config as config_lib
from zoo.studies import cli

if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)  # orbax and grain log every file at INFO
  try:
    cli.main()
  except (config_lib.ConfigError, ValueError) as e:
    sys.exit(f"error: {e}")
