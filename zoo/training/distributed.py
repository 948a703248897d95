"""Multi-host start-up: one program, many processes (JAX multi-controller).

A run is one of several processes when it is on a Cloud TPU VM slice (JAX finds the
coordinator, process count and id itself), or when the coordinator address, process count
and process id are given, as flags or as the environment variables JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID (flags win). Otherwise the run is a single process and
nothing is initialised. `initialize` must run before anything touches a JAX backend.

Failure: every process sends heartbeats to the coordinator (process 0). When one stops
(killed, crashed, or the coordinator is gone), the JAX runtime terminates the others within
about `heartbeat_timeout_s`, with "Terminating process because the JAX distributed service
detected fatal errors" on stderr. A Python error in one process is made to look the same:
`fail_fast` prints it and ends the process at once, rather than letting it wait at the
runtime's shutdown barrier while the others wait for it inside a collective.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import sys
import traceback

import jax
import numpy as np

ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}


@dataclasses.dataclass(frozen=True)
class Cluster:
  """Where this process sits; `coordinator_address` None means JAX detects it (TPU VM)."""

  coordinator_address: str | None
  num_processes: int | None
  process_id: int | None


def define_flags():
  """The entry points' flags: --coordinator_address, --num_processes, --process_id, and the
  failure-detection timeouts. Returns a function giving `initialize`'s keyword arguments."""
  from absl import flags
  defined = {
      "coordinator_address": flags.DEFINE_string(
          "coordinator_address", None, "host:port of process 0 (default: "
          "$JAX_COORDINATOR_ADDRESS; found automatically on a Cloud TPU VM)."),
      "num_processes": flags.DEFINE_integer(
          "num_processes", None, "Processes in the run (default: $JAX_NUM_PROCESSES)."),
      "process_id": flags.DEFINE_integer(
          "process_id", None, "This process, 0 .. num_processes - 1 (default: $JAX_PROCESS_ID)."),
      "heartbeat_timeout_s": flags.DEFINE_integer(
          "heartbeat_timeout_s", 100, "A process silent this long is dead: the others stop."),
      "initialization_timeout_s": flags.DEFINE_integer(
          "initialization_timeout_s", 300, "How long to wait for every process to join."),
  }
  return lambda: {name: flag.value for name, flag in defined.items()}


def on_cloud_tpu_vm() -> bool:
  """True on a Cloud TPU VM with TPU chips and libtpu (JAX checks this when imported)."""
  from jax._src import cloud_tpu_init  # no public equivalent in jax 0.11.2
  return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def resolve(coordinator_address=None, num_processes=None, process_id=None) -> Cluster | None:
  """The cluster from flags, else environment variables, else a TPU VM; None: one process."""
  given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
           "process_id": process_id}
  for name, var in ENV.items():
    if given[name] is None and os.environ.get(var):
      value = os.environ[var]
      given[name] = value if name == "coordinator_address" else _int(var, value)
  if all(v is None for v in given.values()):
    return Cluster(None, None, None) if on_cloud_tpu_vm() else None
  missing = [name for name, value in given.items() if value is None]
  if missing:
    raise ValueError(f"--{missing[0]} (or ${ENV[missing[0]]}) is missing: a multi-process run "
                     "needs --coordinator_address, --num_processes and --process_id")
  if given["num_processes"] < 1 or not 0 <= given["process_id"] < given["num_processes"]:
    raise ValueError(f"--process_id={given['process_id']} is invalid: allowed 0 .. "
                     f"num_processes - 1 = {given['num_processes'] - 1}")
  return Cluster(**given)


def _int(var: str, value: str) -> int:
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"${var}={value!r} is invalid: allowed an integer") from None


def initialize(coordinator_address=None, num_processes=None, process_id=None, *,
               heartbeat_timeout_s: int = 100, initialization_timeout_s: int = 300) -> bool:
  """Joins the multi-process runtime when the run is one of several processes.

  Returns True when it initialised JAX's distributed runtime. On CPU the cross-process
  collectives are gloo's. Raises ValueError (one line) on an incomplete or invalid cluster.
  """
  cluster = resolve(coordinator_address, num_processes, process_id)
  if cluster is None or cluster.num_processes == 1:
    return False
  if jax.config.jax_cpu_collectives_implementation is None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
      cluster.coordinator_address, cluster.num_processes, cluster.process_id,
      heartbeat_timeout_seconds=heartbeat_timeout_s,
      initialization_timeout=initialization_timeout_s)
  return True


def is_primary() -> bool:
  """Process 0: the one that prints, shows progress and writes logs."""
  return jax.process_index() == 0


def echo(*args, **kwargs) -> None:
  """print on process 0 only."""
  if is_primary():
    print(*args, **kwargs)


@contextlib.contextmanager
def fail_fast():
  """In a multi-process run, an uncaught error prints and ends this process immediately, so
  the others see its heartbeats stop and stop too, instead of all waiting on each other."""
  try:
    yield
  except BaseException as e:  # noqa: BLE001
    if jax.process_count() == 1 or isinstance(e, SystemExit) and not e.code:
      raise
    if isinstance(e, SystemExit):
      print(e.code, file=sys.stderr)
    else:
      traceback.print_exc()
    print(f"error: process {jax.process_index()} of {jax.process_count()} failed "
          f"({type(e).__name__}: {e}); stopping it so the others stop too", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def check_same(value: str, what: str) -> None:
  """Raises ValueError unless every process has the same `value` (e.g. a fingerprint)."""
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils
  digest = np.frombuffer(hashlib.sha256(value.encode()).digest()[:8], np.int64)
  everyone = np.asarray(multihost_utils.process_allgather(digest)).reshape(-1)
  differ = [i for i, d in enumerate(everyone) if d != everyone[0]]
  if differ:
    raise ValueError(f"{what} differs between process 0 and process {differ[0]}: every process "
                     "must see the same one")
