"""The tokenized store: contents, reuse, atomic builds (exception and SIGKILL), bad data."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from zoo.config import ConfigError, DataConfig
from zoo.data import load_corpus, load_tokenizer, make_eval_set, open_store, store as store_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _final(cfg, tokenizer, split="train"):
  return store_lib.store_dir(cfg, load_corpus(cfg), tokenizer, split)


def test_store_holds_every_document_tokenized(local_cfg, tokenizer):
  store = open_store(local_cfg, tokenizer, "train")
  corpus = load_corpus(local_cfg)
  assert store.num_documents == len(corpus.train) and store.tokens.dtype == np.uint16
  for d in (0, store.num_documents // 2, store.num_documents - 1):
    expected = [tokenizer.bos_id, *tokenizer.encode(corpus.text(corpus.train[d])),
                tokenizer.eos_id]
    np.testing.assert_array_equal(store.document(d), expected)
  assert store.meta["tokenizer"] == tokenizer.fingerprint
  assert store.meta["num_tokens"] == len(store.tokens) == store.offsets[-1]


def test_store_is_built_once(local_cfg, tokenizer, monkeypatch):
  open_store(local_cfg, tokenizer, "train")
  monkeypatch.setattr(store_lib, "build", lambda *a: pytest.fail("rebuilt"))
  assert open_store(local_cfg, tokenizer, "train").num_documents > 0


def test_failed_build_leaves_nothing(fresh_cfg, tokenizer, monkeypatch):
  calls = []

  def failing(texts):
    calls.append(len(texts))
    if len(calls) == 3:
      raise RuntimeError("disk full")
    return [tokenizer.encode(t) for t in texts]

  monkeypatch.setattr(store_lib, "ENCODE_CHUNK", 4)
  monkeypatch.setattr(tokenizer, "encode_batch", failing)
  with pytest.raises(RuntimeError, match="disk full"):
    open_store(fresh_cfg, tokenizer, "train")
  parent = os.path.dirname(_final(fresh_cfg, tokenizer))
  assert os.listdir(parent) == []  # no final directory and no temporary one
  monkeypatch.undo()
  assert open_store(fresh_cfg, tokenizer, "train").num_documents == 23


_SLOW_BUILD = """
import sys, time
from zoo.config import DataConfig
from zoo.data import load_tokenizer, open_store, store
cfg = DataConfig(source="local_text", path=sys.argv[1], vocab_size=512, cache_dir=sys.argv[2])
tok = load_tokenizer(cfg)
store.ENCODE_CHUNK = 1
encode = tok.encode_batch
tok.encode_batch = lambda texts: (time.sleep(0.2), encode(texts))[1]
print("building", flush=True)
open_store(cfg, tok, "train")
"""


def test_killed_build_leaves_nothing_mistaken_for_complete(fresh_cfg, tokenizer):
  load_tokenizer(fresh_cfg)  # corpus and tokenizer cached, so the child starts building
  proc = subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, fresh_cfg.path,
                           fresh_cfg.cache_dir], cwd=ROOT, stdout=subprocess.PIPE,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT})
  final = _final(fresh_cfg, tokenizer)
  parent = os.path.dirname(final)
  deadline = time.time() + 120
  while time.time() < deadline and not (
      os.path.isdir(parent) and any(os.path.getsize(os.path.join(parent, t, "tokens.bin")) > 0
                                    for t in os.listdir(parent)
                                    if os.path.exists(os.path.join(parent, t, "tokens.bin")))):
    assert proc.poll() is None, "the build ended before it was killed"
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(final) and os.listdir(parent)  # only a .tmp-* directory
  assert all(name.startswith(".tmp-") for name in os.listdir(parent))
  store = open_store(fresh_cfg, tokenizer, "train")  # a later run builds it anew
  assert store.num_documents == 23 and store.offsets[-1] == len(store.tokens)


def test_store_of_another_tokenizer_errors_and_is_kept(fresh_cfg, tokenizer):
  store = open_store(fresh_cfg, tokenizer, "train")
  meta_path = os.path.join(store.directory, "meta.json")
  with open(meta_path) as f:
    meta = json.load(f)
  meta["tokenizer"] = "f" * 64  # as if another tokenizer had written it here
  with open(meta_path, "w") as f:
    json.dump(meta, f)
  before = sorted(os.listdir(store.directory))
  with pytest.raises(ConfigError, match="the store .* was written with") as e:
    open_store(fresh_cfg, tokenizer, "train")
  assert e.value.field == "data.tokenizer"
  assert sorted(os.listdir(store.directory)) == before


def test_empty_corpus_errors(tmp_path):
  (tmp_path / "text").mkdir()
  for name in ("a.txt", "b.txt"):
    (tmp_path / "text" / name).write_text("")
  cfg = DataConfig(source="local_text", path=str(tmp_path / "text"), vocab_size=512,
                   cache_dir=str(tmp_path / "cache"))
  with pytest.raises(ConfigError) as e:
    load_corpus(cfg)
  assert e.value.field == "data.path"


def test_split_with_no_documents_errors(tfds_cfg, fresh_cfg, tokenizer):
  with pytest.raises(ConfigError) as e:  # TFDS refuses to open an empty slice
    make_eval_set(dataclasses.replace(tfds_cfg, eval_split="test[:0]"), tokenizer, seq_len=32,
                  eval_tokens=1024)
  assert e.value.field == "data.eval_split"
  empty = dataclasses.replace(load_corpus(fresh_cfg), eval=[])  # any other source
  with pytest.raises(ConfigError, match="a split with documents") as e:
    open_store(fresh_cfg, tokenizer, "validation", corpus=empty)
  assert e.value.field == "data.eval_split"


def test_prebuild_command_builds_every_split(fresh_cfg, tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "zoo.data.prebuild", "--config", "configs/dense.py:tiny",
       "--config.data.source=local_text", f"--config.data.path={fresh_cfg.path}",
       "--config.data.vocab_size=512", f"--config.data.cache_dir={fresh_cfg.cache_dir}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "train: 23 documents" in proc.stdout and "validation: 1 documents" in proc.stdout
  tok = load_tokenizer(fresh_cfg)
  for split in ("train", "validation"):
    assert os.path.isfile(os.path.join(_final(fresh_cfg, tok, split), "meta.json"))
  shutil.rmtree(fresh_cfg.cache_dir)
