"""The command-line front of train.py and eval.py: every user mistake is one line.

absl and ml_collections report a misspelled `--config.FIELD`, a missing config file or a
preset the file does not know as tracebacks (44 lines for a misspelling). `run` parses the
flags itself and turns each into `error: ...` with the nearest valid name.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys

import ml_collections
from absl import app, flags


def fail(message: str, code: int = 2):
  """Prints `error: message` (first line only) and exits."""
  lines = str(message).strip().splitlines() or ["unknown error"]
  sys.stdout.flush()
  print(f"error: {lines[0]}", file=sys.stderr)
  sys.exit(code)


def run(main) -> None:
  """`app.run(main)` with flag errors as one line."""
  app.run(main, flags_parser=_parse)


def _parse(argv):
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001  (absl, ml_collections and config files raise anything)
    fail(_explain(argv, e))


def _explain(argv, e: Exception) -> str:
  for arg in argv[1:]:
    if arg.startswith("--config."):
      message = unknown_field(arg[2:].split("=", 1)[0], argv)
      if message:
        return message
  text = str(e).strip().splitlines()
  if isinstance(e, flags.Error) and text and not text[0].endswith(":"):
    return text[0]  # absl's own line: "flag --config.steps=abc: invalid literal ..."
  return _first_cause(e)


def _first_cause(e: BaseException) -> str:
  """The innermost error's first line (absl wraps a config file's ValueError)."""
  while e.__cause__ is not None or e.__context__ is not None:
    e = e.__cause__ or e.__context__
  text = str(e).strip().splitlines()
  return text[0] if text else type(e).__name__


def unknown_field(dotted: str, argv) -> str | None:
  """For `config.modle.d_model`: the first missing part and the nearest valid name."""
  node = _load_config(argv)
  parts = dotted.split(".")
  for i, part in enumerate(parts[1:], 1):
    keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
    if part not in keys:
      where = ".".join(parts[:i])
      near = difflib.get_close_matches(part, keys, n=1, cutoff=0.5)
      hint = f"did you mean --{where}.{near[0]}?" if near else f"fields: {sorted(keys)}"
      return f"--{dotted}: {where} has no field {part!r}; {hint}"
    node = node[part]
  return None


def _load_config(argv) -> ml_collections.ConfigDict | None:
  """The ConfigDict `--config path:arg` names, loaded again to name the valid fields."""
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None and "--config" in argv[:-1]:
    spec = argv[argv.index("--config") + 1]
  if not spec:
    return None
  path, _, arg = spec.partition(":")
  try:
    module_spec = importlib.util.spec_from_file_location("_zoo_cli_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
  except Exception:  # noqa: BLE001  (reported by absl's own message instead)
    return None


def config_value(holder) -> ml_collections.ConfigDict:
  """The parsed ConfigDict, or one line saying why the config file did not load."""
  value = holder.value
  if isinstance(value, ml_collections.ConfigDict):
    return value
  error = getattr(value, "_error", None)  # ml_collections' _ErrorConfig
  spec = flags.FLAGS[holder.name].config_filename
  if spec and not os.path.exists(spec.split(":")[0]):
    fail(f"--config={spec}: no such file")
  fail(f"--config={spec}: {_first_cause(error) if error else 'not a config file'}")
