"""Every notebook in notebooks/ runs top to bottom in a Jupyter kernel on the CPU (nbclient,
through notebooks/run_all.py, which also refreshes the stored outputs), and draws as many
images as its stored copy shows: a notebook that nothing runs is broken within a month."""

import os

import nbformat
import pytest

from notebooks import run_all


def test_there_are_notebooks():
  names = {os.path.basename(p) for p in run_all.notebooks()}
  assert {"quickstart.ipynb", "parameters_vs_compute.ipynb", "routing_seen.ipynb",
          "scaling_laws.ipynb", "moving_a_run.ipynb"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", run_all.notebooks(), ids=os.path.basename)
def test_notebook_runs_and_draws_its_images(path, tmp_path):
  stored = nbformat.read(path, as_version=4)
  # Workdirs go under the kernel's temporary directory: this test's own.
  executed = run_all.execute(path, env={"TMPDIR": str(tmp_path)})  # raises at a failing cell
  assert run_all.images(stored) > 0, f"{path} is stored without its plots: notebooks/run_all.py"
  assert run_all.images(executed) == run_all.images(stored)
