"""Where a process sits in a run: flags, then JAX_* environment variables, else one process."""

import pytest

from zoo.training import distributed


@pytest.fixture(autouse=True)
def no_cluster_env(monkeypatch):
  for var in distributed.ENV.values():
    monkeypatch.delenv(var, raising=False)


def test_one_process_without_flags_or_env():
  assert distributed.resolve() is None
  assert distributed.initialize() is False  # nothing initialised, nothing touched


def test_flags_win_over_environment(monkeypatch):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAX_PROCESS_ID", "3")
  assert distributed.resolve(process_id=1) == distributed.Cluster("10.0.0.1:1234", 4, 1)


@pytest.mark.parametrize("given, message", [
    (dict(coordinator_address="h:1", num_processes=2), "--process_id .* is missing"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2), "--process_id=2 is invalid"),
])
def test_incomplete_or_invalid_cluster_is_one_line(given, message):
  with pytest.raises(ValueError, match=message):
    distributed.resolve(**given)


def test_bad_environment_value(monkeypatch):
  monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
  with pytest.raises(ValueError, match=r"\$JAX_NUM_PROCESSES='two' is invalid"):
    distributed.resolve()


def test_processes_read_their_rows_of_the_one_process_batches(corpus, monkeypatch):
  """What the multi-process equality needs from the data: the global batches do not depend
  on the process count, and each process gets its rows of them (contiguous by default, or
  the rows its devices hold)."""
  import jax
  import numpy as np

  from zoo.config import DataConfig
  from zoo.data import load_tokenizer, make_eval_set, make_train_iterator

  path, cache = corpus
  cfg = DataConfig(source="local_text", path=path, cache_dir=cache, vocab_size=512)
  tok = load_tokenizer(cfg)
  kw = dict(seq_len=32, global_batch_size=4)
  one = make_train_iterator(cfg, tok, seed=1, **kw)
  whole = [next(one) for _ in range(3)]
  eval_set = make_eval_set(cfg, tok, seq_len=32, eval_tokens=256)
  whole_eval = list(eval_set.batches(4))
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  for index, rows in ((0, [0, 1]), (1, [2, 3]), (0, [3, 1])):
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    it = make_train_iterator(cfg, tok, seed=1, rows=rows if index == 0 and rows[0] == 3
                             else None, **kw)
    for batch in whole:
      mine = next(it)
      for key in batch:
        np.testing.assert_array_equal(mine[key], batch[key][rows])
    mine_eval = list(eval_set.batches(4, rows=rows if rows[0] == 3 else None))
    assert len(mine_eval) == len(whole_eval)
    for mine, batch in zip(mine_eval, whole_eval):
      np.testing.assert_array_equal(mine["inputs"], batch["inputs"][rows])
