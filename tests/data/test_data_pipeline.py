"""grain pipelines: packing invariants, the global permutation, exact resume, process shares,
and the validation sample."""

import collections
import dataclasses
import json
import pickle

import numpy as np
import pytest

from zoo.config import ConfigError
from zoo.data import KEYS, load_corpus, make_eval_set, make_train_iterator, train_windows

SEQ = 64
BATCH = 16  # the train split is about 250 windows of SEQ: an epoch is about 16 batches


def _docs(cfg, tokenizer, split="train"):
  corpus = load_corpus(cfg)
  source = corpus.train if split == "train" else corpus.eval
  return [np.array([tokenizer.bos_id, *tokenizer.encode(corpus.text(r)), tokenizer.eos_id],
                   np.int32) for r in source]


def check_batch(batch, local_batch, seq_len, tok, docs_bytes):
  """The invariants every batch must satisfy; `docs_bytes` is all documents, as bytes."""
  assert set(batch) == set(KEYS)
  for key in KEYS:
    assert batch[key].shape == (local_batch, seq_len) and batch[key].dtype == np.int32
  seg, pos, inp, tgt = (batch[k] for k in ("segment_ids", "positions", "inputs", "targets"))
  pad = seg == 0
  assert not inp[pad].any() and not tgt[pad].any() and not pos[pad].any()
  for r in range(local_batch):
    ids = [s for s in np.unique(seg[r]) if s > 0]
    assert ids == list(range(1, len(ids) + 1))
    for s in ids:
      where = np.flatnonzero(seg[r] == s)
      assert np.array_equal(where, np.arange(where[0], where[0] + len(where)))  # contiguous
      assert np.array_equal(pos[r, where], np.arange(len(where)))
      x, y = inp[r, where], tgt[r, where]
      assert np.array_equal(x[1:], y[:-1])  # targets are the next token
      piece = np.concatenate([x, y[-1:]]).tobytes()
      assert any(d.find(piece) % 4 == 0 for d in docs_bytes if piece in d), "crosses documents"
      assert tok.bos_id not in x[1:] and tok.eos_id not in y[:-1]


def _rows(batches):
  """Row contents (inputs, targets, segment ids) as hashable bytes, in order."""
  return [b"".join(b[k][r].tobytes() for k in ("inputs", "targets", "segment_ids"))
          for b in batches for r in range(len(b["inputs"]))]


def test_train_batches_satisfy_packing_invariants(local_cfg, tokenizer):
  docs = [d.tobytes() for d in _docs(local_cfg, tokenizer)]
  it = make_train_iterator(local_cfg, tokenizer, seq_len=SEQ, global_batch_size=4, seed=0)
  batches = [next(it) for _ in range(40)]
  for b in batches:
    check_batch(b, 4, SEQ, tokenizer, docs)
  seg = np.stack([b["segment_ids"] for b in batches])
  assert (seg > 0).mean() > 0.97 and seg.max() > 1  # dense: one pad per document boundary


def test_windows_hold_every_target_of_the_split_once(local_cfg, tokenizer):
  windows = train_windows(local_cfg, tokenizer, SEQ)
  rows = windows.rows(np.arange(len(windows)))
  docs = _docs(local_cfg, tokenizer)
  assert int((rows["segment_ids"] > 0).sum()) == sum(len(d) - 1 for d in docs)
  pairs = collections.Counter(zip(rows["inputs"][rows["segment_ids"] > 0],
                                  rows["targets"][rows["segment_ids"] > 0]))
  assert pairs == collections.Counter(p for d in docs for p in zip(d[:-1], d[1:]))


def test_each_epoch_is_a_new_permutation_of_every_window(local_cfg, tokenizer):
  windows = train_windows(local_cfg, tokenizer, SEQ)
  n = len(windows)
  every = collections.Counter(_rows([windows.rows(np.arange(n))]))
  it = make_train_iterator(local_cfg, tokenizer, seq_len=SEQ, global_batch_size=BATCH, seed=3)
  seen = _rows([next(it) for _ in range(-(-2 * n // BATCH))])
  first, second = seen[:n], seen[n:2 * n]
  assert collections.Counter(first) == every and collections.Counter(second) == every
  assert first != second  # reshuffled
  assert first[:BATCH] != _rows([windows.rows(np.arange(BATCH))])  # not in store order
  other = make_train_iterator(local_cfg, tokenizer, seq_len=SEQ, global_batch_size=BATCH, seed=4)
  assert _rows([next(other)]) != first[:BATCH]


def test_state_restores_exactly(local_cfg, tokenizer):
  def make():
    return make_train_iterator(local_cfg, tokenizer, seq_len=SEQ, global_batch_size=BATCH,
                               seed=1)
  it = make()
  for _ in range(7):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # as checkpointed
  expected = [next(it) for _ in range(20)]  # past an epoch boundary
  resumed = make()
  resumed.set_state(state)
  for a, b in zip(expected, [next(resumed) for _ in range(20)]):
    for k in KEYS:
      np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("count", [2, 4])
def test_process_shares_are_disjoint_and_make_up_the_global_batch(local_cfg, tokenizer, count):
  def batches(index, count):
    it = make_train_iterator(local_cfg, tokenizer, seq_len=SEQ, global_batch_size=BATCH,
                             seed=0, process_index=index, process_count=count)
    return [next(it) for _ in range(3)]
  whole = batches(0, 1)
  shares = [batches(p, count) for p in range(count)]
  for step in range(3):
    rows = [_rows([s[step]]) for s in shares]
    assert all(len(r) == BATCH // count for r in rows)
    assert sum(rows, []) == _rows([whole[step]])  # process p holds rows [p*b, (p+1)*b)
  with pytest.raises(ConfigError) as e:
    make_train_iterator(local_cfg, tokenizer, seq_len=SEQ, global_batch_size=6, seed=0,
                        process_count=4)
  assert e.value.field == "batch_size"


def test_corpus_smaller_than_one_batch_errors(local_cfg, tokenizer):
  with pytest.raises(ConfigError, match="sequences of seq_len=1024") as e:
    make_train_iterator(local_cfg, tokenizer, seq_len=1024, global_batch_size=32, seed=0)
  assert e.value.field == "batch_size"


def _eval_rows(eval_set, batch, count):
  per_process = [list(eval_set.batches(batch, process_index=p, process_count=count))
                 for p in range(count)]
  assert len({len(b) for b in per_process}) == 1  # every process runs as many batches
  rows = [row for step in zip(*per_process) for row in _rows(step)]
  return [row for row in rows if np.frombuffer(row, np.int32).any()]


def test_eval_set_is_the_same_for_every_layout(local_cfg, tokenizer):
  cfg = dataclasses.replace(local_cfg, eval_split="train")  # a split of many windows
  eval_set = make_eval_set(cfg, tokenizer, seq_len=SEQ, eval_tokens=40 * SEQ)
  assert len(eval_set.index) == 40
  reference = _rows([eval_set.rows()])
  for batch, count in [(4, 1), (8, 1), (8, 2), (16, 2), (8, 8)]:
    assert _eval_rows(eval_set, batch, count) == reference, (batch, count)
  again = make_eval_set(cfg, tokenizer, seq_len=SEQ, eval_tokens=40 * SEQ)
  np.testing.assert_array_equal(again.index, eval_set.index)
  n = len(eval_set.windows)
  assert eval_set.index[0] < n // 8 and eval_set.index[-1] > n - n // 8  # spread over it all
  assert len(set(np.diff(eval_set.index))) > 3  # a random sample, not a stride


def test_eval_set_takes_a_small_split_whole(local_cfg, tokenizer):
  eval_set = make_eval_set(local_cfg, tokenizer, seq_len=SEQ, eval_tokens=10**9)
  rows = eval_set.rows()
  docs = _docs(local_cfg, tokenizer, "eval")
  assert int((rows["segment_ids"] > 0).sum()) == sum(len(d) - 1 for d in docs)
  check_batch(rows, len(eval_set.index), SEQ, tokenizer, [d.tobytes() for d in docs])
  assert len(list(eval_set.batches(4, limit=2))) == 2


def test_tfds_source_feeds_the_pipeline(tfds_cfg):
  from zoo.data import load_tokenizer
  tok = load_tokenizer(tfds_cfg)
  b = next(make_train_iterator(tfds_cfg, tok, seq_len=32, global_batch_size=2, seed=0))
  assert b["segment_ids"].max() > 1  # short sentences packed together
  rows = make_eval_set(tfds_cfg, tok, seq_len=32, eval_tokens=10**6).rows()
  assert int((rows["segment_ids"] > 0).sum()) == sum(
      len(tok.encode(f"sentence {i} of 20: " + "la " * (i % 17))) + 1 for i in range(20))


def test_windows_pickle_as_a_reference_to_the_store(local_cfg, tokenizer):
  windows = train_windows(local_cfg, tokenizer, SEQ)
  blob = pickle.dumps(windows)
  assert len(blob) < 2000  # grain workers map the files, they are not sent the tokens
  clone = pickle.loads(blob)
  index = np.array([0, len(windows) - 1, 5])
  for k in KEYS:
    np.testing.assert_array_equal(clone.rows(index)[k], windows.rows(index)[k])
