"""Executes the notebooks top to bottom with nbclient, as CI does (tests/test_notebooks.py),
and writes them back with their outputs: the way to refresh what the repository stores.

  python notebooks/run_all.py                 # every notebook
  python notebooks/run_all.py quickstart      # those whose file name contains "quickstart"

The kernel runs in the repository root with the checkout first on its path, and on the CPU
(JAX_PLATFORMS=cpu unless already set): the stored outputs are the CPU sizes that CI runs.
Stored notebooks are the source: edit them in Jupyter (or Colab), then run this.
"""

from __future__ import annotations

import glob
import os
import sys
import time

import nbclient
import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def notebooks() -> list[str]:
  return sorted(glob.glob(os.path.join(HERE, "*.ipynb")))


def execute(path: str, *, timeout: int = 600, env: dict | None = None) -> nbformat.NotebookNode:
  """The notebook at `path`, executed; raises nbclient's CellExecutionError at a failing cell.
  `env`: more environment variables for the kernel (e.g. TMPDIR, where notebooks train)."""
  nb = nbformat.read(path, as_version=4)
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
      REPO, os.environ.get("PYTHONPATH")])), **(env or {})}
  env.setdefault("JAX_PLATFORMS", "cpu")
  # One BLAS thread: numpy's arrays here are small, and beside other processes (CI runs the
  # notebooks beside other tests) a threaded OpenBLAS made the scaling fits 7x slower.
  env.setdefault("OPENBLAS_NUM_THREADS", "1")
  client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                   coalesce_streams=True, resources={"metadata": {"path": REPO}})
  client.execute(env=env)
  return nb


def images(nb: nbformat.NotebookNode) -> int:
  """How many images the notebook's outputs hold."""
  return sum(1 for cell in nb.cells for out in cell.get("outputs", ())
             if any(k.startswith("image/") for k in out.get("data", {})))


def main(argv: list[str]) -> None:
  for path in notebooks():
    if argv and not any(a in os.path.basename(path) for a in argv):
      continue
    start = time.perf_counter()
    nb = execute(path)
    nbformat.write(nb, path)
    print(f"{os.path.relpath(path, REPO)}: {time.perf_counter() - start:.1f} s, "
          f"{len(nb.cells)} cells, {images(nb)} images", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
