"""SentencePiece tokenizers: a user's `.model`, or a BPE model trained on the train split.

The trained model is lossless on any text: identity normalization, whitespace kept
(indentation matters in code), byte fallback for characters outside the vocabulary and
"\\n" as a piece of its own. Training reads a deterministic sample of about
`TRAIN_CHARS` characters of lines and uses one thread, so the same corpus always gives the
same model bytes; the model is cached by (corpus fingerprint, vocab size, trainer settings).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
from typing import Iterator

import sentencepiece as spm

from zoo.config import ConfigError, DataConfig
from zoo.data.cache import cache_root, digest, publish_file
from zoo.data.sources import Corpus, load_corpus

log = logging.getLogger(__name__)

TRAIN_CHARS = 8_000_000  # about 2.5 s of training; more barely improves compression
MAX_LINE_CHARS = 4096  # longer lines are cut: SentencePiece drops over-long sentences
# A run's copy of its tokenizer in the workdir, so eval.py needs nothing but the workdir.
TOKENIZER_FILE = "tokenizer.model"
MIN_TRAINED_VOCAB = 384  # 4 special ids + 256 bytes + "\n" + the corpus's common characters

TRAINER_SETTINGS = dict(
    model_type="bpe",
    byte_fallback=True,
    pad_id=0, unk_id=1, bos_id=2, eos_id=3,
    user_defined_symbols=["\n"],
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    add_dummy_prefix=False,
    allow_whitespace_only_pieces=True,
    split_digits=True,
    character_coverage=0.9995,
    hard_vocab_limit=False,  # a small corpus may not support the full vocabulary
    max_sentence_length=4 * MAX_LINE_CHARS,  # bytes
    input_sentence_size=0,  # we sample ourselves, deterministically
    shuffle_input_sentence=False,
    num_threads=1,  # more threads change the learned merges from run to run
    random_seed=0,
    minloglevel=2,
)


class Tokenizer:
  """A SentencePiece model; picklable (it carries the model bytes) for grain workers."""

  def __init__(self, path: str):
    self.path = path
    with open(path, "rb") as f:
      self._load(f.read())

  def _load(self, proto: bytes) -> None:
    self._proto = proto
    self._sp = spm.SentencePieceProcessor(model_proto=proto)
    self.fingerprint = hashlib.sha256(proto).hexdigest()
    self.vocab_size = self._sp.get_piece_size()
    self.pad_id, self.unk_id = self._sp.pad_id(), self._sp.unk_id()
    self.bos_id, self.eos_id = self._sp.bos_id(), self._sp.eos_id()

  def __getstate__(self):
    return {"path": self.path, "proto": self._proto}

  def __setstate__(self, state):
    self.path = state["path"]
    self._load(state["proto"])

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    """Encodes several texts at once, on every core (SentencePiece's own threads)."""
    return self._sp.encode(texts, num_threads=os.cpu_count() or 1)

  def decode(self, ids: list[int]) -> str:
    return self._sp.decode(list(map(int, ids)))

  def __repr__(self) -> str:
    return f"Tokenizer({self.path!r}, vocab_size={self.vocab_size})"


def load_tokenizer(data_cfg: DataConfig) -> Tokenizer:
  """data.tokenizer if set, else the cached (or newly trained) model for the corpus."""
  if data_cfg.tokenizer:
    if not os.path.isfile(data_cfg.tokenizer):
      raise ConfigError("data.tokenizer", data_cfg.tokenizer, "an existing SentencePiece .model file, or ''")
    try:
      tok = Tokenizer(data_cfg.tokenizer)
    except (RuntimeError, OSError) as e:
      raise ConfigError("data.tokenizer", data_cfg.tokenizer, f"a SentencePiece .model file ({e})") from e
    if tok.bos_id < 0 or tok.eos_id < 0:
      raise ConfigError("data.tokenizer", data_cfg.tokenizer, "a model with bos and eos ids")
  else:
    if data_cfg.vocab_size < MIN_TRAINED_VOCAB:
      raise ConfigError("data.vocab_size", data_cfg.vocab_size,
                        f">= {MIN_TRAINED_VOCAB} to train a byte-fallback tokenizer (or set data.tokenizer)")
    tok = _trained(data_cfg, load_corpus(data_cfg))
  # Equal, not merely large enough: unused embedding rows would count as parameters.
  if tok.vocab_size != data_cfg.vocab_size:
    raise ConfigError("data.vocab_size", data_cfg.vocab_size,
                      f"the tokenizer's vocabulary, {tok.vocab_size} ({tok.path}; a trained "
                      "tokenizer has fewer pieces when its corpus supports no more)")
  return tok


def _trained(data_cfg: DataConfig, corpus: Corpus) -> Tokenizer:
  key = digest({"corpus": corpus.fingerprint, "vocab_size": data_cfg.vocab_size,
                "settings": TRAINER_SETTINGS, "train_chars": TRAIN_CHARS,
                "max_line_chars": MAX_LINE_CHARS, "sentencepiece": spm.__version__})
  path = os.path.join(cache_root(data_cfg), "tokenizers", f"spm-{data_cfg.vocab_size}-{key[:16]}.model")
  if not os.path.isfile(path):
    log.info("training a %d-piece tokenizer on %s into %s", data_cfg.vocab_size, corpus.name, path)
    publish_file(path, train_model(_sample_lines(corpus, TRAIN_CHARS), data_cfg.vocab_size))
  return Tokenizer(path)


def train_model(lines: Iterator[str], vocab_size: int) -> bytes:
  """The bytes of a SentencePiece model trained on `lines` with TRAINER_SETTINGS."""
  model = io.BytesIO()
  spm.set_random_generator_seed(TRAINER_SETTINGS["random_seed"])
  settings = {k: v for k, v in TRAINER_SETTINGS.items() if k != "random_seed"}
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=lines, model_writer=model, vocab_size=vocab_size, **settings)
  except RuntimeError as e:  # e.g. the vocabulary cannot hold the corpus's characters
    raise ConfigError("data.vocab_size", vocab_size, f"a size SentencePiece can train ({e})") from e
  return model.getvalue()


def _sample_lines(corpus: Corpus, budget: int) -> Iterator[str]:
  """About `budget` chars of non-blank lines, evenly spread over the train split."""
  # Read up to 4x the budget of whole documents, then keep every stride-th line of them.
  docs = list(corpus.train_sample(4 * budget))
  if not docs:
    return
  stride = max(1, math.ceil(sum(map(len, docs)) / budget))
  k = 0
  for text in docs:
    for line in text.split("\n"):
      if not line.strip():
        continue
      k += 1
      if k % stride == 0:
        for start in range(0, len(line), MAX_LINE_CHARS):
          yield line[start:start + MAX_LINE_CHARS]
