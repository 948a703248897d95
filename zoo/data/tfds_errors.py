"""One-line answers for TFDS datasets that are misnamed or not prepared.

TFDS lists every dataset it knows when a name is wrong (260 lines), and preparing a dataset
with no network retries for minutes and leaves partial downloads behind. These helpers name
the nearest dataset, and refuse to prepare within seconds when the network is unreachable.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import shutil
import socket

from zoo.config import ConfigError

# Where TFDS downloads most datasets from; reachable means preparing has a chance.
PROBE_HOSTS = (("storage.googleapis.com", 443),)


def unknown_name(name: str, error: Exception) -> ConfigError:
  """ConfigError naming the nearest dataset TFDS listed in `error`."""
  text = str(error).splitlines()
  known = [line.strip()[2:] for line in text if line.strip().startswith("- ")]
  near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
  hint = f"; did you mean {near[0]!r}?" if near else ""
  return ConfigError("data.name", name,
                     f"a registered TFDS dataset ({text[0] if text else error}){hint}")


def network_reachable(timeout_s: float = 3.0) -> bool:
  for host, port in PROBE_HOSTS:
    try:
      socket.create_connection((host, port), timeout=timeout_s).close()
      return True
    except OSError:
      continue
  return False


def prepare(builder, name: str, data_dir: str) -> None:
  """Downloads and prepares `builder`; without a network, or on failure, raises one line
  saying how to prepare it, leaving no new files under `data_dir`."""
  how = (f"prepare it on a machine with network access (tfds build {name} --data_dir "
         f"{data_dir} --file_format array_record) and copy {data_dir}, or set data.path to "
         "where it is prepared")
  if not network_reachable():
    raise ConfigError("data.name", name, f"a prepared TFDS dataset: not prepared under "
                      f"{data_dir} and the network is unreachable; {how}")
  before = set(os.listdir(data_dir)) if os.path.isdir(data_dir) else None
  try:
    builder.download_and_prepare(file_format="array_record")
  except Exception as e:  # noqa: BLE001  (TFDS raises many kinds)
    _remove_new(data_dir, before)
    first = (str(e).strip().splitlines() or [""])[0][:200]
    raise ConfigError("data.name", name, f"a prepared TFDS dataset: preparing it failed "
                      f"({type(e).__name__}: {first}); {how}") from e


def _remove_new(data_dir: str, before: set[str] | None) -> None:
  """Removes what a failed prepare added under `data_dir` (all of it if TFDS created it)."""
  if before is None:
    shutil.rmtree(data_dir, ignore_errors=True)
    return
  with contextlib.suppress(OSError):
    for entry in set(os.listdir(data_dir)) - before:
      path = os.path.join(data_dir, entry)
      if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        os.remove(path)
