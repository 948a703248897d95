"""Weighted scatter-add of block outputs back into the residual stream (Mixture-of-Depths).

Glossary (zoo/__init__.py): B batch, L length, C capacity (kept positions per row), D width.

    route_scatter(x_BLD, y_BCD, w_BC, idx_BC)[b, l] = x[b, l] + w[b, c] * y[b, c]  if l = idx[b, c]
                                                     = x[b, l]                     otherwise

``idx_BC`` must be unique per row (sorted kept positions). The sum is computed in float32 and
rounded once to ``x``'s dtype; positions not kept are returned bit-for-bit. Gradients:
``dx = g``, ``dy[b, c] = w[b, c] * g[b, idx[b, c]]``, ``dw[b, c] = <g[b, idx[b, c]], y[b, c]>``.

Kernels (Mosaic):

* ``scatter_add_rows``: in place on a 32-bit destination (``input_output_aliases``): DMAs the
  kept rows in, adds ``w * y``, DMAs them back; nothing else is read or written. A float32
  residual therefore costs ``3 C D`` words instead of XLA's gather + scatter.
* bfloat16 residuals cannot be updated a row at a time (two rows share each 32-bit word of a
  tile), so they take one dense pass instead: the inverse gather
  ``out[b, l] = x[b, l] + w * y[b, inv[b, l]]`` with ``route_gather.gather_rows``.
* ``gather_dot``: the backward pass in one kernel: gathers ``g`` at the kept rows and returns
  both ``w * g_rows`` and the row dot products with ``y``.

Both kernels are reused by the expert dispatch (``expert_dispatch.py``, ``dropless.py``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels import _common
from pallas_kernels.route_gather import (BlockSizes, lane_blocks, gather_rows, load_rows,
                                         source_operand)


def route_scatter_reference(x_BLD: jax.Array, y_BCD: jax.Array, w_BC: jax.Array,
                            idx_BC: jax.Array) -> jax.Array:
  """Pure-jnp reference (the ``xla`` backend): touches only the kept rows."""
  rows = jnp.arange(x_BLD.shape[0])[:, None]
  upd = w_BC.astype(jnp.float32)[..., None] * y_BCD.astype(jnp.float32)
  new = (x_BLD[rows, idx_BC].astype(jnp.float32) + upd).astype(x_BLD.dtype)
  return x_BLD.at[rows, idx_BC].set(new, unique_indices=True)


def _scatter_add_kernel(*refs, shared_dst, has_w):
  refs = list(refs)
  idx_smem = refs.pop(0)
  w_vmem = refs.pop(0) if has_w else None
  y_ref, _, dst_hbm, buf, sem = refs  # the aliased input is the same buffer as dst_hbm
  s = 0 if shared_dst else pl.program_id(0)
  tn = buf.shape[0]

  def rows_dma(write: bool):
    def copy(r):
      hbm = dst_hbm.at[s, pl.ds(idx_smem[0, r], 1)]
      vmem = buf.at[pl.ds(r, 1)]
      src, dst = (vmem, hbm) if write else (hbm, vmem)
      return pltpu.make_async_copy(src, dst, sem)

    @pl.loop(0, tn)
    def _(r):
      @pl.when(idx_smem[0, r] >= 0)
      def _():
        copy(r).start()

    @pl.loop(0, tn)
    def _(r):
      @pl.when(idx_smem[0, r] >= 0)
      def _():
        copy(r).wait()

  rows_dma(write=False)
  upd = y_ref[0].astype(jnp.float32)
  if has_w:
    upd = upd * w_vmem[...].T
  buf[...] = (buf[...].astype(jnp.float32) + upd).astype(buf.dtype)
  rows_dma(write=True)


def scatter_add_rows(dst_SRD: jax.Array, idx_BN: jax.Array, y_BND: jax.Array,
                     w_BN: jax.Array | None = None, *, block_sizes: BlockSizes = BlockSizes(),
                     interpret: pltpu.InterpretParams | bool = False) -> jax.Array:
  """Mosaic kernel, in place: ``dst[s, idx[b, n]] += w[b, n] * y[b, n]`` for ``idx >= 0``.

  ``s`` is ``b``, or 0 for a destination shared by all batch rows (then batch rows run in
  order, so an index may repeat across rows but never within one). ``dst`` must be float32.
  """
  if dst_SRD.dtype != jnp.float32:
    raise ValueError(f"scatter_add_rows needs a float32 destination, got {dst_SRD.dtype}")
  num_dst, _, width = dst_SRD.shape
  batch, n = idx_BN.shape
  if num_dst not in (1, batch):
    raise ValueError(f"destination batch {num_dst} must be 1 or {batch}")
  shared = num_dst == 1 and batch > 1
  tn = _common.rows_per_step(n, block_sizes.rows)
  spec = pl.BlockSpec((None, None, 1, tn), lambda b, j: (b, j, 0, 0))
  operands = [lane_blocks(idx_BN[:, None, :].astype(jnp.int32), tn, -1)]
  in_specs = [pl.BlockSpec((None, None, 1, tn), lambda b, j: (b, j, 0, 0),
                           memory_space=pltpu.SMEM)]
  if w_BN is not None:
    operands.append(lane_blocks(w_BN[:, None, :].astype(jnp.float32), tn, 0.0))
    in_specs.append(spec)
  operands += [y_BND, _common.vary_like(dst_SRD, *operands, y_BND)]
  in_specs += [pl.BlockSpec((1, tn, width), lambda b, j: (b, j, 0)),
               pl.BlockSpec(memory_space=pl.ANY)]
  # A shared destination is read-modify-written by every batch row: keep the grid sequential
  # (megacore would otherwise run two batch rows at once and race on repeated indices).
  semantics = ("arbitrary", "arbitrary") if shared else ("parallel", "parallel")
  return pl.pallas_call(
      functools.partial(_scatter_add_kernel, shared_dst=num_dst == 1, has_w=w_BN is not None),
      grid=(batch, pl.cdiv(n, tn)),
      in_specs=in_specs,
      out_specs=pl.BlockSpec(memory_space=pl.ANY),
      out_shape=_common.out_struct(dst_SRD.shape, dst_SRD.dtype, *operands),
      scratch_shapes=[pltpu.VMEM((tn, width), dst_SRD.dtype), pltpu.SemaphoreType.DMA(())],
      input_output_aliases={len(operands) - 1: 0},
      compiler_params=pltpu.CompilerParams(dimension_semantics=semantics),
      interpret=interpret,
  )(*operands)


def _gather_dot_kernel(*refs, shared_src, packed, bitcast_src, has_w):
  refs = list(refs)
  idx_smem, idx_vmem = refs.pop(0), refs.pop(0)
  w_vmem = refs.pop(0) if has_w else None
  src_hbm, other_ref = refs.pop(0), refs.pop(0)
  dots_ref = refs.pop(0)
  scaled_ref = refs.pop(0) if has_w else None
  buf, sem = refs
  s = 0 if shared_src else pl.program_id(0)
  if bitcast_src:
    src_hbm = src_hbm.bitcast(jnp.uint32)
  rows = load_rows(src_hbm, s, idx_smem, 0, idx_vmem[...].T, buf, sem, packed=packed)
  dots = jnp.sum(rows * other_ref[0].astype(jnp.float32), axis=1, keepdims=True)
  dots_ref[...] = dots.T
  if has_w:
    scaled_ref[0] = (rows * w_vmem[...].T).astype(scaled_ref.dtype)


def gather_dot(src_SRD: jax.Array, idx_BN: jax.Array, other_OND: jax.Array,
               w_BN: jax.Array | None = None, *, scaled_dtype=None,
               block_sizes: BlockSizes = BlockSizes(),
               interpret: pltpu.InterpretParams | bool = False):
  """Mosaic kernel: rows ``r = src[s, idx[b, n]]`` (zero where ``idx < 0``); returns
  ``dots[b, n] = <r, other[o, n]>`` (float32) and, if ``w`` is given, ``w[b, n] * r``.

  ``s`` / ``o`` are ``b``, or 0 when ``src`` / ``other`` has a single batch row.
  """
  num_src, _, width = src_SRD.shape
  batch, n = idx_BN.shape
  num_other = other_OND.shape[0]
  if num_src not in (1, batch) or num_other not in (1, batch):
    raise ValueError(f"source/other batch {num_src}/{num_other} must be 1 or {batch}")
  scaled_dtype = jnp.dtype(scaled_dtype or src_SRD.dtype)
  src, packed, bitcast_src = source_operand(src_SRD, interpret)
  tn = _common.rows_per_step(n, block_sizes.rows)
  nb = pl.cdiv(n, tn)
  idx_blocks = lane_blocks(idx_BN[:, None, :].astype(jnp.int32), tn, -1)
  lane_spec = pl.BlockSpec((None, None, 1, tn), lambda b, j: (b, j, 0, 0))
  operands = [idx_blocks, idx_blocks]
  in_specs = [pl.BlockSpec((None, None, 1, tn), lambda b, j: (b, j, 0, 0),
                           memory_space=pltpu.SMEM), lane_spec]
  if w_BN is not None:
    operands.append(lane_blocks(w_BN[:, None, :].astype(jnp.float32), tn, 0.0))
    in_specs.append(lane_spec)
  other_map = (lambda b, j: (0, j, 0)) if num_other == 1 else (lambda b, j: (b, j, 0))
  operands += [src, other_OND]
  in_specs += [pl.BlockSpec(memory_space=pl.ANY), pl.BlockSpec((1, tn, width), other_map)]
  out_specs = [lane_spec]
  out_shape = [_common.out_struct((batch, nb, 1, tn), jnp.float32, *operands)]
  if w_BN is not None:
    out_specs.append(pl.BlockSpec((1, tn, width), lambda b, j: (b, j, 0)))
    out_shape.append(_common.out_struct((batch, n, width), scaled_dtype, *operands))
  outs = pl.pallas_call(
      functools.partial(_gather_dot_kernel, shared_src=num_src == 1, packed=packed,
                        bitcast_src=bitcast_src, has_w=w_BN is not None),
      grid=(batch, nb),
      in_specs=in_specs,
      out_specs=out_specs,
      out_shape=out_shape,
      scratch_shapes=[pltpu.VMEM((tn, width), jnp.uint32 if packed else src.dtype),
                      pltpu.SemaphoreType.DMA(())],
      compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel")),
      interpret=interpret,
  )(*operands)
  dots_BN = outs[0].reshape(batch, nb * tn)[:, :n]
  return dots_BN, (outs[1] if w_BN is not None else None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _route_scatter_pallas(x_BLD, y_BCD, w_BC, idx_BC, backend, block_sizes):
  interpret = _common.interpret_arg(backend)
  if x_BLD.dtype == jnp.float32:
    return scatter_add_rows(x_BLD, idx_BC, y_BCD, w_BC, block_sizes=block_sizes,
                            interpret=interpret)
  inv_BL = _common.inverse_positions(idx_BC, x_BLD.shape[1])
  w_BL = jnp.where(inv_BL >= 0, jnp.take_along_axis(w_BC, jnp.maximum(inv_BL, 0), axis=1), 0)
  return gather_rows(y_BCD, inv_BL[:, None, :], w_BL[:, None, :], x_BLD,
                     out_dtype=x_BLD.dtype, block_sizes=block_sizes, interpret=interpret)


def _route_scatter_fwd(x_BLD, y_BCD, w_BC, idx_BC, backend, block_sizes):
  out = _route_scatter_pallas(x_BLD, y_BCD, w_BC, idx_BC, backend, block_sizes)
  return out, (y_BCD, w_BC, idx_BC)


def _route_scatter_bwd(backend, block_sizes, res, g_BLD):
  y_BCD, w_BC, idx_BC = res
  dw_BC, dy_BCD = gather_dot(g_BLD, idx_BC, y_BCD, w_BC, scaled_dtype=y_BCD.dtype,
                             block_sizes=block_sizes, interpret=_common.interpret_arg(backend))
  return g_BLD, dy_BCD, dw_BC.astype(w_BC.dtype), None


_route_scatter_pallas.defvjp(_route_scatter_fwd, _route_scatter_bwd)


def route_scatter(x_BLD: jax.Array, y_BCD: jax.Array, w_BC: jax.Array, idx_BC: jax.Array, *,
                  backend: str | None = None,
                  block_sizes: BlockSizes = BlockSizes()) -> jax.Array:
  """Adds ``w_BC * y_BCD`` to the residual ``x_BLD`` at the kept positions ``idx_BC``.

  Args:
    x_BLD: residual stream (float32 or bfloat16 for the Pallas backends).
    y_BCD: block outputs for the kept positions.
    w_BC: router weights (any float dtype; the product is taken in float32).
    idx_BC: kept positions, unique per batch row (sorted, as from a top-C router).
    backend: "xla", "pallas_tpu", "pallas_interpret", or None to pick by platform.
    block_sizes: tiling of the Pallas kernels.
  """
  backend = _common.resolve_backend(backend)
  batch, _, width = x_BLD.shape
  if y_BCD.shape != (batch, idx_BC.shape[1], width) or w_BC.shape != idx_BC.shape:
    raise ValueError(f"shapes do not match: x_BLD {x_BLD.shape}, y_BCD {y_BCD.shape}, "
                     f"w_BC {w_BC.shape}, idx_BC {idx_BC.shape}")
  if backend == "xla":
    return route_scatter_reference(x_BLD, y_BCD, w_BC, idx_BC)
  _common.check_float_dtype(x_BLD, "x_BLD")
  return _route_scatter_pallas(x_BLD, y_BCD, w_BC, idx_BC.astype(jnp.int32), backend,
                               block_sizes)
