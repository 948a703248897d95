"""Builds a config's corpus, tokenizer and tokenized store ahead of time (e.g. before a pod
run, so no host spends its first minutes tokenizing):

  python -m zoo.data.prebuild --config configs/dense.py:tiny [--config.data.source=...]

Prints each split's store directory and size. Runs see the same cache (data.cache_dir,
$ZOO_CACHE or ~/.cache/zoo) and find everything built.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from zoo import config as config_lib
from zoo.data.store import open_store
from zoo.data.tokenizer import load_tokenizer

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<family>.py:<size>")
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    cfg = config_lib.from_configdict(_CONFIG.value)
    tokenizer = load_tokenizer(cfg.data)
    for split in dict.fromkeys((cfg.data.train_split, cfg.data.eval_split)):
      store = open_store(cfg.data, tokenizer, split)
      print(f"{split}: {store.num_documents:,} documents, {len(store.tokens):,} tokens "
            f"in {store.directory}")
  except config_lib.ConfigError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
