"""Token frequencies of a training corpus, for the balanced map of Hash layers.

Roller et al. 2021 ("Hash Layers For Large Sparse Models") balance their hash by the token
frequencies of the training data, so every expert gets about the same number of tokens.
`train_token_counts` counts the tokens the model will see, `[bos] + encode(text) + [eos]`
per document, over the train split (or, for a corpus larger than `max_chars`, over documents
spread evenly through it up to about that many characters), and caches the counts in the
data cache under a key of the corpus, the tokenizer and the budget, so a rerun or a second
run reads them in milliseconds.
"""

from __future__ import annotations

import io
import logging
import os

import numpy as np

from zoo.config import DataConfig
from zoo.data.cache import cache_root, digest, publish_file
from zoo.data.sources import Corpus, load_corpus
from zoo.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

MAX_CHARS = 100_000_000  # ~25M tokens of English: frequencies well past what balancing needs


def count_tokens(token_lists, vocab_size: int) -> np.ndarray:
  """int64 [vocab_size] counts of an iterable of token-id lists."""
  counts = np.zeros(vocab_size, np.int64)
  for ids in token_lists:
    counts += np.bincount(np.asarray(ids, np.int64), minlength=vocab_size)[:vocab_size]
  return counts


def count_corpus(corpus: Corpus, tokenizer: Tokenizer, vocab_size: int,
                 max_chars: int = MAX_CHARS) -> np.ndarray:
  """int64 [vocab_size] counts over the train split's documents (or an even spread of them)."""
  def documents():
    chars = 0
    for text in corpus.train_sample(max_chars):
      yield [tokenizer.bos_id, *tokenizer.encode(text), tokenizer.eos_id]
      chars += len(text)
      if chars >= max_chars:
        return
  return count_tokens(documents(), vocab_size)


def train_token_counts(data_cfg: DataConfig, tokenizer: Tokenizer,
                       max_chars: int = MAX_CHARS) -> str:
  """Path of the cached .npy of the training corpus's token counts (built on first use)."""
  corpus = load_corpus(data_cfg)
  key = digest({"corpus": corpus.fingerprint, "tokenizer": tokenizer.fingerprint,
                "vocab_size": data_cfg.vocab_size, "max_chars": max_chars})
  path = os.path.join(cache_root(data_cfg), "token_counts", f"counts-{key[:16]}.npy")
  if not os.path.isfile(path):
    log.info("counting the tokens of %s for a balanced hash into %s", corpus.name, path)
    buffer = io.BytesIO()
    np.save(buffer, count_corpus(corpus, tokenizer, data_cfg.vocab_size, max_chars),
            allow_pickle=False)
    publish_file(path, buffer.getvalue())
  return path
