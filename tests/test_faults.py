"""Fault injection: each test injects one fault into a workdir, then checks that nothing
already on disk was lost (checkpoints, metrics.jsonl with each step once, config.json,
eval.json) and that the user saw one line.

Most faults are injected in-process into tiny runs (zoo.testing); subprocesses of train.py
and eval.py are used only where the exit itself is the point (the one-line CLI messages, a
failed save that must not wait on orbax's threads). One good run is shared and copied.
"""

import errno
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo import checkpoint, training, workdir as workdir_lib
from zoo.config import ConfigError, DataConfig, MeshConfig, from_configdict, validate
from zoo.testing import tiny_config, with_model
from zoo.training import restore, step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards hex jovial zebras".split()


@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory):
  root = tmp_path_factory.mktemp("corpus")
  rng = np.random.default_rng(0)
  for i in range(12):
    lines = [" ".join(rng.choice(WORDS, rng.integers(3, 12))) for _ in range(80)]
    (root / f"d{i}.txt").write_text("\n".join(lines) + "\n")
  return DataConfig(source="local_text", path=str(root), vocab_size=400,
                    cache_dir=str(tmp_path_factory.mktemp("cache")))


def _cfg(data_cfg, **overrides):
  base = dict(steps=6, checkpoint_every=3, log_every=1, eval_tokens=0, keep_checkpoints=2,
              data=data_cfg, mesh=MeshConfig(data=-1))
  cfg = tiny_config(**{**base, **overrides})
  cfg = with_model(cfg, vocab_size=data_cfg.vocab_size)
  validate(cfg, jax.device_count())  # the 8 fake devices of conftest
  return cfg


class Echo(list):
  def __call__(self, line):
    self.append(str(line))


def _steps(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)["step"] for line in f]


def _tree_digest(workdir):
  """Every file's path and content hash (and every directory), to compare byte for byte."""
  out = {}
  for root, dirs, files in os.walk(workdir):
    for d in dirs:
      out[os.path.relpath(os.path.join(root, d), workdir)] = "dir"
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        out[os.path.relpath(os.path.join(root, name), workdir)] = hashlib.sha1(f.read()).hexdigest()
  return out


@pytest.fixture(scope="module")
def good(data_cfg, tmp_path_factory):
  """A 6-step run with checkpoints 3 and 6, started in a workdir where a SIGKILL before the
  first checkpoint committed left metrics of steps 1-2, half a line and a partial save."""
  workdir = str(tmp_path_factory.mktemp("good"))
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.write('{"step": 1, "loss": 9.0}\n{"step": 2, "loss": 8.0}\n{"step": 3, "lo')
  os.makedirs(os.path.join(workdir, "checkpoints", "3.orbax-checkpoint-tmp-7", "state"))
  echo = Echo()
  training.train(_cfg(data_cfg), workdir, echo=echo)
  return workdir, echo


def _copy(good, tmp_path):
  target = str(tmp_path / "run")
  shutil.copytree(good[0], target)
  return target


def test_sigkill_before_the_first_checkpoint_logs_each_step_once(good):
  workdir, _ = good
  assert _steps(workdir) == [1, 2, 3, 4, 5, 6]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  assert not os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))  # released


# -- 1. one writer -------------------------------------------------------------------------

def test_a_second_writer_stops_with_one_line_and_changes_nothing(good, data_cfg, tmp_path):
  workdir = _copy(good, tmp_path)
  holder = workdir_lib.Lock(workdir)
  holder.acquire()
  before = _tree_digest(workdir)
  with pytest.raises(workdir_lib.WorkdirLocked) as e:
    training.train(_cfg(data_cfg, steps=9), workdir, echo=Echo())
  assert f"is being trained by pid {os.getpid()} on {socket.gethostname()} since" in str(e.value)
  assert len(str(e.value).splitlines()) == 1
  assert _tree_digest(workdir) == before
  holder.release()


def test_a_stale_lock_is_taken_over_with_a_message(tmp_path):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  with open(tmp_path / workdir_lib.LOCK_FILE, "w") as f:  # left by a killed run on this host
    json.dump({"host": socket.gethostname(), "pid": dead.pid, "start_ticks": "1",
               "started": time.time() - 60}, f)
  echo = Echo()
  with workdir_lib.locked(str(tmp_path), echo=echo):
    assert json.loads((tmp_path / workdir_lib.LOCK_FILE).read_text())["pid"] == os.getpid()
  assert len(echo) == 1 and "taking over the lock of pid" in echo[0] and "gone" in echo[0]
  # Another host's lock is stale only once its heartbeat is old.
  with open(tmp_path / workdir_lib.LOCK_FILE, "w") as f:
    json.dump({"host": "other-host", "pid": 1, "started": time.time()}, f)
  with pytest.raises(workdir_lib.WorkdirLocked, match="pid 1 on other-host"):
    workdir_lib.Lock(str(tmp_path)).acquire()
  old = time.time() - workdir_lib.STALE_AFTER_S - 5
  os.utime(tmp_path / workdir_lib.LOCK_FILE, (old, old))
  lock = workdir_lib.Lock(str(tmp_path), echo=echo)
  lock.acquire()
  assert "no heartbeat for" in echo[-1]
  lock.release()
  assert not os.listdir(tmp_path)


# -- 2. nothing written until compatible ---------------------------------------------------

def test_a_rejected_resume_leaves_the_workdir_byte_for_byte(good, data_cfg, tmp_path):
  workdir = _copy(good, tmp_path)
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    f.write('{"loss": 5.0}')
  before = _tree_digest(workdir)
  other = with_model(_cfg(data_cfg, steps=9), d_model=64)
  with pytest.raises(checkpoint.CheckpointMismatch) as e:
    training.train(other, workdir, echo=Echo())
  assert "model.d_model=32; this run has model.d_model=64" in str(e.value)
  assert len(str(e.value).splitlines()) == 1
  assert _tree_digest(workdir) == before


# -- 3. divergence guard -------------------------------------------------------------------

def test_nan_and_infinity_are_refused_at_start_up():
  from configs import dense
  for value in (float("nan"), float("inf")):
    cd = dense.get_config("tiny")
    cd.optimizer.lr = value
    with pytest.raises(ConfigError, match="optimizer.lr=.* allowed a finite number"):
      from_configdict(cd)


@pytest.fixture
def nan_at_step(monkeypatch):
  """Makes the loss of one step (1-based) NaN, as a diverging run would."""
  def inject(bad_step):
    original = step_lib.loss_and_grads

    def poisoned(trainer, state, batch):
      loss, grads, aux = original(trainer, state, batch)
      return jnp.where(state.step + 1 == bad_step, jnp.nan, loss), grads, aux
    monkeypatch.setattr(step_lib, "loss_and_grads", poisoned)
  return inject


def test_a_nonfinite_loss_stops_naming_the_step_and_last_good_checkpoint(
    good, data_cfg, tmp_path, nan_at_step):
  workdir = _copy(good, tmp_path)
  nan_at_step(8)
  with pytest.raises(training.Diverged) as e:
    training.train(_cfg(data_cfg, steps=12), workdir, echo=Echo())
  message = str(e.value)
  assert len(message.splitlines()) == 1
  assert message.startswith("step 8: loss nan")
  assert "last good checkpoint is checkpoint 6" in message
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  assert _steps(workdir) == [1, 2, 3, 4, 5, 6, 7]


def test_skip_mode_skips_counts_and_saves_only_finite_states(
    good, data_cfg, tmp_path, nan_at_step):
  workdir = _copy(good, tmp_path)
  nan_at_step(8)
  training.train(_cfg(data_cfg, steps=12, nonfinite="skip"), workdir, echo=Echo())
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == list(range(1, 13))
  assert [r["step"] for r in records if r.get("skipped_updates")] == [8]
  # keep_checkpoints=2: only finite states were saved, so the newest are good ones.
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "9"]
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=2, read_only=True)
  meta = ckpt.read_meta(12)
  ckpt.close()
  assert meta["config"]["nonfinite"] == "skip"


def test_a_nonfinite_state_is_never_saved(data_cfg, tmp_path):
  cfg = _cfg(data_cfg)
  state = {"params": jnp.array([1.0, jnp.inf])}
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), keep=2)
  guard = training.loop._FiniteGuard(cfg, ckpt)
  fake = types.SimpleNamespace(params=state, opt_state={})
  with pytest.raises(training.Diverged, match="step 4: the parameters .* not finite; not saved"):
    guard.check_state(4, fake)
  ckpt.close()


# -- 4. recovery from a bad checkpoint -----------------------------------------------------

def test_a_corrupted_newest_checkpoint_is_moved_aside_and_saved_again(good, data_cfg, tmp_path):
  workdir = _copy(good, tmp_path)
  step_dir = os.path.join(workdir, "checkpoints", "6")
  for root, _, files in os.walk(os.path.join(step_dir, "state")):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)
  corrupted = _tree_digest(step_dir)
  echo = Echo()
  training.train(_cfg(data_cfg), workdir, echo=echo)
  aside = [line for line in echo if line.startswith("warning:")]
  assert len(aside) == 1 and "checkpoint 6 does not read; moved it to" in aside[0]
  moved = aside[0].rsplit(" ", 1)[1]
  assert _tree_digest(moved) == corrupted  # renamed, not deleted
  assert any("resumed from step 3" in line for line in echo)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  assert _steps(workdir) == [1, 2, 3, 4, 5, 6]


# -- 5. storage ----------------------------------------------------------------------------

def test_no_space_for_a_checkpoint_stops_before_compiling_and_writes_nothing(
    data_cfg, tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  monkeypatch.setattr(workdir_lib.shutil, "disk_usage",
                      lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 1024, 1024))
  echo = Echo()
  with pytest.raises(workdir_lib.StorageError) as e:
    training.train(_cfg(data_cfg), workdir, echo=echo)
  assert "checkpoint directory" in str(e.value) and "MiB free; one checkpoint needs" in str(e.value)
  assert len(str(e.value).splitlines()) == 1
  assert not any("compiled" in line for line in echo)
  assert not os.path.exists(workdir)


def test_an_unwritable_workdir_is_one_line(tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(workdir_lib.StorageError, match="not writable .*NotADirectoryError"):
    workdir_lib.probe(str(tmp_path / "file" / "checkpoints"))
  with pytest.raises(workdir_lib.StorageError, match="cannot create the workdir"):
    with workdir_lib.locked(str(tmp_path / "file" / "run")):
      pass


def test_a_failed_background_save_stops_at_once_keeping_the_previous_one(
    good, data_cfg, tmp_path, monkeypatch):
  from orbax.checkpoint._src.path import atomicity
  workdir = _copy(good, tmp_path)
  original = atomicity.AtomicRenameTemporaryPath.finalize

  async def disk_full(self, *args, **kwargs):
    if str(self.get_final()).endswith(os.sep + "9"):
      raise OSError(errno.ENOSPC, "No space left on device")
    return await original(self, *args, **kwargs)
  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", disk_full)
  start = time.perf_counter()
  with pytest.raises(checkpoint.SaveFailed) as e:
    training.train(_cfg(data_cfg, steps=30), workdir, echo=Echo())
  assert time.perf_counter() - start < 60
  message = str(e.value)
  assert len(message.splitlines()) == 1
  assert "saving checkpoint 9" in message and "No space left" in message
  assert "newest complete checkpoint is 6" in message
  assert "6" in os.listdir(os.path.join(workdir, "checkpoints"))
  steps = _steps(workdir)
  assert steps == list(range(1, steps[-1] + 1)) and steps[-1] < 30


def _eval_py(*args):
  return subprocess.run([sys.executable, "eval.py", *args], cwd=ROOT, env=ENV,
                        capture_output=True, text=True, timeout=300)


def _error_lines(stderr):
  assert "Traceback" not in stderr, stderr[-3000:]
  return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_eval_py_prints_before_writing_and_a_failed_write_is_one_line(good, tmp_path):
  workdir = _copy(good, tmp_path)
  os.makedirs(os.path.join(workdir, "eval.json"))  # not writable as a file, even by root
  proc = _eval_py(f"--workdir={workdir}", "--eval_tokens=64")
  assert proc.returncode == 1
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["step"] == 6 and np.isfinite(result["loss"])
  lines = _error_lines(proc.stderr)
  assert len(lines) == 1 and "cannot write" in lines[0] and "eval.json" in lines[0]


# -- 6. one-line errors at the command line ------------------------------------------------

def _train_py(*args):
  return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=ENV,
                        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, expected", [
    (["--config=configs/dense.py:tiny", "--config.modle.d_model=64"],
     "error: --config.modle.d_model: config has no field 'modle'; did you mean --config.model?"),
    (["--config=configs/dense.py:tiny", "--config.model.d_modle=64"],
     "error: --config.model.d_modle: config.model has no field 'd_modle'; did you mean "
     "--config.model.d_model?"),
    (["--config=configs/nope.py:tiny"], "error: --config=configs/nope.py:tiny: no such file"),
    (["--config=configs/dense.py:huge"],
     "error: configs/dense.py:huge: unknown size; allowed ['tiny', 'xxsmall', 'xsmall', "
     "'small', 'medium']"),
    (["--config=configs/dense.py:tiny", "--config.optimizer.lr=nan"],
     "error: config.optimizer.lr=nan is invalid: allowed a finite number"),
])
def test_train_py_mistakes_are_one_line(args, expected, tmp_path):
  proc = _train_py(*args, f"--workdir={tmp_path / 'run'}")
  assert proc.returncode != 0
  assert _error_lines(proc.stderr) == [expected], proc.stderr[-2000:]
  assert not (tmp_path / "run").exists()


def test_tfds_unknown_or_unprepared_fails_in_seconds_naming_it(tmp_path, monkeypatch):
  from zoo.data import load_corpus, tfds_errors
  with pytest.raises(ConfigError) as e:
    load_corpus(DataConfig(source="tfds", name="lm1bb", path=str(tmp_path / "tfds")))
  assert len(str(e.value).splitlines()) == 1 and "did you mean 'lm1b'?" in str(e.value)
  monkeypatch.setattr(tfds_errors, "PROBE_HOSTS", (("127.0.0.1", 9),))  # nothing listens
  start = time.perf_counter()
  with pytest.raises(ConfigError) as e:
    load_corpus(DataConfig(source="tfds", name="lm1b", path=str(tmp_path / "tfds")))
  assert time.perf_counter() - start < 10
  message = str(e.value)
  assert len(message.splitlines()) == 1
  assert "config.data.name='lm1b'" in message and "tfds build lm1b" in message
  assert not (tmp_path / "tfds").exists() or not any((tmp_path / "tfds").rglob("*"))


def test_sampling_arguments_are_checked_and_a_long_prompt_is_cut(good):
  from zoo import evaluation
  cfg = restore.load_config(good[0])
  for kwargs, match in (
      (dict(max_new_tokens=-5), r"--max_new_tokens=-5 is invalid: allowed 1\.\.15"),
      (dict(max_new_tokens=1_000_000), r"--max_new_tokens=1000000 is invalid"),
      (dict(top_k=10_000), r"--top_k=10000 is invalid: allowed 0\.\.400"),
      (dict(temperature=-1.0), r"--temperature=-1.0 is invalid: allowed >= 0")):
    args = {"max_new_tokens": 4, "temperature": 0.0, "top_k": 0, **kwargs}
    with pytest.raises(evaluation.SamplingError, match=match):
      evaluation.check_sampling(cfg, **args)
  run = restore.load_run(good[0])
  warnings = Echo()
  text = evaluation.sample(run.model(), run.tokenizer, "the quick brown fox " * 20,
                           max_new_tokens=4, context=cfg.seq_len, warn=warnings)
  assert isinstance(text, str)
  assert len(warnings) == 1 and "kept its last 11" in warnings[0]
