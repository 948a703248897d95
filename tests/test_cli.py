"""train.py stops on a bad value with one line and writes nothing."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bad_value_is_one_line_and_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "train.py", "--config", "configs/dense.py:tiny",
       f"--workdir={workdir}", "--config.model.num_heads=5"],
      cwd=ROOT, capture_output=True, text=True, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert lines == [
      "error: config.model.num_heads=5 is invalid: allowed a divisor of model.d_model=256 "
      "(or set model.head_dim)"], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not workdir.exists()
