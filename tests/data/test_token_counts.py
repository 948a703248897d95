"""Token counts of the training corpus, and the balanced Hash-layer map train.py builds from
them (Roller et al. 2021)."""

import dataclasses
import os

import numpy as np

from zoo.families.mixture_of_experts import MoeConfig
from zoo.data import load_corpus, token_counts, train_token_counts
from zoo.models import hashing
from zoo.testing import tiny_config, tiny_model
from zoo.families import mixture_of_experts


def _train_ids(cfg, tokenizer):
  corpus = load_corpus(cfg)
  return [np.asarray([tokenizer.bos_id, *tokenizer.encode(corpus.text(r)), tokenizer.eos_id])
          for r in corpus.train]


def test_counts_are_the_train_split_tokens_and_are_cached(local_cfg, tokenizer):
  path = train_token_counts(local_cfg, tokenizer)
  counts = np.load(path)
  want = np.bincount(np.concatenate(_train_ids(local_cfg, tokenizer)),
                     minlength=local_cfg.vocab_size)
  np.testing.assert_array_equal(counts, want)
  stamp = os.stat(path).st_mtime_ns
  assert train_token_counts(local_cfg, tokenizer) == path
  assert os.stat(path).st_mtime_ns == stamp  # read, not rebuilt


def test_a_budget_counts_an_even_spread_of_documents(local_cfg, tokenizer):
  corpus = load_corpus(local_cfg)
  some = token_counts.count_corpus(corpus, tokenizer, local_cfg.vocab_size, max_chars=5_000)
  every = token_counts.count_corpus(corpus, tokenizer, local_cfg.vocab_size)
  assert 0 < some.sum() < every.sum() and np.all(some <= every)


def test_the_balanced_map_evens_expert_loads_on_the_training_data(local_cfg, tokenizer):
  counts = np.load(train_token_counts(local_cfg, tokenizer))
  ids = np.concatenate(_train_ids(local_cfg, tokenizer))
  experts = 8

  def max_load(table):  # most loaded expert over the mean load
    return np.bincount(table[ids], minlength=experts).max() * experts / ids.size

  balanced = max_load(hashing.balanced_table(counts, experts))
  random = max_load(hashing.random_table(local_cfg.vocab_size, experts, seed=0))
  # Greedy assignment is within one token's share of perfect balance.
  assert balanced <= 1 + counts.max() * experts / ids.size
  assert balanced < random, (balanced, random)


def test_train_fills_in_the_counts_for_a_balanced_hash_only(local_cfg, tokenizer):
  def cfg_with(**moe):
    model = tiny_model(vocab_size=512, pattern=("dense", "moe"),
                       moe=MoeConfig(router="hash", capacity_factor=0.0, **moe))
    return tiny_config(model=model, data=local_cfg)

  got = mixture_of_experts.prepare(cfg_with(hash_kind="balanced"), tokenizer, lambda _: None)
  assert got.model.moe.hash_frequencies == train_token_counts(local_cfg, tokenizer)
  for cfg in (cfg_with(hash_kind="random"),
              cfg_with(hash_kind="balanced", hash_frequencies=got.model.moe.hash_frequencies),
              dataclasses.replace(cfg_with(hash_kind="balanced"),
                                  model=tiny_model(vocab_size=512))):
    assert mixture_of_experts.prepare(cfg, tokenizer, lambda _: None) is cfg
