"""Dropless Mixture-of-Experts: sort by expert, grouped matmul, unsort with gates (MegaBlocks,
Gale et al., 2023).

Glossary (zoo/__init__.py): T tokens, R routes per token (the experts a token is sent to),
E (= G groups) experts, M = T*R sorted rows, D width, F expert hidden width;
``grouped_matmul`` names its operands ``lhs_MI``, ``rhs_GIN`` (I contracted, N output width).

    x_MD       = permute(x_TD)                 rows sorted by expert (stable: by token within)
    h_MF       = act(grouped_matmul(x_MD, w_in_EDF, group_sizes_E))
    y_MD       = grouped_matmul(h_MF, w_out_EFD, group_sizes_E)
    out_TD[t]  = x_TD[t] + sum_k gate_TR[t, k] * y_MD[pos_TR[t, k]]      (unpermute)

No token is dropped. ``permute``/``unpermute`` are Pallas row gathers
(``route_gather.gather_rows``; their backward passes are gathers too, plus
``route_scatter.gather_dot`` for the gate gradient). ``grouped_matmul`` wraps maintained
implementations rather than our own: ``jax.lax.ragged_dot`` (backend "xla"; on CPU it expands
to a dense masked product, about G times the work) and megablox ``gmm`` with its ``tgmm``
backward (backends "pallas_tpu"/"pallas_interpret"). Which is faster on TPU and GPU is to be
measured (BENCHMARKS.md); tokamax's ``ragged_dot`` is the next candidate.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.megablox import ops as megablox

from pallas_kernels import _common
from pallas_kernels.route_gather import BlockSizes, gather_rows
from pallas_kernels.route_scatter import gather_dot


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["assign_M", "pos_TR", "group_sizes_E"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class SortInfo:
  """The expert-sorted order of the T*K assignments (assignment a = t * K + k)."""

  assign_M: jax.Array  # int32, assignment in each sorted row
  pos_TR: jax.Array  # int32, sorted row of each assignment
  group_sizes_E: jax.Array  # int32, rows per expert

  @property
  def token_M(self) -> jax.Array:
    return self.assign_M // self.pos_TR.shape[1]


def sort_by_expert(expert_idx_TR: jax.Array, num_experts: int) -> SortInfo:
  """Stable sort of the assignments by expert (pure jnp).

  A negative expert index ("no expert", MoDE's no-op experts) sorts after every group, so
  its row lies past ``sum(group_sizes_E)``, where the grouped matmul writes zeros.
  """
  flat = expert_idx_TR.reshape(-1).astype(jnp.int32)
  key = jnp.where(flat >= 0, flat, num_experts)
  order = jnp.argsort(key, stable=True).astype(jnp.int32)
  pos = jnp.zeros_like(order).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
  sizes = jnp.bincount(key, length=num_experts + 1)[:num_experts].astype(jnp.int32)
  return SortInfo(order, pos.reshape(expert_idx_TR.shape), sizes)


def permute_reference(x_TD: jax.Array, info: SortInfo) -> jax.Array:
  return x_TD[info.token_M]


def unpermute_reference(y_MD: jax.Array, info: SortInfo, gate_TR: jax.Array,
                        x_TD: jax.Array | None = None) -> jax.Array:
  rows = y_MD[info.pos_TR].astype(jnp.float32) * gate_TR.astype(jnp.float32)[..., None]
  out = jnp.sum(rows, axis=1)
  if x_TD is None:
    return out.astype(y_MD.dtype)
  return (x_TD.astype(jnp.float32) + out).astype(x_TD.dtype)


def grouped_matmul_reference(lhs_MI: jax.Array, rhs_GIN: jax.Array,
                             group_sizes_G: jax.Array) -> jax.Array:
  """Dense reference: every row times its group's matrix (G times the work; tests only)."""
  ends = jnp.cumsum(group_sizes_G)
  group_M = jnp.searchsorted(ends, jnp.arange(lhs_MI.shape[0]), side="right")
  out = jnp.zeros((lhs_MI.shape[0], rhs_GIN.shape[2]), jnp.float32)
  for g in range(rhs_GIN.shape[0]):
    prod = jnp.dot(lhs_MI, rhs_GIN[g], preferred_element_type=jnp.float32)
    out = jnp.where((group_M == g)[:, None], prod, out)
  return out.astype(lhs_MI.dtype)


# ---- permute / unpermute (Pallas row gathers) ---------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _permute_pallas(x_TD, info, backend, block_sizes):
  return gather_rows(x_TD[None], info.token_M[None, None], block_sizes=block_sizes,
                     interpret=_common.interpret_arg(backend))[0]


def _permute_fwd(x_TD, info, backend, block_sizes):
  return _permute_pallas(x_TD, info, backend, block_sizes), (info, jnp.zeros((0,), x_TD.dtype))


def _permute_bwd(backend, block_sizes, res, dx_MD):
  info, like = res
  dx = gather_rows(dx_MD[None], info.pos_TR.T[None], out_dtype=like.dtype, block_sizes=block_sizes,
                   interpret=_common.interpret_arg(backend))[0]
  return dx, None


_permute_pallas.defvjp(_permute_fwd, _permute_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _unpermute_pallas(y_MD, info, gate_TR, x_TD, backend, block_sizes):
  return gather_rows(y_MD[None], info.pos_TR.T[None], gate_TR.T[None], x_TD[None],
                     out_dtype=x_TD.dtype, block_sizes=block_sizes,
                     interpret=_common.interpret_arg(backend))[0]


def _unpermute_fwd(y_MD, info, gate_TR, x_TD, backend, block_sizes):
  out = _unpermute_pallas(y_MD, info, gate_TR, x_TD, backend, block_sizes)
  return out, (y_MD, info, gate_TR)


def _unpermute_bwd(backend, block_sizes, res, g_TD):
  y_MD, info, gate_TR = res
  interpret = _common.interpret_arg(backend)
  gate_M = gate_TR.reshape(-1)[info.assign_M]
  dy = gather_rows(g_TD[None], info.token_M[None, None], gate_M[None, None],
                   out_dtype=y_MD.dtype, block_sizes=block_sizes, interpret=interpret)[0]
  dgate_RT, _ = gather_dot(y_MD[None], info.pos_TR.T, g_TD[None], block_sizes=block_sizes,
                           interpret=interpret)
  return dy, None, dgate_RT.T.astype(gate_TR.dtype), g_TD


_unpermute_pallas.defvjp(_unpermute_fwd, _unpermute_bwd)


def permute(x_TD: jax.Array, info: SortInfo, *, backend: str | None = None,
            block_sizes: BlockSizes = BlockSizes()) -> jax.Array:
  """Rows of ``x_TD`` in expert-sorted order: ``x_MD``."""
  backend = _common.resolve_backend(backend)
  if backend == "xla":
    return permute_reference(x_TD, info)
  return _permute_pallas(x_TD, info, backend, block_sizes)


def unpermute(y_MD: jax.Array, info: SortInfo, gate_TR: jax.Array,
              x_TD: jax.Array | None = None, *, backend: str | None = None,
              block_sizes: BlockSizes = BlockSizes()) -> jax.Array:
  """``x_TD`` (or zeros) plus each token's gated expert outputs, float32, rounded once."""
  backend = _common.resolve_backend(backend)
  if backend == "xla":
    return unpermute_reference(y_MD, info, gate_TR, x_TD)
  if x_TD is None:
    x_TD = jnp.zeros((gate_TR.shape[0], y_MD.shape[1]), y_MD.dtype)
  _common.check_float_dtype(x_TD, "x_TD")
  return _unpermute_pallas(y_MD, info, gate_TR, x_TD, backend, block_sizes)


# ---- grouped matmul (maintained implementations behind one interface) --------------------


@dataclasses.dataclass(frozen=True)
class GmmTiling:
  """megablox tile sizes (m, k, n); shrunk to the problem for small shapes."""

  tm: int = 128
  tk: int = 128
  tn: int = 128


def _megablox(lhs_MI, rhs_GIN, group_sizes_G, backend, tiling: GmmTiling):
  m, k = lhs_MI.shape
  n = rhs_GIN.shape[2]
  # Rows past sum(group_sizes) belong to no group: gmm leaves their outputs (and, in its
  # backward, their input gradients) unwritten. Selecting them out on both sides makes both
  # zeros, like ragged_dot's.
  in_group_M = (jnp.arange(m) < jnp.sum(group_sizes_G))[:, None]
  lhs_MI = jnp.where(in_group_M, lhs_MI, 0)
  tm = min(tiling.tm, -(-m // 16) * 16)
  m_pad = -(-m // tm) * tm
  lhs = jnp.pad(lhs_MI, ((0, m_pad - m), (0, 0))) if m_pad != m else lhs_MI
  tiles = (tm, k if k <= tiling.tk else tiling.tk, n if n <= tiling.tn else tiling.tn)
  out = megablox.gmm(lhs, rhs_GIN, group_sizes_G.astype(jnp.int32), lhs_MI.dtype, tiles, None,
                     None, False, _common.interpret_arg(backend))[:m]
  return jnp.where(in_group_M, out, 0)


def grouped_matmul(lhs_MI: jax.Array, rhs_GIN: jax.Array, group_sizes_G: jax.Array, *,
                   backend: str | None = None, tiling: GmmTiling = GmmTiling()) -> jax.Array:
  """``out[m] = lhs[m] @ rhs[g(m)]`` where rows are grouped contiguously by ``group_sizes_G``.

  Accumulates in float32 and returns ``lhs_MI.dtype``. Backends: "xla" is
  ``jax.lax.ragged_dot``; "pallas_tpu"/"pallas_interpret" are megablox ``gmm`` (f32/bf16).
  """
  backend = _common.resolve_backend(backend)
  if backend == "xla":
    return jax.lax.ragged_dot(lhs_MI, rhs_GIN, group_sizes_G.astype(jnp.int32),
                              preferred_element_type=jnp.float32).astype(lhs_MI.dtype)
  _common.check_float_dtype(lhs_MI, "lhs_MI")
  return _megablox(lhs_MI, rhs_GIN, group_sizes_G, backend, tiling)


def dropless_moe(x_TD: jax.Array, expert_idx_TR: jax.Array, gate_TR: jax.Array,
                 w_in_EDF: jax.Array, w_out_EFD: jax.Array, *,
                 activation: Callable[[jax.Array], jax.Array] = jax.nn.gelu,
                 w_gate_EDF: jax.Array | None = None, residual_TD: jax.Array | None = None,
                 backend: str | None = None, matmul_backend: str | None = None,
                 block_sizes: BlockSizes = BlockSizes()) -> jax.Array:
  """A dropless MoE MLP: ``residual + sum_k gate * MLP_e(x)``, no token dropped.

  With ``w_gate_EDF`` the MLP is gated (``act(x W_gate) * (x W_in)``, e.g. SwiGLU).
  ``matmul_backend`` picks the grouped matmul separately (default: ``backend``).
  """
  info = sort_by_expert(expert_idx_TR, w_in_EDF.shape[0])
  gmm = functools.partial(grouped_matmul, group_sizes_G=info.group_sizes_E,
                          backend=matmul_backend or backend)
  x_MD = permute(x_TD, info, backend=backend, block_sizes=block_sizes)
  h_MF = gmm(x_MD, w_in_EDF)
  h_MF = activation(h_MF) if w_gate_EDF is None else activation(gmm(x_MD, w_gate_EDF)) * h_MF
  y_MD = gmm(h_MF.astype(x_TD.dtype), w_out_EFD)
  return unpermute(y_MD, info, gate_TR, residual_TD, backend=backend, block_sizes=block_sizes)
