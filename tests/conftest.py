"""Tests run on the CPU with 8 fake devices (set before JAX initialises its backend).

Tests marked `tpu_aot` compile kernels for TPU topologies and need the `tpu` extra
(libtpu); they are deselected unless `--tpu-aot` is given (CI gives it: see .ci/run).
"""

import glob
import os
import shutil
import sysconfig

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

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


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """Forty standard-library modules as a local_text corpus, and a shared data cache: the
  (path, cache_dir) that tests running train.py in subprocesses train on."""
  root = tmp_path_factory.mktemp("corpus")
  stdlib = sysconfig.get_paths()["stdlib"]
  for name in sorted(glob.glob(os.path.join(stdlib, "*.py")))[:40]:
    shutil.copy(name, root)
  return str(root), str(tmp_path_factory.mktemp("cache"))


_CONFORMANCE: dict = {}


def pytest_runtest_logreport(report):
  """Collects the conformance suite's rows (also from xdist workers) for the summary table."""
  for name, value in getattr(report, "user_properties", ()):
    if name == "conformance" and report.when == "call" and report.passed:
      kind, check, result = value
      _CONFORMANCE.setdefault(kind, {})[check] = result


def pytest_terminal_summary(terminalreporter):
  if not _CONFORMANCE:
    return
  checks = ["training", "sampling causal", "decode", "flops forward", "flops train", "learns",
            "8 devices"]
  terminalreporter.section("conformance: every registered block and stack kind")
  rows = [["kind"] + checks] + [[kind] + [r.get(c, "-") for c in checks]
                                for kind, r in sorted(_CONFORMANCE.items())]
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  for row in rows:
    terminalreporter.write_line(" | ".join(v.ljust(w) for v, w in zip(row, widths)))
