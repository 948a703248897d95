"""Corpora: deterministic splits, fingerprints, the atomic cache, errors, TFDS by name."""

import dataclasses
import os

import pytest

from zoo.config import ConfigError, DataConfig
from zoo.data import cache, documents, load_corpus, sources


def _keys(split):
  return sorted(r["key"].decode() for r in split)


def test_split_is_deterministic_and_fingerprint_stable(local_cfg, fresh_cfg):
  a, b = load_corpus(local_cfg), load_corpus(fresh_cfg)  # built twice, in two caches
  assert a.fingerprint == b.fingerprint
  assert _keys(a.train) == _keys(b.train) and _keys(a.eval) == _keys(b.eval)
  assert len(a.eval) >= 1 and len(a.train) >= 1
  assert not set(_keys(a.train)) & set(_keys(a.eval))
  assert len(a.train) + len(a.eval) == 24
  assert "sub/doc00.txt" in _keys(a.train) + _keys(a.eval)


def test_fingerprint_changes_with_content_and_keeps_other_files_split(tmp_path, make_corpus):
  root = make_corpus(tmp_path / "text", num_files=60)
  cfg = DataConfig(source="local_text", path=str(root), cache_dir=str(tmp_path / "cache"))
  before = load_corpus(cfg)
  (root / "doc01.txt").write_text("changed\n")
  after = load_corpus(cfg)
  assert after.fingerprint != before.fingerprint
  assert len(os.listdir(tmp_path / "cache" / "corpora")) == 2
  (root / "extra.txt").write_text("one more file\n")
  grown = load_corpus(cfg)
  assert set(_keys(before.eval)) <= set(_keys(grown.eval))  # a split is per file


def test_existing_cache_is_reused_not_rewritten(local_cfg):
  load_corpus(local_cfg)
  entries = os.listdir(os.path.join(local_cfg.cache_dir, "corpora"))
  stat = [os.stat(os.path.join(local_cfg.cache_dir, "corpora", e)) for e in entries]
  sources._FINGERPRINTS.clear()  # also when the process has not seen the files before
  load_corpus(local_cfg)
  assert os.listdir(os.path.join(local_cfg.cache_dir, "corpora")) == entries
  assert [os.stat(os.path.join(local_cfg.cache_dir, "corpora", e)) for e in entries] == stat


def test_failed_build_leaves_no_cache_entry(fresh_cfg, monkeypatch):
  def broken(self, docs):
    yield docs[0][0], {"text": docs[0][1], "key": docs[0][0]}
    raise KeyboardInterrupt("killed mid-build")
  monkeypatch.setattr(sources.ZooText, "_generate_examples", broken)
  with pytest.raises(KeyboardInterrupt):
    load_corpus(fresh_cfg)
  assert os.listdir(os.path.join(fresh_cfg.cache_dir, "corpora")) == []
  monkeypatch.undo()
  assert len(load_corpus(fresh_cfg).train) > 0


def test_publish_never_replaces_an_existing_entry(tmp_path):
  final = tmp_path / "entry"
  final.mkdir()
  (final / "marker").write_text("first")
  with cache.building_dir(str(final)) as tmp:
    (tmp_path / "seen").write_text(tmp)
    open(os.path.join(tmp, "marker"), "w").write("second")
  assert (final / "marker").read_text() == "first"
  assert sorted(os.listdir(tmp_path)) == ["entry", "seen"]  # the temp dir is gone
  cache.publish_file(str(tmp_path / "f"), b"first")
  cache.publish_file(str(tmp_path / "f"), b"second")
  assert (tmp_path / "f").read_bytes() == b"first"
  assert sorted(os.listdir(tmp_path)) == ["entry", "f", "seen"]


def test_single_file_is_cut_into_documents(tmp_path):
  text = "".join(f"paragraph {i} " + "word " * 200 + "\n\n" for i in range(100))
  (tmp_path / "book.txt").write_text(text)
  cfg = DataConfig(source="local_text", path=str(tmp_path / "book.txt"), cache_dir=str(tmp_path / "c"))
  corpus = load_corpus(cfg)
  assert len(corpus.train) > 10 and len(corpus.eval) >= 1
  pieces = sorted((r["key"].decode(), corpus.text(r)) for r in list(corpus.train) + list(corpus.eval))
  assert "".join(t for _, t in pieces) == text
  assert all(t.endswith("\n\n") for _, t in pieces)


def test_glob_and_cut_helpers(tmp_path, make_corpus):
  make_corpus(tmp_path / "t", num_files=6)
  files = documents.local_files(str(tmp_path / "t" / "**" / "*.txt"))
  assert len(files.paths) == 6 and files.keys[0] == "doc01.txt"
  assert documents._cut("x" * 50, 10) == ["x" * 40, "x" * 10]  # no line ends: hard cuts


@pytest.mark.parametrize("source,path,field", [
    ("local_text", "", "data.path"),
    ("local_text", "/no/such/dir", "data.path"),
    ("local_text", "EMPTY_DIR", "data.path"),
    ("local_text", "EMPTY_FILES", "data.path"),
    ("nonsense", "", "data.source"),
    ("tfds", "", "data.name"),
])
def test_bad_sources_name_the_field(tmp_path, source, path, field):
  (tmp_path / "empty").mkdir()
  (tmp_path / "blank").mkdir()
  (tmp_path / "blank" / "a.txt").write_text("")
  path = {"EMPTY_DIR": str(tmp_path / "empty"), "EMPTY_FILES": str(tmp_path / "blank")}.get(path, path)
  cfg = DataConfig(source=source, path=path, cache_dir=str(tmp_path / "cache"))
  with pytest.raises(ConfigError) as e:
    load_corpus(cfg)
  assert e.value.field == field


# A registered TFDS dataset (tfds_cfg in conftest.py), prepared in a tmp dir, read by name.


def test_tfds_by_name(tfds_cfg):
  corpus = load_corpus(tfds_cfg)
  assert (len(corpus.train), len(corpus.eval)) == (200, 20)
  assert corpus.text(corpus.eval[3]).startswith("sentence ")
  assert load_corpus(tfds_cfg).fingerprint == corpus.fingerprint
  half = load_corpus(dataclasses.replace(tfds_cfg, train_split="train[:50%]"))
  assert len(half.train) == 100 and half.fingerprint != corpus.fingerprint


@pytest.mark.parametrize("change,field", [
    ({"name": "zoo_no_such_dataset"}, "data.name"),
    ({"text_feature": "text"}, "data.text_feature"),
    ({"eval_split": "validation"}, "data.eval_split"),
])
def test_tfds_errors(tfds_cfg, change, field):
  with pytest.raises(ConfigError) as e:
    load_corpus(dataclasses.replace(tfds_cfg, **change))
  assert e.value.field == field
