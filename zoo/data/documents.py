"""Text documents from files: which files, how they split into train/validation, fingerprint.

A document is one file (`stdlib`, and `local_text` with several files). A `local_text`
corpus of a single file is cut at blank lines into documents of about
`SINGLE_FILE_DOC_CHARS` characters, since a one-document corpus cannot be split. Files are decoded as UTF-8 with
undecodable bytes replaced; empty files, binary files (a NUL byte) and hidden paths are
skipped.

Each document goes to validation when a hash of its key (the relative path, plus `#index`
for pieces of a single file) falls below `VALIDATION_FRACTION`, so the split never changes
when other files are added or removed. There is at least one validation and one train
document when there are two or more; a single document is used for both splits.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import sysconfig

from zoo.config import ConfigError

VALIDATION_FRACTION = 0.02
SINGLE_FILE_DOC_CHARS = 4000
# Part of every fingerprint: bump when the document layout or the split rule changes.
LAYOUT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class FileSet:
  """Files (absolute paths) and their keys (paths relative to `root`), sorted by key."""

  root: str
  paths: tuple[str, ...]
  keys: tuple[str, ...]
  split_single_file: bool = False

  def signature(self) -> tuple:
    """Cheap identity of the files' current state (sizes and mtimes), for memoizing."""
    return (self.root, self.split_single_file) + tuple(
        (k, st.st_size, st.st_mtime_ns) for k, st in zip(self.keys, map(os.stat, self.paths)))


def _hidden(rel: str) -> bool:
  return any(part.startswith(".") for part in rel.split(os.sep))


def stdlib_files() -> FileSet:
  """All `*.py` files of the running Python's standard library, without site-packages."""
  root = sysconfig.get_paths()["stdlib"]
  paths = []
  for d, dirs, files in os.walk(root):
    dirs[:] = [x for x in dirs if x not in ("site-packages", "dist-packages", "__pycache__")]
    paths += [os.path.join(d, f) for f in files if f.endswith(".py")]
  return _fileset(root, paths)


def local_files(path: str) -> FileSet:
  """The files of a file, directory (recursively) or glob; ConfigError("data.path") if none."""
  if not path:
    raise ConfigError("data.path", path, "a file, directory or glob when data.source='local_text'")
  path = os.path.expanduser(path)
  if os.path.isfile(path):
    return _fileset(os.path.dirname(os.path.abspath(path)), [path], split_single_file=True)
  if os.path.isdir(path):
    root, paths = path, []
    for d, dirs, files in os.walk(path):
      dirs[:] = [x for x in dirs if not x.startswith(".")]
      paths += [os.path.join(d, f) for f in files if not f.startswith(".")]
  else:
    paths = [p for p in glob.glob(path, recursive=True) if os.path.isfile(p)]
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]) if paths else ""
  fileset = _fileset(root, paths)
  if not fileset.paths:
    raise ConfigError("data.path", path, "an existing file, directory or glob that matches files")
  if len(fileset.paths) == 1:
    fileset = dataclasses.replace(fileset, split_single_file=True)
  return fileset


def _fileset(root: str, paths: list[str], split_single_file: bool = False) -> FileSet:
  root = os.path.abspath(root)
  pairs = sorted((os.path.relpath(os.path.abspath(p), root), os.path.abspath(p)) for p in paths)
  pairs = [(k, p) for k, p in pairs if not _hidden(k)]
  return FileSet(root, tuple(p for _, p in pairs), tuple(k for k, _ in pairs), split_single_file)


def read_files(fileset: FileSet) -> tuple[str, list[tuple[str, str]]]:
  """(fingerprint, documents as (key, text)); the fingerprint covers keys and raw bytes."""
  h = hashlib.sha256(f"zoo-documents-v{LAYOUT_VERSION}:{fileset.split_single_file}".encode())
  docs = []
  for key, path in zip(fileset.keys, fileset.paths):
    with open(path, "rb") as f:
      raw = f.read()
    h.update(b"%s\0%d\0" % (key.encode(), len(raw)))
    h.update(raw)
    if not raw or b"\0" in raw[:8192]:
      continue
    text = raw.decode("utf-8", errors="replace")
    if fileset.split_single_file:
      docs += [(f"{key}#{i:06d}", t) for i, t in enumerate(_cut(text, SINGLE_FILE_DOC_CHARS))]
    else:
      docs.append((key, text))
  return h.hexdigest(), docs


def _cut(text: str, target: int) -> list[str]:
  """Pieces of about `target` chars, ending at a blank line, else a line end, else anywhere."""
  pieces, start = [], 0
  while start < len(text):
    end = len(text)
    if end - start > target:
      for sep in ("\n\n", "\n"):
        cut = text.find(sep, start + target, start + 4 * target)
        if cut >= 0:
          end = cut + len(sep)
          break
      else:
        end = min(end, start + 4 * target)
    pieces.append(text[start:end])
    start = end
  return pieces


def _unit_hash(key: str) -> float:
  return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) / 2.0**64


def split_documents(docs: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
  """{"train": [...], "validation": [...]} by key hash (see the module docstring)."""
  if len(docs) == 1:
    return {"train": list(docs), "validation": list(docs)}
  hashes = [_unit_hash(k) for k, _ in docs]
  is_val = [x < VALIDATION_FRACTION for x in hashes]
  if docs and not any(is_val):
    is_val[hashes.index(min(hashes))] = True
  if docs and all(is_val):
    is_val[hashes.index(max(hashes))] = False
  return {
      "train": [d for d, v in zip(docs, is_val) if not v],
      "validation": [d for d, v in zip(docs, is_val) if v],
  }
