"""The real offline corpus (the stdlib sources), its tokenizer and throughput; workers."""

import dataclasses
import json
import time

import numpy as np
import pytest

from zoo.config import DataConfig
from zoo.data import KEYS, load_corpus, load_tokenizer, make_eval_iterator, make_train_iterator


@pytest.mark.slow
def test_stdlib_corpus_tokenizer_and_throughput(tmp_path):
  cfg = DataConfig(source="stdlib", vocab_size=8192, cache_dir=str(tmp_path))
  t0 = time.perf_counter()
  corpus = load_corpus(cfg)
  t1 = time.perf_counter()
  tok = load_tokenizer(cfg)
  t2 = time.perf_counter()
  assert len(corpus.train) + len(corpus.eval) > 1000 and 10 <= len(corpus.eval) < 100
  assert tok.vocab_size == 8192
  eval_chars = sum(len(corpus.text(r)) for r in corpus.eval)
  eval_tokens = sum(len(tok.encode(corpus.text(r))) for r in corpus.eval)
  assert 2.5 < eval_chars / eval_tokens < 5  # characters per token

  it = make_train_iterator(cfg, tok, seq_len=256, global_batch_size=16, seed=0)
  next(it)
  t3 = time.perf_counter()
  seg = np.stack([next(it)["segment_ids"] for _ in range(50)])
  tokens_per_s = seg.size / (time.perf_counter() - t3)
  eval_batches = len(list(make_eval_iterator(cfg, tok, seq_len=256, global_batch_size=16,
                                             num_batches=1000)))
  print(f"\nstdlib: {len(corpus.train)} train + {len(corpus.eval)} validation files; "
        f"corpus {t1 - t0:.1f}s, tokenizer {t2 - t1:.1f}s; validation {eval_chars} chars, "
        f"{eval_tokens} tokens ({eval_chars / eval_tokens:.2f} chars/token), {eval_batches} "
        f"eval batches of 16x256; train pipeline {tokens_per_s:,.0f} tokens/s, "
        f"{(seg > 0).mean():.1%} not padding")
  assert tokens_per_s > 50_000 and (seg > 0).mean() > 0.9


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
