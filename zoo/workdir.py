"""Keeping a workdir safe: one writer at a time, atomic writes, storage probed before compiling.

A workdir holds days of accelerator time, so two runs must never write it at once. The lock
is a file created with O_EXCL (atomic on local disks and on NFS v3+) holding the writer's
host, pid, process start time and start date. A lock is stale, and taken over with a
message, when its holder is a dead process on this host (pid gone, or reused by a process
that started later), or, for a holder on another host, when the lock's heartbeat (its
mtime, refreshed every HEARTBEAT_S by a thread) is older than STALE_AFTER_S. Two hosts on a
filesystem without atomic exclusive create (some object-store mounts) are not protected.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time

LOCK_FILE = "train.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0


class WorkdirError(RuntimeError):
  """A workdir that cannot be used now; the message is one line saying why and what to do."""


class WorkdirLocked(WorkdirError):
  """Another live run holds the workdir."""


class StorageError(WorkdirError):
  """The workdir or checkpoint directory cannot be written (permissions, space, I/O)."""


def _start_ticks(pid: int) -> str | None:
  """The process's start time in clock ticks since boot (Linux), to detect reused pids."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _alive(pid: int, start_ticks: str | None) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # exists, owned by someone else
  now = _start_ticks(pid)
  return start_ticks is None or now is None or now == start_ticks


def _describe(holder: dict) -> str:
  since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
  return f"pid {holder.get('pid')} on {holder.get('host')} since {since}"


class Lock:
  """The one-writer lock of `workdir`; `acquire()` raises WorkdirLocked naming the holder."""

  def __init__(self, workdir: str, *, echo=print, stale_after_s: float = STALE_AFTER_S,
               heartbeat_s: float = HEARTBEAT_S):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.echo, self.stale_after_s, self.heartbeat_s = echo, stale_after_s, heartbeat_s
    self.me = {"host": socket.gethostname(), "pid": os.getpid(),
               "start_ticks": _start_ticks(os.getpid()), "started": time.time()}
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def acquire(self) -> None:
    for _ in range(3):  # a takeover race lost to another starter is retried
      if self._create():
        self._thread = threading.Thread(target=self._beat, daemon=True, name="workdir-lock")
        self._thread.start()
        return
      holder = self._read()
      if holder is None:
        continue  # released between our create and read
      reason = self._stale(holder)
      if reason is None:
        raise WorkdirLocked(
            f"{os.path.dirname(self.path)} is being trained by {_describe(holder)}; wait for "
            f"it to finish, stop it, or use another workdir (lock file {self.path})")
      self._take_over(holder, reason)
    raise WorkdirLocked(f"could not take the lock {self.path}: other runs keep starting")

  def _create(self) -> bool:
    try:
      fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      json.dump(self.me, f)
    return True

  def _read(self) -> dict | None:
    try:
      with open(self.path) as f:
        holder = json.load(f)
      holder["heartbeat"] = os.path.getmtime(self.path)
      return holder
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      # A holder killed between create and write leaves an empty file: judge it by age.
      return {"host": "?", "pid": None, "heartbeat": os.path.getmtime(self.path)}

  def _stale(self, holder: dict) -> str | None:
    if holder.get("host") == self.me["host"] and holder.get("pid") is not None:
      if not _alive(holder["pid"], holder.get("start_ticks")):
        return "its process is gone"
      return None
    age = time.time() - holder["heartbeat"]
    if age > self.stale_after_s:
      return f"no heartbeat for {age:.0f} s"
    return None

  def _take_over(self, holder: dict, reason: str) -> None:
    """Renames the stale lock aside (only one starter can), re-checks it, then drops it."""
    aside = f"{self.path}.stale-{self.me['host']}-{self.me['pid']}"
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return
    with contextlib.suppress(OSError, ValueError), open(aside) as f:
      moved = json.load(f)
      if (moved.get("pid"), moved.get("host")) != (holder.get("pid"), holder.get("host")):
        # Another starter took over in between and we moved its fresh lock: put it back.
        with contextlib.suppress(FileExistsError):
          os.link(aside, self.path)
        os.remove(aside)
        return
    os.remove(aside)
    self.echo(f"warning: taking over the lock of {_describe(holder)} in "
              f"{os.path.dirname(self.path)}: {reason}")

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_s):
      with contextlib.suppress(OSError):
        os.utime(self.path)

  def release(self) -> None:
    self._stop.set()
    holder = self._read()
    if holder and (holder.get("pid"), holder.get("host")) == (self.me["pid"], self.me["host"]):
      with contextlib.suppress(FileNotFoundError):
        os.remove(self.path)


@contextlib.contextmanager
def locked(workdir: str, *, enabled: bool = True, echo=print):
  """Holds the workdir's lock for the block; a workdir this call created and left empty is
  removed again, so a run rejected before writing anything leaves no trace."""
  if not enabled:
    yield
    return
  created = not os.path.isdir(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise StorageError(f"cannot create the workdir {workdir} ({_oserror(e)})") from e
  lock = Lock(workdir, echo=echo)
  lock.acquire()
  try:
    yield lock
  finally:
    lock.release()
    if created:
      with contextlib.suppress(OSError):
        os.rmdir(workdir)  # only if empty


def atomic_write(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file and a rename: readers see the old
  file or the new one, never a half-written one."""
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise StorageError(f"cannot write {path} ({_oserror(e)})") from e


def atomic_copy(source: str, path: str) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    shutil.copyfile(source, tmp)
    os.replace(tmp, path)
  except OSError as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise StorageError(f"cannot write {path} ({_oserror(e)})") from e


def probe(directory: str, *, need_bytes: int = 0, what: str = "directory") -> None:
  """Raises StorageError unless `directory` can be created and written and has roughly
  `need_bytes` free; run before compiling, so a bad disk costs seconds, not a first save."""
  created = not os.path.isdir(directory)
  try:
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".probe-{socket.gethostname()}-{os.getpid()}")
    with open(tmp, "wb") as f:
      f.write(b"zoo")
      f.flush()
      os.fsync(f.fileno())
    os.remove(tmp)
    free = shutil.disk_usage(directory).free
  except OSError as e:
    raise StorageError(f"the {what} {directory} is not writable ({_oserror(e)})") from e
  if free < need_bytes:
    if created:
      with contextlib.suppress(OSError):
        os.rmdir(directory)
    raise StorageError(
        f"the {what} {directory} has {free / 2**20:,.0f} MiB free; one checkpoint needs "
        f"about {need_bytes / 2**20:,.0f} MiB")


def _oserror(e: OSError) -> str:
  return f"{type(e).__name__}: {e.strerror or e}" if e.strerror else f"{type(e).__name__}: {e}"
