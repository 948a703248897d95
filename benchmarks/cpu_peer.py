"""Speed ratio against a peer: our jitted train step vs the same model in plain PyTorch, on CPU.

Times the zoo train step (zoo.training.step.create + jit_steps, random batches in the
pipeline's format) of a config (default: the dense `tiny` preset, float32), then runs
benchmarks/torch_peer.py, the same model written nanoGPT-style in PyTorch (SDPA attention,
fused AdamW, grad clip 1.0), with another interpreter (torch lives in its own venv), in one
run. Both use the same number of threads. Prints tokens/s of each and the ratio as a table
(last), and writes the numbers as JSON.

  # once: the CPU torch 2.13.0 wheel here is for Python 3.11 (under 3.12 pip would pull
  # the CUDA build); e.g. /root/.pyenv/versions/3.11.7/bin/python3.11
  python3.11 -m venv .venv-torch && .venv-torch/bin/pip install torch==2.13.0 numpy
  # then, from the repository root with the project venv:
  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/cpu_peer.py [--rounds=2] [--torch_compile]
  # any config field can be overridden, e.g. --config.model.remat=full

Timings on a shared machine are noisy: each side reports the median of its repeats, and
`--rounds` alternates the two sides to spread drifting contention over both. The load
average before and after is recorded.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

from absl import app, flags
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `configs` imports `configs.base`

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(ROOT, "configs", "dense.py:tiny"), "configs/<family>.py:<size>")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed train steps per repeat.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compiling (and for torch).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats per round; the median is reported.")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Alternations ours -> torch (noise spreading).")
_THREADS = flags.DEFINE_integer("threads", 2, "CPU threads for both sides.")
_TORCH_PYTHON = flags.DEFINE_string(
    "torch_python", os.path.join(ROOT, ".venv-torch", "bin", "python"),
    "Python interpreter with torch installed.")
_TORCH_COMPILE = flags.DEFINE_boolean(
    "torch_compile", False, "Also time the torch peer under torch.compile.")
_SKIP_TORCH = flags.DEFINE_boolean("skip_torch", False, "Time only ours.")
_TORCH_TIMEOUT = flags.DEFINE_integer("torch_timeout", 1800, "Seconds per torch run.")
_OUT = flags.DEFINE_string("out", os.path.join(ROOT, "benchmarks", "cpu_peer.json"),
                           "Where the JSON results go ('' for nowhere).")
_TARGET = flags.DEFINE_float("target", 1.3, "The speed ratio ours/torch aimed at.")


def _limit_threads(n: int) -> int:
  """Pins this process (and its children) to `n` CPUs; XLA sizes its pool from affinity."""
  cpus = sorted(os.sched_getaffinity(0))
  if len(cpus) > n:
    os.sched_setaffinity(0, cpus[:n])
  return min(n, len(cpus))


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def time_ours(cfg, steps: int, warmup: int, repeats: int, rounds_hook) -> dict:
  """Compiles and times the zoo train step; `rounds_hook(measure)` drives the repeats."""
  import jax
  import numpy as np

  from zoo import accounting, sharding
  from zoo.testing import random_batch
  from zoo.training import step as step_lib

  mesh = sharding.make_mesh(cfg.mesh)
  trainer, state, shardings = step_lib.create(cfg, mesh)
  train_fn, _ = step_lib.jit_steps(trainer, shardings, mesh)
  tokens = cfg.batch_size * cfg.seq_len
  with sharding.activate(mesh):
    batches = [sharding.global_batch(random_batch(cfg, seed=i, packed=False), mesh)
               for i in range(4)]
    start = time.perf_counter()
    compiled = train_fn.lower(state, batches[0]).compile()
    compile_s = time.perf_counter() - start
    for i in range(warmup):
      state, metrics = compiled(state, batches[i % len(batches)])
    jax.block_until_ready(state)

    rates, cpu_rates = [], []

    def measure():
      nonlocal state, metrics
      for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for i in range(steps):
          state, metrics = compiled(state, batches[i % len(batches)])
        jax.block_until_ready((state, metrics))
        rates.append(tokens * steps / (time.perf_counter() - start))
        cpu_rates.append(tokens * steps / (time.process_time() - cpu_start))

    rounds_hook(measure)
  flops = accounting.count_flops(cfg).train_per_step
  rate = statistics.median(rates)
  return {"name": "zoo (jax)", "jax": jax.__version__, "devices": jax.device_count(),
          "compile_s": round(compile_s, 2), "loss": float(np.asarray(metrics["loss"])),
          "params": sum(x.size for x in jax.tree.leaves(state.params)),
          "tokens_per_s": rate, "repeats": [round(r, 1) for r in rates],
          "tokens_per_cpu_s": statistics.median(cpu_rates),
          "cpu_repeats": [round(r, 1) for r in cpu_rates],
          "train_flops_per_step": flops, "gflops_per_s": flops * rate / tokens / 1e9}


def time_torch(cfg, steps: int, warmup: int, repeats: int, threads: int, compile_: bool,
               python: str, timeout: int) -> dict:
  m = cfg.model
  cmd = [python, os.path.join(ROOT, "benchmarks", "torch_peer.py"),
         f"--batch={cfg.batch_size}", f"--seq_len={cfg.seq_len}", f"--layers={m.num_layers}",
         f"--d_model={m.d_model}", f"--heads={m.num_heads}", f"--d_ff={m.hidden_size}",
         f"--vocab={m.vocab_size}", f"--threads={threads}", f"--warmup={warmup}",
         f"--steps={steps}", f"--repeats={repeats}"] + (["--compile"] if compile_ else [])
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout} s"}
  except OSError as e:
    return {"error": f"could not run {python}: {e}"}
  lines = proc.stdout.strip().splitlines()
  if proc.returncode or not lines:
    return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"}
  return json.loads(lines[-1])


def _check_peer_matches(cfg) -> None:
  m = cfg.model
  mismatch = {k: v for k, v in dict(
      pattern=m.pattern, activation=m.activation, norm=m.norm, tie_embeddings=m.tie_embeddings,
      compute_dtype=m.compute_dtype, head_dim=m.head_dim, dropout=m.dropout,
      grad_accum_steps=cfg.grad_accum_steps).items()
      if v != dict(pattern=("dense",), activation="gelu", norm="rmsnorm", tie_embeddings=True,
                   compute_dtype="float32", head_dim=0, dropout=0.0, grad_accum_steps=1)[k]}
  if mismatch:
    print(f"warning: the torch peer is a dense gelu/rmsnorm/tied float32 model; "
          f"this config differs: {mismatch}", file=sys.stderr)


def main(argv):
  del argv
  threads = _limit_threads(_THREADS.value)
  from zoo import config as config_lib

  import jax

  cfg = config_lib.from_configdict(_CONFIG.value)
  config_lib.validate(cfg, jax.device_count())
  _check_peer_matches(cfg)
  steps, warmup, repeats = _STEPS.value, _WARMUP.value, _REPEATS.value
  load_before = os.getloadavg()
  torch_runs: dict[str, list[dict]] = {"torch": []}
  if _TORCH_COMPILE.value:
    torch_runs["torch+compile"] = []

  def rounds(measure_ours):
    for r in range(_ROUNDS.value):
      print(f"round {r + 1}/{_ROUNDS.value}: zoo", file=sys.stderr, flush=True)
      measure_ours()
      if _SKIP_TORCH.value:
        continue
      for name, runs in torch_runs.items():
        print(f"round {r + 1}/{_ROUNDS.value}: {name}", file=sys.stderr, flush=True)
        runs.append(time_torch(cfg, steps, warmup, repeats, threads, name != "torch",
                               _TORCH_PYTHON.value, _TORCH_TIMEOUT.value))

  ours = time_ours(cfg, steps, warmup, repeats, rounds)
  results = [ours]
  for name, runs in ([] if _SKIP_TORCH.value else torch_runs.items()):
    good = [r for r in runs if "error" not in r]
    if not good:
      results.append({"name": name, "error": runs[-1]["error"] if runs else "not run"})
      continue
    rates = [x for r in good for x in r["repeats"]]
    cpu_rates = [x for r in good for x in r["cpu_repeats"]]
    results.append({**good[-1], "name": name, "tokens_per_s": statistics.median(rates),
                    "repeats": rates, "tokens_per_cpu_s": statistics.median(cpu_rates),
                    "cpu_repeats": cpu_rates, "warmup_s": [r["warmup_s"] for r in good]})
  base = next((r for r in results if r["name"] == "torch" and "error" not in r), None)
  for r in results:
    if base and "error" not in r:
      r["ratio_vs_torch"] = r["tokens_per_s"] / base["tokens_per_s"]
      r["cpu_ratio_vs_torch"] = r["tokens_per_cpu_s"] / base["tokens_per_cpu_s"]
  report = {
      "config": {"batch_size": cfg.batch_size, "seq_len": cfg.seq_len,
                 **{k: getattr(cfg.model, k) for k in (
                     "num_layers", "d_model", "num_heads", "hidden_size", "vocab_size",
                     "activation", "norm", "compute_dtype", "remat", "scan_layers")}},
      "machine": {"cpu": _cpu_name(), "cpus_visible": os.cpu_count(), "threads": threads,
                  "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
                  "python": platform.python_version()},
      "steps": steps, "repeats": repeats, "rounds": _ROUNDS.value, "target_ratio": _TARGET.value,
      "results": results,
  }
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(report, f, indent=1)

  print(f"\n{cfg.batch_size}x{cfg.seq_len} tokens/step, {threads} threads, float32, "
        f"median of {repeats * _ROUNDS.value} x {steps} steps; load avg "
        f"{load_before[0]:.2f} -> {report['machine']['load_avg_after'][0]:.2f}")
  print(f"{'':16}{'tokens/s':>10}{'step ms':>10}{'vs torch':>10}"
        f"{'tok/cpu-s':>11}{'vs torch':>10}")
  for r in results:
    if "error" in r:
      print(f"{r['name']:16}{'failed':>10}  {r['error'][:200]}")
      continue
    ms = 1e3 * cfg.batch_size * cfg.seq_len / r["tokens_per_s"]
    ratio = f"{r['ratio_vs_torch']:.2f}x" if "ratio_vs_torch" in r else "-"
    cpu_ratio = f"{r['cpu_ratio_vs_torch']:.2f}x" if "cpu_ratio_vs_torch" in r else "-"
    print(f"{r['name']:16}{r['tokens_per_s']:>10,.0f}{ms:>10,.0f}{ratio:>10}"
          f"{r['tokens_per_cpu_s']:>11,.0f}{cpu_ratio:>10}")
  print("(tok/cpu-s: tokens per second of process CPU time, user+sys of all its threads; "
        "less sensitive to other load, but counts spin-waiting)")
  if "ratio_vs_torch" in ours:
    verdict = "meets" if ours["ratio_vs_torch"] >= _TARGET.value else "misses"
    print(f"ours / torch = {ours['ratio_vs_torch']:.2f}x ({verdict} the {_TARGET.value}x goal)")


if __name__ == "__main__":
  app.run(main)
