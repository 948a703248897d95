"""grain pipelines from a corpus to packed batches of token ids.

source → (train: shuffle, repeat forever with a new order each epoch) → this process's share
→ tokenize to [bos] + tokens + [eos] → cut into (inputs, targets) chunks of at most seq_len
→ first-fit pack into rows of seq_len → global batches → this process's rows of each.

Every process builds the same global batches and keeps its rows (`rows`, default the
process's contiguous block; the training loop passes `zoo.sharding.process_rows`), so a
batch does not depend on the number of processes: 2 processes x 4 devices see the same data
as 1 process x 8 devices. (Each process reads and packs every document; cheap for the corpora
this pipeline serves.)

Every batch is a dict of int32 arrays [len(rows), seq_len]: `inputs`, `targets` (the next
token within the same document), `segment_ids` (1, 2, ... per packed piece, 0 on padding)
and `positions` (0, 1, ... restarting in every piece). Targets are cut before packing, so
no target crosses into another document; a loss should be masked by `segment_ids > 0`.
A document longer than seq_len + 1 tokens becomes several pieces whose positions each
start at 0; consecutive pieces share one token so every next-token target is kept.
"""

from __future__ import annotations

import functools
from typing import Sequence

from absl import flags
import grain
import jax
import numpy as np

from zoo.config import ConfigError, DataConfig
from zoo.data.sources import Corpus, load_corpus
from zoo.data.tokenizer import Tokenizer

KEYS = ("inputs", "targets", "segment_ids", "positions")


class _Tokenize:
  """A record → np.int32 [bos, *tokens, eos]."""

  def __init__(self, corpus: Corpus, tokenizer: Tokenizer):
    self._text, self._tokenizer = corpus.text, tokenizer
    self._bos, self._eos = tokenizer.bos_id, tokenizer.eos_id

  def __call__(self, record: dict) -> np.ndarray:
    ids = self._tokenizer.encode(self._text(record))
    return np.asarray([self._bos, *ids, self._eos], dtype=np.int32)


class _Chunk(grain.experimental.FlatMapTransform):
  """Token ids → {inputs, targets} pieces of at most seq_len pairs."""

  def __init__(self, seq_len: int):
    self.seq_len = seq_len
    self.max_fan_out = 1 << 30  # unused by the iterator flat map; documents vary widely

  def flat_map(self, ids: np.ndarray) -> list[dict[str, np.ndarray]]:
    pieces = []
    for start in range(0, len(ids) - 1, self.seq_len):
      end = min(start + self.seq_len, len(ids) - 1)
      pieces.append({"inputs": ids[start:end], "targets": ids[start + 1:end + 1]})
    return pieces


def _stack(rows: Sequence[dict[str, np.ndarray]], batch: int) -> dict[str, np.ndarray]:
  """Packed rows → a batch under KEYS, padded with empty rows to `batch` (eval's last one)."""
  names = {"inputs": "inputs", "targets": "targets",
           "segment_ids": "targets_segment_ids", "positions": "targets_positions"}
  out = {}
  for key, name in names.items():
    array = np.stack([row[name] for row in rows]).astype(np.int32, copy=False)
    if len(rows) < batch:
      array = np.concatenate([array, np.zeros((batch - len(rows), array.shape[1]), np.int32)])
    out[key] = array
  return out


def _rows(global_batch_size: int, seq_len: int, rows) -> np.ndarray:
  """This process's rows of each global batch; checks the sizes before any data is read."""
  if seq_len <= 0:
    raise ConfigError("seq_len", seq_len, "> 0")
  count = jax.process_count()
  if global_batch_size <= 0 or global_batch_size % count:
    raise ConfigError("batch_size", global_batch_size, f"a positive multiple of the process count {count}")
  if rows is None:
    local = global_batch_size // count
    return np.arange(jax.process_index() * local, (jax.process_index() + 1) * local)
  return np.asarray(rows)


class _Share(grain.transforms.Map):
  """A global batch -> the rows this process feeds to its devices."""

  def __init__(self, rows: np.ndarray):
    self.rows = rows

  def map(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v[self.rows] for k, v in batch.items()}


def _packed(ds: grain.MapDataset, corpus: Corpus, tokenizer: Tokenizer, *, seq_len: int,
            batch: int, seed: int, shuffle_bins: bool, drop_remainder: bool) -> grain.IterDataset:
  ds = ds.map(_Tokenize(corpus, tokenizer))
  # Two reader threads: SentencePiece encodes ~1M tokens/s per thread, far more than a
  # small model consumes, and more threads only contend for the few CPU cores.
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=16))
  it = grain.experimental.FlatMapIterDataset(it, _Chunk(seq_len))
  it = grain.experimental.FirstFitPackIterDataset(
      it, length_struct={"inputs": seq_len, "targets": seq_len},
      num_packing_bins=max(batch, 16), seed=seed, shuffle_bins=shuffle_bins)
  return it.batch(batch, drop_remainder=drop_remainder, batch_fn=functools.partial(_stack, batch=batch))


def _shared(it: grain.IterDataset, rows: np.ndarray, global_batch_size: int) -> grain.IterDataset:
  """Keeps this process's rows; a process that feeds the whole batch keeps it as it is."""
  if np.array_equal(rows, np.arange(global_batch_size)):
    return it
  return it.map(_Share(rows))


def make_train_iterator(data_cfg: DataConfig, tokenizer: Tokenizer, *, seq_len: int,
                        global_batch_size: int, seed: int, rows=None) -> grain.DatasetIterator:
  """An endless iterator of training batches; `get_state()`/`set_state()` resume it exactly.

  Every epoch is shuffled anew from `seed`. data.num_workers > 0 prepares batches in that
  many spawned worker processes (grain multiprocessing; the main module then needs an
  `if __name__ == "__main__"` guard), 0 in this process. A saved state restores only into
  an iterator with the same num_workers and process count. Call after
  `jax.distributed.initialize` (the process index picks this process's share).
  """
  rows = _rows(global_batch_size, seq_len, rows)
  corpus = load_corpus(data_cfg)
  if len(corpus.train) == 0:
    raise ConfigError("data.train_split", data_cfg.train_split, "a split with documents")
  ds = grain.MapDataset.source(corpus.train).shuffle(seed=seed).repeat(None)
  it = _packed(ds, corpus, tokenizer, seq_len=seq_len, batch=global_batch_size, seed=seed,
               shuffle_bins=True, drop_remainder=True)
  it = _shared(it, rows, global_batch_size)
  if data_cfg.num_workers > 0:
    # grain reads its absl flags when starting workers; a program without absl.app has not
    # parsed them, so take their defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=data_cfg.num_workers))
  return iter(it)


def make_eval_iterator(data_cfg: DataConfig, tokenizer: Tokenizer, *, seq_len: int,
                       global_batch_size: int, num_batches: int,
                       rows=None) -> grain.DatasetIterator:
  """The first `num_batches` batches of the eval split, the same on every call.

  No shuffling. When the split runs out first there are fewer batches: the last one is
  filled up with padding rows (segment_ids 0) and none follow; every process gets the same
  number of batches.
  """
  rows = _rows(global_batch_size, seq_len, rows)
  corpus = load_corpus(data_cfg)
  ds = grain.MapDataset.source(corpus.eval)
  it = _packed(ds, corpus, tokenizer, seq_len=seq_len, batch=global_batch_size, seed=0,
               shuffle_bins=False, drop_remainder=False)
  it = grain.experimental.LimitIterDataset(it, count=num_batches)
  return iter(_shared(it, rows, global_batch_size))

