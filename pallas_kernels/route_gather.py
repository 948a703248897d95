"""Capacity-limited row gather for Mixture-of-Depths routing (Raposo et al., 2024).

Glossary (zoo/__init__.py): B batch, L length, C capacity (tokens kept per row), D width, R rows
summed per output row, N output rows, S source batch (B, or 1 for a source shared by every
batch row).

    route_gather(x_BLD, idx_BC)[b, c] = x_BLD[b, idx_BC[b, c]]

``idx_BC`` holds the kept positions of each row, sorted and unique (a top-C router's choice).
The backward pass places the output gradient back at the kept positions and zeros elsewhere;
it is written as the *inverse* gather ``dx[b, l] = dy[b, inv[b, l]]`` (inv = -1 where
dropped), so it writes dense ``dx`` once and never scatters.

The Mosaic kernel ``gather_rows`` is shared by every gather in this package (the expert
dispatch and the dropless permutations): for each output row it DMAs up to K source rows from
HBM, weights them and adds an optional residual, in float32. Mosaic rejects a DMA of one
bfloat16 row at an arbitrary offset (rows are packed in pairs into 32-bit words; the TPU AOT
compile says so), so bfloat16 sources are read as 32-bit words holding a row pair and the
wanted half is selected in VMEM.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels import _common


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Tiling of the row kernels: output rows per grid step (a multiple of 16).

  VMEM per step is about ``rows * D * 4`` bytes for the DMA buffer plus the double-buffered
  output, residual and float32 accumulator blocks: ~8 MiB at rows=64, D=4096.
  """

  rows: int = 64


def route_gather_reference(x_BLD: jax.Array, idx_BC: jax.Array) -> jax.Array:
  """Pure-jnp reference (the ``xla`` backend)."""
  return jnp.take_along_axis(x_BLD, idx_BC[:, :, None], axis=1)


def lane_blocks(a_BRN: jax.Array, tn: int, fill) -> jax.Array:
  """(B, K, N) -> (B, N/tn, K, tn): one lane-dense (K, tn) block per grid step."""
  batch, k, n = a_BRN.shape
  nb = pl.cdiv(n, tn)
  a = jnp.pad(a_BRN, ((0, 0), (0, 0), (0, nb * tn - n)), constant_values=fill)
  return a.reshape(batch, k, nb, tn).transpose(0, 2, 1, 3)


def load_rows(src_hbm, s, idx_smem, k, idx_col, buf, sem, *, packed: bool) -> jax.Array:
  """DMAs rows ``src[s, idx_smem[k, r]]`` into ``buf`` and returns them as float32 (tn, D).

  Rows with a negative index are skipped and returned as zeros. ``idx_col`` is the same
  indices as a (tn, 1) vector. With ``packed`` the source is bfloat16 viewed as uint32 words
  that each hold rows 2i (low half) and 2i + 1 (high half).
  """
  tn = buf.shape[0]

  def copy(r):
    i = idx_smem[k, r]
    word = jnp.right_shift(i, 1) if packed else i
    return pltpu.make_async_copy(src_hbm.at[s, pl.ds(word, 1)], buf.at[pl.ds(r, 1)], sem)

  @pl.loop(0, tn)
  def _(r):
    @pl.when(idx_smem[k, r] >= 0)
    def _():
      copy(r).start()

  @pl.loop(0, tn)
  def _(r):
    @pl.when(idx_smem[k, r] >= 0)
    def _():
      copy(r).wait()

  rows = buf[...]
  if packed:
    odd = jnp.bitwise_and(idx_col, 1) == 1
    bits = jnp.where(odd, jnp.bitwise_and(rows, jnp.uint32(0xFFFF0000)),
                     jnp.left_shift(rows, jnp.uint32(16)))
    rows = jax.lax.bitcast_convert_type(bits, jnp.float32)
  else:
    rows = rows.astype(jnp.float32)
  return jnp.where(idx_col >= 0, rows, 0.0)


def pair_words(x_SRD: jax.Array) -> jax.Array:
  """bfloat16 (S, R, D) -> uint32 (S, R/2, D), rows 2i and 2i+1 in the low and high halves.

  This is the layout of a bfloat16 array in TPU memory (and what ``ref.bitcast(jnp.uint32)``
  gives inside a Mosaic kernel for free). TPU interpret mode in jax 0.11.2 cannot DMA from a
  bitcast ref, so there the view is made here, outside the kernel, at the cost of a copy.
  """
  s, r, d = x_SRD.shape
  pairs = x_SRD.reshape(s, r // 2, 2, d).swapaxes(-1, -2)
  return jax.lax.bitcast_convert_type(pairs, jnp.uint32)


def source_operand(src_SRD: jax.Array, interpret) -> tuple[jax.Array, bool, bool]:
  """The source as passed to a row kernel: (array, packed, bitcast inside the kernel)."""
  _common.check_float_dtype(src_SRD, "source")
  if src_SRD.dtype != jnp.bfloat16:
    return src_SRD, False, False
  if src_SRD.shape[1] % 2:  # whole 32-bit words of row pairs; rare, costs a copy
    src_SRD = jnp.pad(src_SRD, ((0, 0), (0, 1), (0, 0)))
  if interpret:
    return pair_words(src_SRD), True, False
  return src_SRD, True, True


def _gather_rows_kernel(*refs, num_k, shared_src, packed, bitcast_src, has_w, has_resid):
  refs = list(refs)
  idx_smem, idx_vmem = refs.pop(0), refs.pop(0)
  w_vmem = refs.pop(0) if has_w else None
  src_hbm = refs.pop(0)
  resid_ref = refs.pop(0) if has_resid else None
  out_ref, buf, sem = refs
  s = 0 if shared_src else pl.program_id(0)
  if bitcast_src:
    src_hbm = src_hbm.bitcast(jnp.uint32)
  idx_cols = idx_vmem[...].T  # (tn, K)
  w_cols = w_vmem[...].T if has_w else None
  if has_resid:
    acc = resid_ref[0].astype(jnp.float32)
  else:
    acc = jnp.zeros(out_ref.shape[1:], jnp.float32)
  for k in range(num_k):
    rows = load_rows(src_hbm, s, idx_smem, k, idx_cols[:, k:k + 1], buf, sem, packed=packed)
    acc = acc + (rows * w_cols[:, k:k + 1] if has_w else rows)
  out_ref[0] = acc.astype(out_ref.dtype)


def gather_rows(src_SRD: jax.Array, idx_BRN: jax.Array, w_BRN: jax.Array | None = None,
                resid_BND: jax.Array | None = None, *, out_dtype=None,
                block_sizes: BlockSizes = BlockSizes(),
                interpret: pltpu.InterpretParams | bool = False) -> jax.Array:
  """Mosaic kernel: ``out[b, n] = resid[b, n] + sum_k w[b, k, n] * src[s, idx[b, k, n]]``.

  ``s`` is ``b``, or 0 when ``src_SRD`` has one batch row shared by all. A negative index
  contributes nothing. Sums are float32, rounded once to ``out_dtype`` (default src dtype).
  """
  num_src, _, width = src_SRD.shape
  batch, num_k, n = idx_BRN.shape
  if num_src not in (1, batch):
    raise ValueError(f"source batch {num_src} must be 1 or {batch}")
  out_dtype = jnp.dtype(out_dtype or src_SRD.dtype)
  itemsize = src_SRD.dtype.itemsize
  src, packed, bitcast_src = source_operand(src_SRD, interpret)
  tn = _common.rows_per_step(n, block_sizes.rows)
  grid = (batch, pl.cdiv(n, tn))
  idx_blocks = lane_blocks(idx_BRN.astype(jnp.int32), tn, -1)
  meta_spec = pl.BlockSpec((None, None, num_k, tn), lambda b, j: (b, j, 0, 0))
  smem_spec = pl.BlockSpec((None, None, num_k, tn), lambda b, j: (b, j, 0, 0),
                           memory_space=pltpu.SMEM)
  operands, in_specs = [idx_blocks, idx_blocks], [smem_spec, meta_spec]
  if w_BRN is not None:
    operands.append(lane_blocks(w_BRN.astype(jnp.float32), tn, 0.0))
    in_specs.append(meta_spec)
  operands.append(src)
  in_specs.append(pl.BlockSpec(memory_space=pl.ANY))
  if resid_BND is not None:
    operands.append(resid_BND)
    in_specs.append(pl.BlockSpec((1, tn, width), lambda b, j: (b, j, 0)))
  kernel = functools.partial(
      _gather_rows_kernel, num_k=num_k, shared_src=num_src == 1, packed=packed,
      bitcast_src=bitcast_src, has_w=w_BRN is not None, has_resid=resid_BND is not None)
  bytes_moved = (batch * n * width * (num_k * itemsize + out_dtype.itemsize)
                 + (0 if resid_BND is None else resid_BND.size * resid_BND.dtype.itemsize))
  return pl.pallas_call(
      kernel,
      grid=grid,
      in_specs=in_specs,
      out_specs=pl.BlockSpec((1, tn, width), lambda b, j: (b, j, 0)),
      out_shape=_common.out_struct((batch, n, width), out_dtype, *operands),
      scratch_shapes=[pltpu.VMEM((tn, width), jnp.uint32 if packed else src.dtype),
                      pltpu.SemaphoreType.DMA(())],
      compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel")),
      cost_estimate=pl.CostEstimate(flops=2 * batch * n * width * num_k,
                                    bytes_accessed=bytes_moved, transcendentals=0),
      interpret=interpret,
  )(*operands)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _route_gather_pallas(x_BLD, idx_BC, backend, block_sizes):
  return gather_rows(x_BLD, idx_BC[:, None, :], block_sizes=block_sizes,
                     interpret=_common.interpret_arg(backend))


def _route_gather_fwd(x_BLD, idx_BC, backend, block_sizes):
  out = _route_gather_pallas(x_BLD, idx_BC, backend, block_sizes)
  # Residuals must be arrays: keep the length as the shape of an empty one.
  return out, (idx_BC, jnp.zeros((0, x_BLD.shape[1]), x_BLD.dtype))


def _route_gather_bwd(backend, block_sizes, res, dy_BCD):
  idx_BC, like = res
  inv_BL = _common.inverse_positions(idx_BC, like.shape[1])
  dx_BLD = gather_rows(dy_BCD, inv_BL[:, None, :], out_dtype=like.dtype,
                       block_sizes=block_sizes, interpret=_common.interpret_arg(backend))
  return dx_BLD, None


_route_gather_pallas.defvjp(_route_gather_fwd, _route_gather_bwd)


def route_gather(x_BLD: jax.Array, idx_BC: jax.Array, *, backend: str | None = None,
                 block_sizes: BlockSizes = BlockSizes()) -> jax.Array:
  """Gathers the kept rows: ``x_BLD[b, idx_BC[b, c]]`` -> ``x_BCD``.

  Args:
    x_BLD: activations, float32 or bfloat16 for the Pallas backends.
    idx_BC: int kept positions per batch row, sorted and unique (the backward pass
      assumes unique positions).
    backend: "xla", "pallas_tpu", "pallas_interpret", or None to pick by platform.
    block_sizes: tiling of the Pallas kernel.
  """
  backend = _common.resolve_backend(backend)
  if x_BLD.ndim != 3 or idx_BC.ndim != 2 or idx_BC.shape[0] != x_BLD.shape[0]:
    raise ValueError(f"expected x_BLD and idx_BC, got {x_BLD.shape} and {idx_BC.shape}")
  if backend == "xla":
    return route_gather_reference(x_BLD, idx_BC)
  return _route_gather_pallas(x_BLD, idx_BC.astype(jnp.int32), backend, block_sizes)
