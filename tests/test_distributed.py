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
