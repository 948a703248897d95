"""grain pipelines: packing invariants, exact resume, deterministic eval, process shards."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from zoo.config import ConfigError
from zoo.data import KEYS, load_corpus, make_eval_iterator, make_train_iterator

SEQ = 64


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


def test_train_batches_satisfy_packing_invariants(local_cfg, tokenizer):
  docs = [d.tobytes() for d in _docs(local_cfg, tokenizer)]
  it = make_train_iterator(local_cfg, tokenizer, seq_len=SEQ, global_batch_size=4, seed=0)
  batches = [next(it) for _ in range(40)]  # several epochs of this small corpus
  for b in batches:
    check_batch(b, 4, SEQ, tokenizer, docs)
  seg = np.stack([b["segment_ids"] for b in batches])
  assert (seg > 0).mean() > 0.9 and seg.max() > 1  # packed densely, several docs per row


def test_first_epoch_covers_every_train_document(local_cfg, tokenizer):
  docs = _docs(local_cfg, tokenizer)
  epoch_targets = sum(len(d) - 1 for d in docs)
  it = make_train_iterator(local_cfg, tokenizer, seq_len=SEQ, global_batch_size=4, seed=3)
  firsts, targets = set(), 0  # the first piece of every document seen
  while targets < 1.1 * epoch_targets:  # an epoch, plus what packing holds back
    b = next(it)
    targets += int((b["segment_ids"] > 0).sum())
    for r in range(4):
      starts = np.flatnonzero((b["positions"][r] == 0) & (b["inputs"][r] == tokenizer.bos_id))
      for start in starts:
        piece = b["inputs"][r, start:][b["segment_ids"][r, start:] == b["segment_ids"][r, start]]
        firsts.add(piece.tobytes())
  assert all(d[:min(SEQ, len(d) - 1)].tobytes() in firsts for d in docs)


def test_state_restores_exactly(local_cfg, tokenizer):
  def make(seed=1):
    return make_train_iterator(local_cfg, tokenizer, seq_len=SEQ, global_batch_size=4, seed=seed)
  it = make()
  for _ in range(7):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # as checkpointed
  expected = [next(it) for _ in range(30)]  # past an epoch boundary
  resumed = make()
  resumed.set_state(state)
  for a, b in zip(expected, [next(resumed) for _ in range(30)]):
    for k in KEYS:
      np.testing.assert_array_equal(a[k], b[k])
  other = next(make(seed=2))
  assert not np.array_equal(other["inputs"], next(make())["inputs"])


def test_eval_is_deterministic_and_limited(local_cfg, tokenizer):
  def batches(n, batch=2):
    return list(make_eval_iterator(local_cfg, tokenizer, seq_len=SEQ, global_batch_size=batch,
                                   num_batches=n))
  a, b = batches(2), batches(2)
  assert len(a) == 2
  for x, y in zip(a, b):
    for k in KEYS:
      np.testing.assert_array_equal(x[k], y[k])
  everything = batches(10_000, batch=3)
  docs = _docs(local_cfg, tokenizer, "eval")
  assert len(everything) < 10_000
  real = sum(int((x["segment_ids"] > 0).sum()) for x in everything)
  assert real == sum(len(d) - 1 for d in docs)  # every eval target exactly once
  for x in everything:
    check_batch(x, 3, SEQ, tokenizer, [d.tobytes() for d in docs])


def test_process_shards_are_disjoint(local_cfg, tokenizer, monkeypatch):
  cfg = dataclasses.replace(local_cfg, eval_split="train")  # more documents to share
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  shards = []
  for index in range(2):
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    it = make_eval_iterator(cfg, tokenizer, seq_len=SEQ, global_batch_size=4, num_batches=100)
    shards.append([x for x in it])
    assert all(x["inputs"].shape == (2, SEQ) for x in shards[-1])
  rows = [{x["inputs"][r].tobytes() for x in s for r in range(2) if x["segment_ids"][r].any()}
          for s in shards]
  assert rows[0] and rows[1] and not rows[0] & rows[1]
  with pytest.raises(ConfigError) as e:
    make_train_iterator(local_cfg, tokenizer, seq_len=SEQ, global_batch_size=3, seed=0)
  assert e.value.field == "batch_size"


def test_tfds_source_feeds_the_pipeline(tfds_cfg):
  from zoo.data import load_tokenizer
  tok = load_tokenizer(tfds_cfg)
  b = next(make_train_iterator(tfds_cfg, tok, seq_len=32, global_batch_size=2, seed=0))
  assert b["segment_ids"].max() > 1  # short sentences packed together
  ev = list(make_eval_iterator(tfds_cfg, tok, seq_len=32, global_batch_size=2, num_batches=100))
  assert sum(int((x["segment_ids"] > 0).sum()) for x in ev) == sum(
      len(tok.encode(f"sentence {i} of 20: " + "la " * (i % 17))) + 1 for i in range(20))
