"""The defaults every preset starts from: the typed dataclasses' own (zoo/config/schema.py,
and each family's options in zoo/families/), so no default is written twice.

Not meant to be run on its own: use a family file, e.g.

  python train.py --config configs/dense.py:tiny --workdir /tmp/zoo/dense_tiny
"""

import ml_collections

import zoo.families  # noqa: F401  (registers every family's option group)
from zoo import config


def get_config() -> ml_collections.ConfigDict:
  return config.defaults()
