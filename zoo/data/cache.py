"""The on-disk cache of built corpora and trained tokenizers, written atomically.

Everything is built in a private temporary path next to its final name and then renamed,
so a killed build leaves only a `.tmp-*` entry (never a half-written cache entry) and an
entry that already exists is never touched again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator

from zoo.config import DataConfig


def cache_root(data_cfg: DataConfig) -> str:
  """data.cache_dir, else $ZOO_CACHE, else ~/.cache/zoo."""
  root = data_cfg.cache_dir or os.environ.get("ZOO_CACHE") or "~/.cache/zoo"
  return os.path.abspath(os.path.expanduser(root))


def digest(obj: Any) -> str:
  """A stable hex hash of a JSON-serializable value."""
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def building_dir(final: str) -> Iterator[str]:
  """Yields an empty temp dir; on success it becomes `final` unless that appeared meanwhile."""
  parent = os.path.dirname(final)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(final)}-", dir=parent)
  try:
    yield tmp
    try:
      os.rename(tmp, final)  # atomic; fails if another process published first
    except OSError:
      if not os.path.isdir(final):
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def publish_file(final: str, data: bytes) -> None:
  """Writes `data` to `final` atomically; keeps an existing `final` untouched."""
  parent = os.path.dirname(final)
  os.makedirs(parent, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.path.basename(final)}-", dir=parent)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    try:
      os.link(tmp, final)  # unlike rename, never replaces an existing file
    except FileExistsError:
      pass
    except OSError:  # a filesystem without hard links: rename, unless already there
      if not os.path.exists(final):
        os.rename(tmp, final)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
