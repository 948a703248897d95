"""Tokenizers: training, caching, determinism, lossless round trips, vocabulary checks."""

import dataclasses
import os
import pickle

import pytest

from zoo.config import ConfigError
from zoo.data import load_tokenizer, tokenizer as tokenizer_lib


def test_trained_tokenizer_fits_and_has_the_special_ids(tokenizer, local_cfg):
  assert 300 < tokenizer.vocab_size <= local_cfg.vocab_size
  assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
  assert tokenizer.path.startswith(local_cfg.cache_dir)
  assert len(tokenizer.fingerprint) == 64


@pytest.mark.parametrize("text", [
    "the quick brown fox",
    "def f(x):\n    return x  # two  spaces\n\n\tTab\n",
    "  leading and trailing  \n",
    "unseen: Ωμέγα, 漢字, emoji 🦊, nul \x00 byte",
    "",
])
def test_round_trip_is_lossless(tokenizer, text):
  ids = tokenizer.encode(text)
  assert all(0 <= i < tokenizer.vocab_size for i in ids)
  assert tokenizer.decode(ids) == text


def test_second_load_uses_the_cache(local_cfg, tokenizer, monkeypatch):
  def no_training(*args, **kwargs):
    raise AssertionError("retrained")
  monkeypatch.setattr(tokenizer_lib, "train_model", no_training)
  again = load_tokenizer(local_cfg)
  assert again.fingerprint == tokenizer.fingerprint and again.path == tokenizer.path


def test_training_is_deterministic(fresh_cfg, tokenizer):
  assert load_tokenizer(fresh_cfg).fingerprint == tokenizer.fingerprint  # another cache


def test_pickles_for_grain_workers(tokenizer):
  clone = pickle.loads(pickle.dumps(tokenizer))
  assert clone.encode("def x") == tokenizer.encode("def x") and clone.path == tokenizer.path


def test_user_model(local_cfg, tokenizer):
  cfg = dataclasses.replace(local_cfg, tokenizer=tokenizer.path)
  assert load_tokenizer(cfg).fingerprint == tokenizer.fingerprint


@pytest.mark.parametrize("vocab_size", [300, 1000])
def test_user_model_of_another_vocab_size_errors(local_cfg, tokenizer, vocab_size):
  cfg = dataclasses.replace(local_cfg, tokenizer=tokenizer.path, vocab_size=vocab_size)
  with pytest.raises(ConfigError, match="tokenizer's vocabulary, 512") as e:
    load_tokenizer(cfg)
  assert e.value.field == "data.vocab_size"


def test_trained_vocab_smaller_than_asked_errors(local_cfg):
  with pytest.raises(ConfigError, match="tokenizer's vocabulary") as e:
    load_tokenizer(dataclasses.replace(local_cfg, vocab_size=4096))  # the corpus supports ~530
  assert e.value.field == "data.vocab_size"


def test_bad_user_model_errors(local_cfg, tmp_path):
  (tmp_path / "junk.model").write_bytes(b"not a model")
  for path in (str(tmp_path / "missing.model"), str(tmp_path / "junk.model")):
    with pytest.raises(ConfigError) as e:
      load_tokenizer(dataclasses.replace(local_cfg, tokenizer=path))
    assert e.value.field == "data.tokenizer"


def test_too_small_vocab_to_train_errors_before_reading_data(local_cfg, monkeypatch):
  monkeypatch.setattr(tokenizer_lib, "load_corpus", lambda cfg: pytest.fail("read the corpus"))
  with pytest.raises(ConfigError) as e:
    load_tokenizer(dataclasses.replace(local_cfg, vocab_size=100))
  assert e.value.field == "data.vocab_size"


def test_cache_key_depends_on_vocab_size(local_cfg, tokenizer):
  bigger = load_tokenizer(dataclasses.replace(local_cfg, vocab_size=500))
  assert bigger.path != tokenizer.path
  assert len(os.listdir(os.path.dirname(tokenizer.path))) >= 2
