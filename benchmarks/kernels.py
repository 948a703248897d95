"""Times every backend of the kernels in pallas_kernels/ at sizes of real models.

    python benchmarks/kernels.py                # 64K tokens per step, D in {1024, 4096}
    python benchmarks/kernels.py --small        # tiny sizes: runs anywhere (CPU: a few minutes)

Full sizes: 64K tokens per step (16 x 4096); MoD capacity 12.5% and 50% of the sequence;
MoE with E in {8, 64}, top-2, capacity factor 1.25, expert hidden width 4D/(E/8). Each row gives
the median time, achieved GB/s (data movers: the bytes the op must read and write) or TFLOP/s
(grouped matmul), the speed-up over the XLA reference (>1: faster), and on a GPU the fraction
of the measured device-to-device copy bandwidth. It checks each backend's output against the
reference, prints a table last and writes JSON (--json).

Backends: "xla" everywhere; "pallas_tpu" on TPU. On other platforms "pallas_interpret" (TPU
interpret mode, races checked) runs with --small for correctness only: its times mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from pallas_kernels import dropless, expert_dispatch, route_gather, route_scatter  # noqa: E402
from zoo.models.routers import capacity_per_expert  # noqa: E402


def _timeit(fn, args, iters: int, chain: bool = False) -> float:
  """Median seconds per call of a jitted fn, compiled and warmed up first (iters=0: a single
  call, compile included). ``chain``: fn donates its first argument and each call's output
  is the next call's first argument (an in-place update, as in a model)."""
  args = list(args)
  if chain:
    args[0] = jnp.copy(args[0])

  def call():
    out = jax.block_until_ready(fn(*args))
    if chain:
      args[0] = out

  if iters == 0:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start
  call()
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _copy_bandwidth() -> float:
  """Device-to-device copy GB/s (read + write) of a 1 GiB buffer."""
  x = jnp.ones((256, 1024, 1024), jnp.float32)
  seconds = _timeit(jax.jit(lambda x: x + 0), (x,), 10)
  return 2 * x.nbytes / seconds / 1e9


def _sorted_positions(key, batch, length, cap):
  scores = jax.random.uniform(key, (batch, length))
  return jnp.sort(jax.lax.top_k(scores, cap)[1], axis=1).astype(jnp.int32)


def _mod_cases(tokens, widths, fractions, dtype):
  """Mixture-of-Depths gather / weighted scatter (forward) and the scatter's backward."""
  length = min(4096, tokens)
  batch = tokens // length
  for width in widths:
    for frac in fractions:
      cap = max(1, int(length * frac))
      k = jax.random.split(jax.random.key(width + cap), 4)
      x = jax.random.normal(k[0], (batch, length, width), dtype)
      y = jax.random.normal(k[1], (batch, cap, width), dtype)
      w = jax.random.uniform(k[2], (batch, cap), jnp.float32)
      idx = _sorted_positions(k[3], batch, length, cap)
      row_bytes = batch * cap * width * jnp.dtype(dtype).itemsize
      name = f"B={batch} L={length} C={cap} ({frac:.1%}) D={width}"
      yield ("route_gather", name, lambda be, idx=idx: jax.jit(
          lambda x: route_gather.route_gather(x, idx, backend=be)), (x,), 2 * row_bytes, 0)
      # x is donated, as a residual stream is. In place on float32: read x rows and y, write
      # rows; the bfloat16 kernel rewrites x densely (counted as the minimum all the same).
      yield ("route_scatter", name, lambda be, idx=idx: jax.jit(
          lambda x, y, w: route_scatter.route_scatter(x, y, w, idx, backend=be),
          donate_argnums=0), (x, y, w), 3 * row_bytes, 0)
      yield ("route_scatter_bwd", name, lambda be, idx=idx: jax.jit(
          lambda x, y, w, g: jax.vjp(lambda y, w: route_scatter.route_scatter(
              x, y, w, idx, backend=be), y, w)[1](g)), (x, y, w, x), 3 * row_bytes, 0)


def _moe_cases(tokens, widths, expert_counts, dtype, k=2, capacity_factor=1.25):
  for width in widths:
    for experts in expert_counts:
      hidden = max(128, 4 * width * 8 // experts)
      cap = capacity_per_expert(tokens, experts, capacity_factor, k)
      ks = jax.random.split(jax.random.key(width + experts), 4)
      x = jax.random.normal(ks[0], (tokens, width), dtype)
      gate, idx = jax.lax.top_k(jax.nn.softmax(jax.random.normal(ks[1], (tokens, experts))), k)
      itemsize = jnp.dtype(dtype).itemsize
      name = f"T={tokens} E={experts} top{k} C={cap} D={width}"
      slots = experts * cap * width * itemsize

      def dispatch_combine(be, idx=idx, experts=experts, cap=cap):
        def fn(x, gate):
          x_ECD, info = expert_dispatch.dispatch(x, idx, gate, experts, cap, backend=be)
          return expert_dispatch.combine(x_ECD, info, x, backend=be)
        return jax.jit(fn)

      # dispatch reads kept rows and writes every slot; combine reads the slots it uses,
      # reads and writes x.
      moved = 2 * slots + min(slots, k * x.nbytes) + 2 * x.nbytes
      yield ("dispatch+combine", name, dispatch_combine, (x, gate), moved, 0)
      info = dropless.sort_by_expert(idx, experts)
      lhs = jax.random.normal(ks[2], (tokens * k, width), dtype)
      rhs = (jax.random.normal(ks[3], (experts, width, hidden), jnp.float32) /
             math.sqrt(width)).astype(dtype)
      sizes = info.group_sizes_E
      yield ("grouped_matmul", f"M={tokens * k} E={experts} K={width} N={hidden}",
             lambda be, sizes=sizes: jax.jit(
                 lambda a, b: dropless.grouped_matmul(a, b, sizes, backend=be)),
             (lhs, rhs), 0, 2 * tokens * k * width * hidden)
      yield ("unpermute", name, lambda be, info=info: jax.jit(
          lambda y, gate, x: dropless.unpermute(y, info, gate, x, backend=be)),
             (lhs, gate, x), lhs.nbytes + 2 * x.nbytes, 0)


def run(args) -> list[dict]:
  platform = jax.default_backend()
  dtype = jnp.dtype(args.dtype)
  if args.small:
    tokens, widths, fractions, experts, iters = 256, (128,), (0.125, 0.5), (8, 64), 3
  else:
    tokens, widths, fractions, experts, iters = 65536, (1024, 4096), (0.125, 0.5), (8, 64), 20
  backends = args.backends.split(",") if args.backends else (
      ["xla", "pallas_tpu"] if platform == "tpu" else
      ["xla", "pallas_interpret"] if args.small else ["xla"])
  copy_gbs = _copy_bandwidth() if platform == "gpu" else None
  rows = []
  cases = list(_mod_cases(tokens, widths, fractions, dtype))
  cases += list(_moe_cases(tokens, widths, experts, dtype))
  for op, name, make, inputs, nbytes, flops in cases:
    reference = None
    for backend in backends:
      interpret = backend == "pallas_interpret"
      fn = make(backend)
      chain = op == "route_scatter"
      seconds = _timeit(fn, inputs, 0 if interpret else iters, chain)
      first = (jnp.copy(inputs[0]),) if chain else inputs[:1]
      out = jax.tree.leaves(fn(*first, *inputs[1:]))
      if reference is None:
        reference, ref_seconds = out, seconds
      err = max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))) /
                      jnp.max(jnp.abs(b.astype(jnp.float32)))) for a, b in zip(out, reference))
      row = dict(op=op, case=name, backend=backend, dtype=dtype.name, platform=platform,
                 device=jax.devices()[0].device_kind, ms=seconds * 1e3,
                 max_rel_err_vs_xla=err, timed=not interpret)
      if flops:
        row["tflops"] = flops / seconds / 1e12
      else:
        row["gbs"] = nbytes / seconds / 1e9
        if copy_gbs:
          row["frac_of_copy_bw"] = row["gbs"] / copy_gbs
      if not interpret:
        row["speedup_vs_xla"] = ref_seconds / seconds
      rows.append(row)
      print(f"{op:18s} {name:40s} {backend:16s} {seconds * 1e3:9.3f} ms  err {err:.2e}",
            flush=True)
  return rows


def print_table(rows: list[dict]) -> None:
  print("\n| op | case | backend | ms | GB/s or TFLOP/s | vs xla | max err / max abs (vs xla) |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    rate = (f"{r['tflops']:.2f} TFLOP/s" if "tflops" in r else f"{r['gbs']:.1f} GB/s")
    if "frac_of_copy_bw" in r:
      rate += f" ({r['frac_of_copy_bw']:.0%} of copy)"
    if not r["timed"]:
      rate = "(interpret: not a timing)"
    speed = f"{r['speedup_vs_xla']:.2f}x" if "speedup_vs_xla" in r else "-"
    print(f"| {r['op']} | {r['case']} | {r['backend']} | {r['ms']:.3f} | {rate} | {speed} "
          f"| {r['max_rel_err_vs_xla']:.1e} |")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--small", action="store_true", help="tiny sizes (CPU)")
  parser.add_argument("--backends", default="", help="comma list; default by platform")
  parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  parser.add_argument("--json", default="kernels_benchmark.json", help="output file")
  args = parser.parse_args()
  print(f"jax {jax.__version__} on {jax.default_backend()}: {jax.devices()[0].device_kind}")
  rows = run(args)
  with open(args.json, "w") as f:
    json.dump(rows, f, indent=1)
  print(f"wrote {args.json}")
  print_table(rows)


if __name__ == "__main__":
  main()
