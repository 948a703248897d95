"""The real offline corpus (the stdlib sources), its tokenizer and throughput; workers."""

import dataclasses
import json
import time

import numpy as np
import pytest

from zoo.config import DataConfig
from zoo.data import (KEYS, load_corpus, load_tokenizer, make_eval_set, make_train_iterator,
                      open_store)


@pytest.mark.slow
def test_stdlib_corpus_tokenizer_store_and_throughput(tmp_path):
  cfg = DataConfig(source="stdlib", vocab_size=8192, cache_dir=str(tmp_path))
  t0 = time.perf_counter()
  corpus = load_corpus(cfg)
  t1 = time.perf_counter()
  tok = load_tokenizer(cfg)
  t2 = time.perf_counter()
  assert len(corpus.train) + len(corpus.eval) > 1000 and 10 <= len(corpus.eval) < 100
  assert tok.vocab_size == 8192
  train, val = open_store(cfg, tok, "train"), open_store(cfg, tok, "validation")
  t3 = time.perf_counter()
  eval_chars = sum(len(corpus.text(r)) for r in corpus.eval)
  eval_tokens = len(val.tokens) - 2 * val.num_documents
  assert 2.5 < eval_chars / eval_tokens < 5  # characters per token

  it = make_train_iterator(cfg, tok, seq_len=256, global_batch_size=16, seed=0)
  next(it)
  t4 = time.perf_counter()
  seg = np.stack([next(it)["segment_ids"] for _ in range(200)])
  tokens_per_s = seg.size / (time.perf_counter() - t4)
  eval_set = make_eval_set(cfg, tok, seq_len=256, eval_tokens=131_072)
  print(f"\nstdlib: {len(corpus.train)} train + {len(corpus.eval)} validation files; "
        f"corpus {t1 - t0:.1f}s, tokenizer {t2 - t1:.1f}s, store {t3 - t2:.1f}s "
        f"({len(train.tokens):,} + {len(val.tokens):,} tokens); validation {eval_chars} chars, "
        f"{eval_tokens} tokens ({eval_chars / eval_tokens:.2f} chars/token), sample of "
        f"{len(eval_set.index)} of {len(eval_set.windows)} windows; train pipeline "
        f"{tokens_per_s:,.0f} tokens/s, {(seg > 0).mean():.2%} not padding")
  assert tokens_per_s > 1_000_000 and (seg > 0).mean() > 0.99


@pytest.mark.slow
def test_worker_processes_resume_exactly(local_cfg, tokenizer):
  cfg = dataclasses.replace(local_cfg, num_workers=2)
  def make():
    return make_train_iterator(cfg, tokenizer, seq_len=64, global_batch_size=4, seed=0)
  it = make()
  for _ in range(5):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(10)]
  resumed = make()
  resumed.set_state(state)
  for a, b in zip(expected, [next(resumed) for _ in range(10)]):
    for k in KEYS:
      np.testing.assert_array_equal(a[k], b[k])
