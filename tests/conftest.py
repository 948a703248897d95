"""Tests run on the CPU with 8 fake devices (set before JAX initialises its backend).

Tests marked `tpu_aot` compile kernels for TPU topologies and need the `tpu` extra
(libtpu); they are deselected unless `--tpu-aot` is given (CI gives it: see .ci/run).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


def pytest_addoption(parser):
  parser.addoption("--tpu-aot", action="store_true",
                   help="also run the TPU ahead-of-time compile tests (needs the tpu extra)")


def pytest_collection_modifyitems(config, items):
  if config.getoption("--tpu-aot"):
    return
  selected = [item for item in items if "tpu_aot" not in item.keywords]
  deselected = [item for item in items if "tpu_aot" in item.keywords]
  if deselected:
    config.hook.pytest_deselected(items=deselected)
    items[:] = selected
