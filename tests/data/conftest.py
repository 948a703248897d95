"""Fixtures for the data tests: a small deterministic text corpus and a tmp cache."""

import random

import numpy as np
import pytest
import tensorflow_datasets as tfds

from zoo.config import DataConfig

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hex "
         "jovial zebras and python code def return import class self if else for in").split()


def write_corpus(root, num_files=24, seed=0):
  """Text files of random sentences (some indented, some unicode), 1-6K chars each."""
  rng = random.Random(seed)
  root.mkdir(parents=True, exist_ok=True)
  for i in range(num_files):
    lines = []
    for _ in range(rng.randint(20, 120)):
      indent = " " * rng.choice((0, 0, 4, 8))
      words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
      lines.append(indent + " ".join(words) + rng.choice((".", ":", "", " — ok ✓")))
    sub = root / ("sub" if i % 3 == 0 else "")
    sub.mkdir(exist_ok=True)
    (sub / f"doc{i:02d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
  return root


@pytest.fixture(scope="session")
def make_corpus():
  """write_corpus, for tests that need a corpus of their own."""
  return write_corpus


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
  return write_corpus(tmp_path_factory.mktemp("corpus") / "text")


@pytest.fixture(scope="session")
def local_cfg(corpus_dir, tmp_path_factory):
  """A local_text config with a session-wide cache (corpus and tokenizer built once)."""
  return DataConfig(source="local_text", path=str(corpus_dir), vocab_size=512,
                    cache_dir=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tokenizer(local_cfg):
  from zoo.data import load_tokenizer
  return load_tokenizer(local_cfg)


@pytest.fixture
def fresh_cfg(corpus_dir, tmp_path):
  """Like local_cfg but with an empty cache of its own."""
  return DataConfig(source="local_text", path=str(corpus_dir), vocab_size=512,
                    cache_dir=str(tmp_path / "cache"))


class ZooTestTinyText(tfds.core.GeneratorBasedBuilder):
  """Registers as "zoo_test_tiny_text"."""

  VERSION = tfds.core.Version("1.0.0")
  code_path = None  # see zoo.data.sources.ZooText

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {"sentence": tfds.features.Text(), "label": tfds.features.Scalar(np.int64)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(200), "test": self._generate_examples(20)}

  def _generate_examples(self, n):
    for i in range(n):
      yield f"{n}-{i}", {"sentence": f"sentence {i} of {n}: " + "la " * (i % 17), "label": i}


@pytest.fixture(scope="session")
def tfds_cfg(tmp_path_factory, tokenizer):
  """The tiny TFDS dataset with the local corpus's tokenizer: its 220 sentences support a
  vocabulary of only about 300 pieces, fewer than a trained tokenizer may have."""
  data_dir = tmp_path_factory.mktemp("tfds")
  ZooTestTinyText(data_dir=str(data_dir), file_format="array_record").download_and_prepare(
      file_format="array_record")
  return DataConfig(source="tfds", name="zoo_test_tiny_text", path=str(data_dir),
                    text_feature="sentence", eval_split="test",
                    vocab_size=tokenizer.vocab_size, tokenizer=tokenizer.path,
                    cache_dir=str(tmp_path_factory.mktemp("cache")))
