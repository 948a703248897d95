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
