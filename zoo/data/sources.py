"""Corpora as TFDS array_record datasets, read as random-access sources (no TensorFlow).

`stdlib` and `local_text` are written by a TFDS builder into the cache, one directory per
corpus fingerprint, built atomically (see cache.py). `tfds` reads any registered TFDS
dataset prepared in array_record format (data.path is its data_dir, default TFDS's own);
one not yet prepared is downloaded and prepared, which needs the network.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any, Iterator, Sequence

import tensorflow_datasets as tfds

from zoo.config import ConfigError, DataConfig, DATA_SOURCES
from zoo.data import documents, tfds_errors
from zoo.data.cache import building_dir, cache_root, digest

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A text corpus: train and eval random-access sources of records (dicts)."""

  name: str
  fingerprint: str  # changes whenever the text (or its split) changes
  text_feature: str
  train: Sequence[Any]
  eval: Sequence[Any]

  def text(self, record: dict) -> str:
    value = record[self.text_feature]
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)

  def train_sample(self, chars: int) -> Iterator[str]:
    """Texts of train documents evenly spread over the split, about `chars` characters in
    all (the count of documents is estimated from 64 probed ones); every document if the
    split is smaller."""
    n = len(self.train)
    if n == 0:
      return
    probe = [len(self.text(self.train[i])) for i in spread(n, min(n, 64))]
    mean_chars = max(1.0, sum(probe) / len(probe))
    for i in spread(n, min(n, math.ceil(chars / mean_chars))):
      yield self.text(self.train[i])


def spread(n: int, k: int) -> list[int]:
  """k indices evenly spread over range(n)."""
  return sorted({i * n // k for i in range(k)})


class ZooText(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A text corpus given as documents; train/validation as chosen by documents.py."""

  name = "zoo_text"
  # No checksums file to find; TFDS's lookup of one needs `importlib_resources` (not a dep).
  code_path = None
  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, *, splits: dict[str, list[tuple[str, str]]] | None = None, **kwargs):
    self._splits = splits
    super().__init__(**kwargs)

  def _info(self):
    features = tfds.features.FeaturesDict({"text": tfds.features.Text(), "key": tfds.features.Text()})
    return tfds.core.DatasetInfo(builder=self, features=features)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {name: self._generate_examples(docs) for name, docs in self._splits.items()}

  def _generate_examples(self, docs):
    for key, text in docs:
      yield key, {"text": text, "key": key}


# Fingerprints of file sets whose sizes and mtimes are unchanged, to skip re-reading them.
_FINGERPRINTS: dict[tuple, str] = {}


def load_corpus(data_cfg: DataConfig) -> Corpus:
  """The corpus data_cfg names, built into the cache on first use."""
  if data_cfg.source not in DATA_SOURCES:
    raise ConfigError("data.source", data_cfg.source, f"one of {list(DATA_SOURCES)}")
  if data_cfg.source == "tfds":
    return _tfds_corpus(data_cfg)
  if data_cfg.source == "stdlib":
    fileset = documents.stdlib_files()
  else:
    fileset = documents.local_files(data_cfg.path)
  signature = fileset.signature()
  fingerprint = _FINGERPRINTS.get(signature)
  if fingerprint is None or not os.path.isdir(_corpus_dir(data_cfg, fingerprint)):
    fingerprint, docs = documents.read_files(fileset)
    if not docs:
      raise ConfigError("data.path", data_cfg.path or fileset.root, "files containing text")
    if not os.path.isdir(_corpus_dir(data_cfg, fingerprint)):
      _build(_corpus_dir(data_cfg, fingerprint), docs)
    _FINGERPRINTS[signature] = fingerprint
  directory = _corpus_dir(data_cfg, fingerprint)
  builder = ZooText(data_dir=directory, file_format="array_record")
  train, eval_ = _open_splits(builder, data_cfg)
  return Corpus(data_cfg.source, fingerprint, "text", train, eval_)


def _corpus_dir(data_cfg: DataConfig, fingerprint: str) -> str:
  return os.path.join(cache_root(data_cfg), "corpora", f"{data_cfg.source}-{fingerprint[:16]}")


def _build(directory: str, docs: list[tuple[str, str]]) -> None:
  splits = documents.split_documents(docs)
  log.info("building corpus %s: %d train, %d validation documents",
           directory, len(splits["train"]), len(splits["validation"]))
  with building_dir(directory) as tmp:
    builder = ZooText(splits=splits, data_dir=tmp, file_format="array_record")
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def _open_splits(builder, data_cfg: DataConfig):
  sources = []
  for field in ("train_split", "eval_split"):
    split = getattr(data_cfg, field)
    try:
      sources.append(builder.as_data_source(split=split))
    except Exception as e:  # TFDS raises several types for a bad split name
      raise ConfigError(f"data.{field}", split,
                        f"a split of {builder.name}: {sorted(builder.info.splits)} ({e})") from e
  return sources


def _tfds_corpus(data_cfg: DataConfig) -> Corpus:
  if not data_cfg.name:
    raise ConfigError("data.name", data_cfg.name, "a registered TFDS dataset name when data.source='tfds'")
  data_dir = os.path.expanduser(data_cfg.path) if data_cfg.path else None
  try:
    builder = tfds.builder(data_cfg.name, data_dir=data_dir)
  except Exception as e:  # DatasetNotFoundError, or a bad config / version in the name
    raise tfds_errors.unknown_name(data_cfg.name, e) from e
  if not builder.is_prepared():
    log.info("preparing TFDS dataset %s in %s", data_cfg.name, builder.data_dir)
    tfds_errors.prepare(builder, data_cfg.name, data_dir or str(builder.data_dir_root))
  if data_cfg.text_feature not in builder.info.features:
    raise ConfigError("data.text_feature", data_cfg.text_feature,
                      f"a feature of {data_cfg.name}: {sorted(builder.info.features)}")
  train, eval_ = _open_splits(builder, data_cfg)
  # Describes the prepared data without reading it all (lm1b, c4 are many GB).
  splits = {name: [s.num_examples, s.num_bytes, list(s.shard_lengths)]
            for name, s in sorted(builder.info.splits.items())}
  fingerprint = digest({"layout": documents.LAYOUT_VERSION, "name": builder.info.full_name,
                        "splits": splits, "text_feature": data_cfg.text_feature,
                        "train_split": data_cfg.train_split})
  return Corpus(f"tfds:{data_cfg.name}", fingerprint, data_cfg.text_feature, train, eval_)
