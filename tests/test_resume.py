"""train.py killed and re-run: exact resume, kill during a save, and eval.py on the result.

These run train.py in subprocesses, as a user would; they are the slow part of the suite.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, EVERY = 60, 20

pytestmark = pytest.mark.slow


def _command(workdir, corpus, *extra):
  path, cache = corpus
  return [sys.executable, "train.py", "--config", "configs/dense.py:tiny",
          f"--workdir={workdir}", f"--config.steps={STEPS}",
          f"--config.checkpoint_every={EVERY}", "--config.log_every=1",
          "--config.eval_every=1000", "--config.eval_tokens=128", "--config.batch_size=4",
          "--config.seq_len=32", "--config.model.num_layers=1", "--config.model.d_model=32",
          "--config.model.num_heads=2", "--config.model.dropout=0.1",
          "--config.optimizer.warmup_steps=5", "--config.data.source=local_text",
          f"--config.data.path={path}", "--config.data.vocab_size=512",
          f"--config.data.cache_dir={cache}", *extra]


ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def _run(workdir, corpus):
  proc = subprocess.run(_command(workdir, corpus), cwd=ROOT, env=ENV, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout + proc.stderr


def _kill_when(workdir, corpus, ready):
  """Starts train.py and SIGKILLs it once `ready(workdir)` holds."""
  proc = subprocess.Popen(_command(workdir, corpus), cwd=ROOT, env=ENV,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while proc.poll() is None and time.time() < deadline:
    if ready(workdir):
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      return True
    time.sleep(0.002)
  proc.kill()
  return False


def _logged_steps(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line)["step"] for line in f if line.strip()]


def _final_params(workdir):
  from zoo.training import restore
  from flax import nnx
  run = restore.load_run(workdir, step=STEPS)
  return nnx.to_pure_dict(run.state.params), run


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("straight"))
  _run(workdir, corpus)
  return workdir


def test_sigkill_between_checkpoints_resumes_bitwise(corpus, uninterrupted, tmp_path):
  workdir = str(tmp_path / "killed")
  kill_at = EVERY + EVERY // 2  # between the checkpoints at EVERY and 2 * EVERY

  def between(w):
    saved = os.path.isdir(os.path.join(w, "checkpoints", str(EVERY)))  # finalised
    return saved and max(_logged_steps(w), default=0) >= kill_at

  assert _kill_when(workdir, corpus, between)
  assert max(_logged_steps(workdir)) < 2 * EVERY
  out = _run(workdir, corpus)
  assert f"resumed from step {EVERY}" in out
  assert _logged_steps(workdir) == list(range(1, STEPS + 1))  # none missing, none twice
  import jax
  ref, _ = _final_params(uninterrupted)
  got, _ = _final_params(workdir)
  jax.tree.map(np.testing.assert_array_equal, got, ref)


def test_kill_during_an_async_save_resumes_from_the_previous_one(corpus, tmp_path):
  workdir = str(tmp_path / "mid_save")
  tmp_glob = os.path.join(workdir, "checkpoints", "*orbax-checkpoint-tmp*")

  def saving_second(w):
    return any(os.path.basename(p).startswith(str(2 * EVERY)) for p in glob.glob(tmp_glob))

  caught = _kill_when(workdir, corpus, saving_second)
  print("killed during a real async save" if caught else "save outran the poll: simulated")
  if not caught:
    # The save outran the poll: leave what a kill mid-write leaves, a partial tmp step.
    partial = os.path.join(workdir, "checkpoints", f"{2 * EVERY}.orbax-checkpoint-tmp-1")
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(2 * EVERY)), ignore_errors=True)
    shutil.copytree(os.path.join(workdir, "checkpoints", str(EVERY)), partial)
    os.remove(os.path.join(partial, "_CHECKPOINT_METADATA"))
  out = _run(workdir, corpus)
  assert f"resumed from step {EVERY} " in out, out[-2000:]
  assert not glob.glob(tmp_glob)  # cleaned up
  assert _logged_steps(workdir) == list(range(1, STEPS + 1))


def test_eval_py_reports_and_samples(uninterrupted):
  proc = subprocess.run([sys.executable, "eval.py", f"--workdir={uninterrupted}"], cwd=ROOT,
                        env=ENV, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(uninterrupted, "eval.json")) as f:
    result = json.load(f)
  assert set(result) == {"step", "split", "loss", "loss_stderr", "perplexity", "bits_per_byte",
                         "tokens", "sequences"}
  assert result["step"] == STEPS and result["split"] == "validation" and result["tokens"] > 0
  assert result["sequences"] == 4 and 0 < result["loss_stderr"] < result["loss"]  # 128 / 32
  with open(os.path.join(uninterrupted, "metrics.jsonl")) as f:
    last = [json.loads(line) for line in f if "eval_loss" in line][-1]
  assert last["step"] == STEPS and np.isclose(last["eval_loss"], result["loss"], rtol=1e-5)
  assert last["eval_tokens"] == result["tokens"] and "eval_loss_stderr" in last
  assert np.isclose(result["perplexity"], np.exp(result["loss"]))
  proc = subprocess.run([sys.executable, "eval.py", f"--workdir={uninterrupted}",
                         "--sample=def ", "--max_new_tokens=8", "--temperature=0.8",
                         "--top_k=20"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0 and proc.stdout.startswith("def "), proc.stderr[-3000:]
  proc = subprocess.run([sys.executable, "eval.py", f"--workdir={uninterrupted}",
                         "--step=7"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode != 0 and "error: no checkpoint 7" in proc.stderr
