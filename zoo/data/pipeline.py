"""grain pipelines from the tokenized store to batches: globally shuffled windows for
training, a fixed representative sample for validation.

A split's store is one stream of documents, each [bos, *tokens, eos]. It is cut into fixed
windows of seq_len + 1 tokens at a stride of seq_len (window w holds tokens
w*seq_len ... (w+1)*seq_len; consecutive windows share one token, so every next-token pair
is in exactly one window, and the last window is padded). A window is one row:

  inputs[j], targets[j] = stream[start + j], stream[start + j + 1], kept when both tokens
  belong to the same document; the pair that crosses from one document's eos to the next
  one's bos is padding (every field 0), so no target crosses into another document.
  segment_ids: 1, 2, ... per document piece in the row (0 on padding), so attention never
  crosses a document; positions: 0, 1, ... restarting in every piece (a document cut by a
  window edge continues at position 0, as pieces of a long document always have).

Training draws windows by a seeded global permutation over the whole split, a new one each
epoch (grain's shuffle reseeds per epoch); global batch k is positions k*B ... (k+1)*B - 1
of that order, whatever the process count, and process p builds rows [p*b, (p+1)*b) of it
(b = B / process count): disjoint shares. Everything is a grain MapDataset, so the iterator
state is one index and `get_state`/`set_state` resume exactly.

Rows are assembled with a few vectorized numpy operations per batch (no per-token or
per-document Python), which is what lets one CPU core feed a TPU host.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

from absl import flags
import grain
import jax
import numpy as np

from zoo.config import ConfigError, DataConfig
from zoo.data.store import TokenStore, memory_maps, open_store
from zoo.data.tokenizer import Tokenizer

KEYS = ("inputs", "targets", "segment_ids", "positions")
EVAL_SEED = 0  # the validation sample is the same for every run, whatever its seed


class Windows:
  """The fixed-length windows of one store, as batches of rows (see the module docstring)."""

  def __init__(self, store: TokenStore, seq_len: int):
    self._map(store.directory, store.meta)
    self.seq_len = seq_len
    self.count = -(-(self.num_tokens - 1) // seq_len)

  def _map(self, directory: str, meta: dict) -> None:
    self.directory, self.meta = directory, meta
    tokens, offsets = memory_maps(directory, meta)
    # Plain ndarray views of the memory maps: slicing an np.memmap costs a Python call each.
    self.tokens, self.offsets = np.asarray(tokens), np.asarray(offsets)
    self.num_tokens = len(tokens)

  def __getstate__(self):  # grain workers map the files again rather than receive a copy
    return {"directory": self.directory, "meta": self.meta, "seq_len": self.seq_len,
            "count": self.count}

  def __setstate__(self, state):
    self._map(state["directory"], state["meta"])
    self.seq_len, self.count = state["seq_len"], state["count"]

  def __len__(self) -> int:
    return self.count

  def rows(self, index: np.ndarray) -> dict[str, np.ndarray]:
    """Rows of the windows in `index` (int [n]; -1 gives an empty padding row)."""
    length, n = self.seq_len, len(index)
    tokens = np.zeros((n, length + 1), np.int32)
    real = np.zeros((n, length + 1), bool)
    doc_start = np.zeros((n, length + 1), bool)  # a document's first token (bos)
    for r, w in enumerate(index):
      if w < 0:
        continue
      start = int(w) * length
      piece = self.tokens[start:start + length + 1]
      tokens[r, :len(piece)] = piece
      real[r, :len(piece)] = True
      lo, hi = np.searchsorted(self.offsets, [start, start + len(piece) - 1], "right")
      doc_start[r, self.offsets[lo:hi] - start] = True  # documents starting inside
    valid = real[:, 1:] & ~doc_start[:, 1:]  # pair j: both tokens real, in one document
    first = valid & ~np.pad(valid, ((0, 0), (1, 0)))[:, :-1]  # a piece starts at j
    column = np.arange(length, dtype=np.int32)
    piece_start = np.maximum.accumulate(np.where(first, column, 0), axis=1)
    return {"inputs": tokens[:, :-1] * valid, "targets": tokens[:, 1:] * valid,
            "segment_ids": np.cumsum(first, axis=1, dtype=np.int32) * valid,
            "positions": ((column - piece_start) * valid).astype(np.int32, copy=False)}


@dataclasses.dataclass(frozen=True)
class _Share:
  """A global batch of window indices -> this process's rows of it."""

  windows: Windows
  rows: tuple[int, ...]  # positions in the global batch, in the order the devices take them

  def __call__(self, index: np.ndarray) -> dict[str, np.ndarray]:
    return self.windows.rows(np.asarray(index)[list(self.rows)])


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  return index, count


def _share(global_batch_size: int, seq_len: int, rows, process_index: int | None,
           process_count: int | None) -> tuple[int, ...]:
  """This process's rows of each global batch: `rows` when given (the rows its devices hold,
  `zoo.sharding.process_rows`), else the process's contiguous block."""
  index, count = _processes(process_index, process_count)
  local = _local_batch(global_batch_size, seq_len, count)
  if rows is None:
    rows = range(index * local, (index + 1) * local)
  return tuple(int(r) for r in rows)


def _local_batch(global_batch_size: int, seq_len: int, process_count: int) -> int:
  """This process's share of the batch; checks the sizes before any data is read."""
  if seq_len <= 0:
    raise ConfigError("seq_len", seq_len, "> 0")
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ConfigError("batch_size", global_batch_size,
                      f"a positive multiple of the process count {process_count}")
  return global_batch_size // process_count


def train_windows(data_cfg: DataConfig, tokenizer: Tokenizer, seq_len: int) -> Windows:
  return Windows(open_store(data_cfg, tokenizer, data_cfg.train_split), seq_len)


def make_train_iterator(data_cfg: DataConfig, tokenizer: Tokenizer, *, seq_len: int,
                        global_batch_size: int, seed: int, rows=None,
                        process_index: int | None = None,
                        process_count: int | None = None) -> grain.DatasetIterator:
  """An endless iterator of this process's training batches; `get_state()`/`set_state()`
  resume it exactly.

  data.num_workers > 0 assembles batches in that many spawned worker processes (grain
  multiprocessing; the main module then needs an `if __name__ == "__main__"` guard), 0 in
  a reader thread of this process. A saved state restores only into an iterator with the
  same num_workers and process count. Call after `jax.distributed.initialize`.
  """
  share = _share(global_batch_size, seq_len, rows, process_index, process_count)
  windows = train_windows(data_cfg, tokenizer, seq_len)
  if len(windows) < global_batch_size:
    raise ConfigError("batch_size", global_batch_size,
                      f"at most the {len(windows)} sequences of seq_len={seq_len} in the "
                      f"train split (a larger corpus, or a smaller batch or seq_len)")
  ds = grain.MapDataset.range(len(windows)).shuffle(seed=seed).repeat(None)
  ds = ds.batch(global_batch_size, drop_remainder=True).map(_Share(windows, share))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=4))
  if data_cfg.num_workers > 0:
    # grain reads its absl flags when starting workers; a program without absl.app has not
    # parsed them, so take their defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=data_cfg.num_workers))
  return iter(it)


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """A fixed sample of validation windows (`index`, sorted), the same for every run with
  this corpus, tokenizer and seq_len."""

  windows: Windows
  index: np.ndarray
  split: str

  def rows(self) -> dict[str, np.ndarray]:
    """Every row of the set (all processes'), for statistics that need no model."""
    return self.windows.rows(self.index)

  def batches(self, global_batch_size: int, *, limit: int | None = None, rows=None,
              process_index: int | None = None,
              process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of each global batch (`rows`, or its contiguous block); the last
    batch padded with empty rows. Every process gets the same number of batches."""
    share = list(_share(global_batch_size, self.windows.seq_len, rows, process_index,
                        process_count))
    n = -(-len(self.index) // global_batch_size)
    padded = np.full(n * global_batch_size, -1, np.int64)
    padded[:len(self.index)] = self.index
    for k in range(n if limit is None else min(n, limit)):
      yield self.windows.rows(padded[k * global_batch_size:(k + 1) * global_batch_size][share])


def make_eval_set(data_cfg: DataConfig, tokenizer: Tokenizer, *, seq_len: int,
                  eval_tokens: int) -> EvalSet:
  """About `eval_tokens` tokens of windows drawn uniformly (seeded by EVAL_SEED) from the
  whole eval split, every window if the split is smaller."""
  if seq_len <= 0:
    raise ConfigError("seq_len", seq_len, "> 0")
  windows = Windows(open_store(data_cfg, tokenizer, data_cfg.eval_split), seq_len)
  want = min(len(windows), max(1, -(-eval_tokens // seq_len)))
  index = np.random.default_rng(EVAL_SEED).permutation(len(windows))[:want]
  return EvalSet(windows, np.sort(index), data_cfg.eval_split)
