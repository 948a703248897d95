"""The tokenized store: a corpus split tokenized once, as token ids plus document boundaries.

  <cache>/stores/<corpus fingerprint>-<tokenizer fingerprint>/<split>/
    tokens.bin    every document's [bos, *ids, eos], concatenated (uint16 when the
                  vocabulary fits in 16 bits, else int32)
    offsets.bin   int64 [documents + 1]: document d is tokens[offsets[d]:offsets[d + 1]]
    meta.json     fingerprints, dtype, counts, layout version (written last)

Why flat files read through `np.memmap` rather than array_record: training reads
fixed-length windows that start anywhere in the token stream, not whole records. A window is
one slice of a memory-mapped array: no record lookup, no decompression, no per-document
Python, and the operating system's page cache shares the pages between every run, process
and grain worker on a host. The files are written streaming (an `.npy` header needs the
length up front), so a corpus larger than memory builds in constant memory.

A split is built on first use (or ahead of time: `python -m zoo.data.prebuild`) in a private
temporary directory that is renamed into place when complete (`cache.building_dir`), so a
killed or failed build never leaves anything at the final path; a later run builds anew.
Several processes may build at once: the first rename wins and the others use it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import numpy as np
import tqdm

from zoo.config import ConfigError, DataConfig
from zoo.data.cache import building_dir, cache_root
from zoo.data.sources import Corpus, load_corpus
from zoo.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

LAYOUT_VERSION = 1
ENCODE_CHUNK = 256  # documents per SentencePiece call (it encodes a list on all cores)


@dataclasses.dataclass(frozen=True)
class TokenStore:
  """One split's tokens and document offsets, memory-mapped read-only."""

  directory: str
  tokens: np.ndarray  # [num_tokens], uint16 or int32
  offsets: np.ndarray  # int64 [num_documents + 1]
  meta: dict

  @property
  def num_documents(self) -> int:
    return len(self.offsets) - 1

  def document(self, d: int) -> np.ndarray:
    return np.asarray(self.tokens[self.offsets[d]:self.offsets[d + 1]], np.int32)


def _split_field(data_cfg: DataConfig, split: str) -> str:
  return "data.train_split" if split == data_cfg.train_split else "data.eval_split"


def store_dir(data_cfg: DataConfig, corpus: Corpus, tokenizer: Tokenizer, split: str) -> str:
  key = f"{corpus.fingerprint[:16]}-{tokenizer.fingerprint[:16]}"
  return os.path.join(cache_root(data_cfg), "stores", key, split)


def open_store(data_cfg: DataConfig, tokenizer: Tokenizer, split: str,
               corpus: Corpus | None = None) -> TokenStore:
  """The store of `split` for this corpus and tokenizer, built on first use."""
  corpus = corpus or load_corpus(data_cfg)
  directory = store_dir(data_cfg, corpus, tokenizer, split)
  if not os.path.isfile(os.path.join(directory, "meta.json")):
    source = corpus.train if split == data_cfg.train_split else corpus.eval
    if len(source) == 0:
      raise ConfigError(_split_field(data_cfg, split), split, "a split with documents")
    build(directory, corpus, source, tokenizer, split)
  return read(directory, corpus, tokenizer)


def read(directory: str, corpus: Corpus, tokenizer: Tokenizer) -> TokenStore:
  """Opens a built store; a store of another tokenizer or corpus stops with the field."""
  with open(os.path.join(directory, "meta.json")) as f:
    meta = json.load(f)
  if meta["tokenizer"] != tokenizer.fingerprint:
    raise ConfigError("data.tokenizer", tokenizer.path,
                      f"the tokenizer the store {directory} was written with "
                      f"(fingerprint {meta['tokenizer'][:16]}, this one {tokenizer.fingerprint[:16]})")
  if meta["corpus"] != corpus.fingerprint or meta["layout"] != LAYOUT_VERSION:
    raise ConfigError("data.cache_dir", directory,
                      f"a store of corpus {corpus.fingerprint[:16]} with layout {LAYOUT_VERSION}")
  return TokenStore(directory, *memory_maps(directory, meta), meta)


def memory_maps(directory: str, meta: dict) -> tuple[np.ndarray, np.ndarray]:
  """(tokens, offsets) of a built store, memory-mapped read-only."""
  tokens = np.memmap(os.path.join(directory, "tokens.bin"), np.dtype(meta["dtype"]), "r",
                     shape=(meta["num_tokens"],))
  offsets = np.memmap(os.path.join(directory, "offsets.bin"), np.int64, "r",
                      shape=(meta["num_documents"] + 1,))
  return tokens, offsets


def build(directory: str, corpus: Corpus, source, tokenizer: Tokenizer, split: str) -> None:
  """Tokenizes every document of `source` into `directory`, atomically, with a progress bar."""
  dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.int32)
  n = len(source)
  log.info("tokenizing %d documents of %s/%s into %s", n, corpus.name, split, directory)
  with building_dir(directory) as tmp:
    num_tokens = 0
    with open(os.path.join(tmp, "tokens.bin"), "wb") as tok_f, \
         open(os.path.join(tmp, "offsets.bin"), "wb") as off_f, \
         tqdm.tqdm(total=n, unit="doc", desc=f"tokenizing {split}", disable=None) as bar:
      off_f.write(np.zeros(1, np.int64).tobytes())
      for start in range(0, n, ENCODE_CHUNK):
        texts = [corpus.text(source[i]) for i in range(start, min(n, start + ENCODE_CHUNK))]
        docs = [np.asarray([tokenizer.bos_id, *ids, tokenizer.eos_id], dtype)
                for ids in tokenizer.encode_batch(texts)]
        tok_f.write(np.concatenate(docs).tobytes())
        ends = num_tokens + np.cumsum([len(d) for d in docs], dtype=np.int64)
        off_f.write(ends.tobytes())
        num_tokens = int(ends[-1])
        bar.update(len(texts))
      for f in (tok_f, off_f):
        f.flush()
        os.fsync(f.fileno())
    meta = {"layout": LAYOUT_VERSION, "corpus": corpus.fingerprint, "corpus_name": corpus.name,
            "split": split, "tokenizer": tokenizer.fingerprint,
            "vocab_size": tokenizer.vocab_size, "dtype": dtype.name, "num_tokens": num_tokens,
            "num_documents": n}
    with open(os.path.join(tmp, "meta.json"), "w") as f:
      json.dump(meta, f, indent=2)
