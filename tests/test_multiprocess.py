"""Multi-host training with real processes on this CPU: 2 processes x 4 fake devices each.

Each process is a train.py (or eval.py) started as a user would on a pod's hosts, joined by
JAX's distributed runtime on a local port with gloo collectives. Checked: 2 x 4 trains the
same steps as 1 x 8 on the same mesh; a killed pair of processes resumes to the
uninterrupted run, the survivor of a kill stops on its own within the heartbeat timeout; a
2 x 4 checkpoint evaluates on 1 device with the same loss.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import portpicker
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, EVERY, HEARTBEAT_S = 12, 4, 10
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}

pytestmark = pytest.mark.slow


def _train_args(workdir, corpus):
  path, cache = corpus
  return ["train.py", "--config", "configs/dense.py:tiny", f"--workdir={workdir}",
          f"--config.steps={STEPS}", f"--config.checkpoint_every={EVERY}",
          "--config.log_every=1", f"--config.eval_every={STEPS}", "--config.eval_tokens=256",
          "--config.batch_size=8", "--config.seq_len=32", "--config.model.num_layers=1",
          "--config.model.d_model=32", "--config.model.num_heads=2",
          "--config.model.dropout=0.1", "--config.optimizer.warmup_steps=3",
          "--config.data.source=local_text", f"--config.data.path={path}",
          "--config.data.vocab_size=512", f"--config.data.cache_dir={cache}"]


def _start(args, processes, logdir, devices=8):
  """Starts `processes` copies of `args`, each with devices/processes CPU devices."""
  port = portpicker.pick_unused_port()
  procs = []
  for i in range(processes):
    cluster = [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}",
               f"--process_id={i}", f"--heartbeat_timeout_s={HEARTBEAT_S}",
               "--initialization_timeout_s=120"] if processes > 1 else []
    env = {**ENV, "JAX_NUM_CPU_DEVICES": str(devices // processes)}
    log = open(os.path.join(logdir, f"{os.path.basename(args[0])}.{processes}.{i}.log"), "w")
    procs.append(subprocess.Popen([sys.executable, *args, *cluster], cwd=ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT))
    procs[-1].log_path = log.name
  return procs


def _log(proc) -> str:
  with open(proc.log_path) as f:
    return f.read()


def _wait(procs, timeout=300):
  deadline = time.monotonic() + timeout
  try:
    for p in procs:
      p.wait(timeout=max(deadline - time.monotonic(), 1))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p in procs:
    assert p.returncode == 0, _log(p)[-3000:]
  return _log(procs[0])


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  losses = {r["step"]: r["loss"] for r in records if "loss" in r}
  evals = {r["step"]: r["eval_loss"] for r in records if "eval_loss" in r}
  return np.array([losses[s] for s in range(1, STEPS + 1)]), evals


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
  """The same run as 1 process x 8 devices and as 2 processes x 4 devices."""
  root = tmp_path_factory.mktemp("runs")
  out = {}
  for processes in (1, 2):
    workdir = str(root / f"p{processes}")
    start = time.perf_counter()
    _wait(_start(_train_args(workdir, corpus), processes, str(root)))
    out[processes] = workdir
    print(f"{processes} process(es) x {8 // processes} devices: "
          f"{time.perf_counter() - start:.1f} s")
  out["root"] = str(root)
  return out


def test_two_processes_train_like_one(runs):
  one, _ = _metrics(runs[1])
  two, _ = _metrics(runs[2])
  diff = np.abs(one - two)
  print(f"largest loss difference 2x4 vs 1x8 over {STEPS} steps: {diff.max():.3g} "
        f"({'bitwise equal' if (one == two).all() else 'not bitwise'})")
  np.testing.assert_allclose(two, one, rtol=2e-6, atol=0)
  # Only process 0 wrote logs; process 1 printed nothing of the run.
  assert glob.glob(os.path.join(runs[2], "tensorboard", "*"))
  worker_log = open(os.path.join(runs["root"], "train.py.2.1.log")).read()
  assert "step 1:" not in worker_log and "devices:" not in worker_log


def _checkpoint_done(workdir, step):
  return os.path.isdir(os.path.join(workdir, "checkpoints", str(step), "state"))


def test_killed_processes_resume_to_the_uninterrupted_run(runs, corpus, tmp_path):
  workdir = str(tmp_path / "run")
  procs = _start(_train_args(workdir, corpus), 2, str(tmp_path))
  deadline = time.monotonic() + 300
  while not _checkpoint_done(workdir, EVERY) and time.monotonic() < deadline:
    assert all(p.poll() is None for p in procs), _log(procs[0])[-3000:]
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGKILL)
  killed = time.monotonic()
  try:  # the survivor notices the missing heartbeats and stops by itself
    procs[0].wait(timeout=3 * HEARTBEAT_S + 30)
  except subprocess.TimeoutExpired:
    procs[0].kill()
    pytest.fail(f"process 0 still ran {3 * HEARTBEAT_S + 30} s after process 1 was killed")
  print(f"process 0 stopped {time.monotonic() - killed:.1f} s after process 1 was killed")
  assert procs[0].returncode != 0
  assert "another task died" in _log(procs[0]), _log(procs[0])[-3000:]
  assert not _checkpoint_done(workdir, STEPS)

  text = _wait(_start(_train_args(workdir, corpus), 2, str(tmp_path)))
  assert "resumed from step" in text
  resumed, resumed_eval = _metrics(workdir)
  whole, whole_eval = _metrics(runs[2])
  np.testing.assert_array_equal(resumed, whole)
  assert resumed_eval == whole_eval


def test_two_process_checkpoint_evaluates_on_one_device(runs):
  _, evals = _metrics(runs[2])
  proc = subprocess.run(
      [sys.executable, "eval.py", f"--workdir={runs[2]}", "--eval_tokens=256"], cwd=ROOT,
      env={**ENV, "JAX_NUM_CPU_DEVICES": "1"}, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  print(f"eval.py on 1 device: loss {result['loss']!r}; 2x4 training's eval loss "
        f"{evals[STEPS]!r}")
  np.testing.assert_allclose(result["loss"], evals[STEPS], rtol=1e-6)
