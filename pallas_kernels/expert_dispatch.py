"""Mixture-of-Experts dispatch and combine with a fixed capacity per expert.

Glossary (zoo/__init__.py): T tokens (one routing group), R routes per token (the experts a
token is sent to), E experts, C capacity (slots per expert), D width.

Routers upstream supply only indices and gates:

* token choice (Switch top-1, top-k; Fedus et al., 2021): ``expert_idx_TR`` and ``gate_TR``.
  Slots are filled first come, first served in the order (choice rank k, then token t): every
  token's first choice is placed before any token's second choice, and within a rank earlier
  tokens win (as flaxformer's ``TokensChooseMaskedRouter``). A choice that finds its expert
  full is dropped; a token with all choices dropped passes through unchanged. A negative
  expert index is a choice of no expert (a no-op expert): it is never placed.
* expert choice (Zhou et al., 2022): ``token_idx_EC`` and ``gate_EC``, each expert's C chosen
  tokens (distinct within an expert). A token may be chosen by any number of experts, or none.

    x_ECD[e, c]  = x_TD[token in slot (e, c)]   (zeros for an empty slot)
    out_TD[t]    = x_TD[t] + sum over slots (e, c) holding t of  gate * y_ECD[e, c]

``combine`` adds into the residual ``x_TD`` it is given (pass ``None`` for zeros), in float32,
rounded once. Kernels: every gather is ``route_gather.gather_rows``; the expert-choice combine
(a scatter-add where tokens repeat across experts) is ``route_scatter.scatter_add_rows`` run
expert by expert, through a float32 copy when the residual is bfloat16.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from pallas_kernels import _common
from pallas_kernels.route_gather import BlockSizes, gather_rows
from pallas_kernels.route_scatter import gather_dot, scatter_add_rows


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["slot_token_EC", "slot_gate_EC", "slot_TR", "gate_TR"],
                   meta_fields=["num_tokens"])
@dataclasses.dataclass(frozen=True)
class DispatchInfo:
  """Where every token went. ``slot_TR``/``gate_TR`` are None for expert choice."""

  slot_token_EC: jax.Array  # int32, token in each slot, -1 if empty
  slot_gate_EC: jax.Array  # gate of the token in each slot, 0 if empty
  slot_TR: jax.Array | None  # int32, flat slot e * C + c of each choice, -1 if dropped
  gate_TR: jax.Array | None
  num_tokens: int

  def dropped_fraction(self) -> jax.Array:
    """Fraction of token-choice assignments that found their expert full."""
    return jnp.mean((self.slot_TR < 0).astype(jnp.float32))


def route_token_choice(expert_idx_TR: jax.Array, gate_TR: jax.Array, num_experts: int,
                       capacity: int) -> DispatchInfo:
  """Assigns slots first come, first served in (rank, token) order (pure jnp, O(TK log TK)).

  An expert index below 0 means "no expert" (MoDE's no-op experts): that choice takes no
  slot and adds nothing, like a dropped one.
  """
  num_tokens, k = expert_idx_TR.shape
  expert_P = expert_idx_TR.T.reshape(-1).astype(jnp.int32)  # priority order: rank, then token
  valid_P = expert_P >= 0
  key_P = jnp.where(valid_P, expert_P, num_experts)  # "no expert" sorts after every expert
  order = jnp.argsort(key_P, stable=True)
  counts = jnp.bincount(key_P, length=num_experts + 1)
  starts = jnp.cumsum(counts) - counts
  rank_sorted = jnp.arange(k * num_tokens, dtype=jnp.int32) - starts[key_P[order]]
  rank_P = jnp.zeros_like(expert_P).at[order].set(rank_sorted)
  kept_P = valid_P & (rank_P < capacity)
  slot_P = jnp.where(kept_P, expert_P * capacity + rank_P, -1)
  token_P = jnp.tile(jnp.arange(num_tokens, dtype=jnp.int32), k)
  gate_P = gate_TR.T.reshape(-1)
  target = jnp.where(kept_P, slot_P, num_experts * capacity)  # dropped: out of range
  empty = jnp.full((num_experts * capacity,), -1, jnp.int32)
  slot_token = empty.at[target].set(token_P, mode="drop", unique_indices=True)
  slot_gate = jnp.zeros((num_experts * capacity,), gate_TR.dtype).at[target].set(
      gate_P, mode="drop", unique_indices=True)
  return DispatchInfo(slot_token.reshape(num_experts, capacity),
                      slot_gate.reshape(num_experts, capacity),
                      slot_P.reshape(k, num_tokens).T, gate_TR, num_tokens)


def route_expert_choice(token_idx_EC: jax.Array, gate_EC: jax.Array,
                        num_tokens: int) -> DispatchInfo:
  """Expert choice: every slot is filled by the token its expert picked."""
  return DispatchInfo(token_idx_EC.astype(jnp.int32), gate_EC, None, None, num_tokens)


def dispatch_reference(x_TD: jax.Array, info: DispatchInfo) -> jax.Array:
  """Pure-jnp reference: ``x_ECD``, zero rows for empty slots."""
  tok = info.slot_token_EC
  return jnp.where((tok >= 0)[..., None], x_TD[jnp.maximum(tok, 0)], 0).astype(x_TD.dtype)


def combine_reference(y_ECD: jax.Array, info: DispatchInfo, x_TD: jax.Array | None) -> jax.Array:
  """Pure-jnp reference: residual plus gated expert outputs, float32, rounded once."""
  num_experts, cap, width = y_ECD.shape
  out_dtype = y_ECD.dtype if x_TD is None else x_TD.dtype
  acc = (jnp.zeros((info.num_tokens, width), jnp.float32) if x_TD is None
         else x_TD.astype(jnp.float32))
  if info.slot_TR is not None:  # token choice: a gather of K rows per token
    y_flat = y_ECD.reshape(num_experts * cap, width).astype(jnp.float32)
    valid = (info.slot_TR >= 0)[..., None]
    rows = y_flat[jnp.maximum(info.slot_TR, 0)] * info.gate_TR.astype(jnp.float32)[..., None]
    return (acc + jnp.sum(jnp.where(valid, rows, 0.0), axis=1)).astype(out_dtype)
  upd = info.slot_gate_EC.astype(jnp.float32)[..., None] * y_ECD.astype(jnp.float32)
  tok = info.slot_token_EC.reshape(-1)
  tok = jnp.where(tok >= 0, tok, info.num_tokens)  # empty slots fall out of range
  return acc.at[tok].add(upd.reshape(-1, width), mode="drop").astype(out_dtype)


# ---- Pallas paths ------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _dispatch_pallas(x_TD, slot_token_EC, slot_TR, backend, block_sizes):
  return gather_rows(x_TD[None], slot_token_EC[:, None, :], block_sizes=block_sizes,
                     interpret=_common.interpret_arg(backend))


def _dispatch_fwd(x_TD, slot_token_EC, slot_TR, backend, block_sizes):
  out = _dispatch_pallas(x_TD, slot_token_EC, slot_TR, backend, block_sizes)
  # Residuals must be arrays: keep T and the dtype as an empty one.
  return out, (slot_token_EC, slot_TR, jnp.zeros((x_TD.shape[0], 0), x_TD.dtype))


def _dispatch_bwd(backend, block_sizes, res, dx_ECD):
  slot_token_EC, slot_TR, like = res
  num_tokens, dtype = like.shape[0], like.dtype
  num_experts, cap, width = dx_ECD.shape
  interpret = _common.interpret_arg(backend)
  if slot_TR is not None:  # token choice: each token sums its K slots
    dx = gather_rows(dx_ECD.reshape(1, num_experts * cap, width), slot_TR.T[None],
                     out_dtype=dtype, block_sizes=block_sizes, interpret=interpret)[0]
  else:  # expert choice: tokens repeat across experts, scatter-add expert by expert
    zeros = jnp.zeros((1, num_tokens, width), jnp.float32)
    dx = scatter_add_rows(zeros, slot_token_EC, dx_ECD, block_sizes=block_sizes,
                          interpret=interpret)[0].astype(dtype)
  return dx, None, None


_dispatch_pallas.defvjp(_dispatch_fwd, _dispatch_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _combine_topk_pallas(y_ECD, x_TD, gate_TR, slot_TR, slot_token_EC, slot_gate_EC, backend,
                         block_sizes):
  num_experts, cap, width = y_ECD.shape
  return gather_rows(y_ECD.reshape(1, num_experts * cap, width), slot_TR.T[None], gate_TR.T[None],
                     x_TD[None], out_dtype=x_TD.dtype, block_sizes=block_sizes,
                     interpret=_common.interpret_arg(backend))[0]


def _combine_topk_fwd(y_ECD, x_TD, gate_TR, slot_TR, slot_token_EC, slot_gate_EC, backend,
                      block_sizes):
  out = _combine_topk_pallas(y_ECD, x_TD, gate_TR, slot_TR, slot_token_EC, slot_gate_EC,
                             backend, block_sizes)
  return out, (y_ECD, gate_TR, slot_TR, slot_token_EC, slot_gate_EC)


def _combine_topk_bwd(backend, block_sizes, res, g_TD):
  y_ECD, gate_TR, slot_TR, slot_token_EC, slot_gate_EC = res
  num_experts, cap, width = y_ECD.shape
  interpret = _common.interpret_arg(backend)
  dy = gather_rows(g_TD[None], slot_token_EC.reshape(1, 1, -1), slot_gate_EC.reshape(1, 1, -1),
                   out_dtype=y_ECD.dtype, block_sizes=block_sizes, interpret=interpret)
  dgate_RT, _ = gather_dot(y_ECD.reshape(1, num_experts * cap, width), slot_TR.T, g_TD[None],
                           block_sizes=block_sizes, interpret=interpret)
  # The output does not depend on slot_gate_EC (it is gate_TR rearranged, used above for dy).
  return (dy.reshape(y_ECD.shape), g_TD, dgate_RT.T.astype(gate_TR.dtype), None, None, None)


_combine_topk_pallas.defvjp(_combine_topk_fwd, _combine_topk_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _combine_ec_pallas(y_ECD, x_TD, gate_EC, token_EC, backend, block_sizes):
  acc = x_TD.astype(jnp.float32)[None]  # a no-op for float32 residuals
  out = scatter_add_rows(acc, token_EC, y_ECD, gate_EC, block_sizes=block_sizes,
                         interpret=_common.interpret_arg(backend))
  return out[0].astype(x_TD.dtype)


def _combine_ec_fwd(y_ECD, x_TD, gate_EC, token_EC, backend, block_sizes):
  out = _combine_ec_pallas(y_ECD, x_TD, gate_EC, token_EC, backend, block_sizes)
  return out, (y_ECD, gate_EC, token_EC)


def _combine_ec_bwd(backend, block_sizes, res, g_TD):
  y_ECD, gate_EC, token_EC = res
  dgate, dy = gather_dot(g_TD[None], token_EC, y_ECD, gate_EC, scaled_dtype=y_ECD.dtype,
                         block_sizes=block_sizes, interpret=_common.interpret_arg(backend))
  return dy, g_TD, dgate.astype(gate_EC.dtype), None


_combine_ec_pallas.defvjp(_combine_ec_fwd, _combine_ec_bwd)


# ---- Public API --------------------------------------------------------------------------


def dispatch_tokens(x_TD: jax.Array, info: DispatchInfo, *, backend: str | None = None,
                    block_sizes: BlockSizes = BlockSizes()) -> jax.Array:
  """Gathers tokens into expert slots ``x_ECD`` (zeros in empty slots)."""
  backend = _common.resolve_backend(backend)
  if backend == "xla":
    return dispatch_reference(x_TD, info)
  return _dispatch_pallas(x_TD, info.slot_token_EC, info.slot_TR, backend, block_sizes)


def dispatch(x_TD: jax.Array, expert_idx_TR: jax.Array, gate_TR: jax.Array, num_experts: int,
             capacity: int, *, backend: str | None = None,
             block_sizes: BlockSizes = BlockSizes()) -> tuple[jax.Array, DispatchInfo]:
  """Token-choice dispatch with a capacity: returns ``(x_ECD, info)`` for ``combine``.

  Args:
    x_TD: tokens of one routing group (shard groups with ``jax.shard_map``).
    expert_idx_TR: int chosen experts, rank 0 first.
    gate_TR: gate weights, differentiable (through ``combine``).
    num_experts, capacity: E and C (slots per expert: the router's capacity rule).
    backend: "xla", "pallas_tpu", "pallas_interpret", or None to pick by platform.
  """
  info = route_token_choice(expert_idx_TR, gate_TR, num_experts, capacity)
  return dispatch_tokens(x_TD, info, backend=backend, block_sizes=block_sizes), info


def expert_choice_dispatch(
    x_TD: jax.Array, token_idx_EC: jax.Array, gate_EC: jax.Array, *,
    backend: str | None = None,
    block_sizes: BlockSizes = BlockSizes()) -> tuple[jax.Array, DispatchInfo]:
  """Expert-choice dispatch: returns ``(x_ECD, info)`` for ``combine``."""
  info = route_expert_choice(token_idx_EC, gate_EC, x_TD.shape[0])
  return dispatch_tokens(x_TD, info, backend=backend, block_sizes=block_sizes), info


def combine(y_ECD: jax.Array, info: DispatchInfo, x_TD: jax.Array | None = None, *,
            backend: str | None = None, block_sizes: BlockSizes = BlockSizes()) -> jax.Array:
  """``x_TD`` plus the gated expert outputs of every kept assignment; dropped tokens keep x."""
  backend = _common.resolve_backend(backend)
  if backend == "xla":
    return combine_reference(y_ECD, info, x_TD)
  if x_TD is None:  # under shard_map: varying like the expert outputs, as its cotangent is
    x_TD = _common.vary_like(jnp.zeros((info.num_tokens, y_ECD.shape[-1]), y_ECD.dtype), y_ECD)
  _common.check_float_dtype(x_TD, "x_TD")
  if info.slot_TR is not None:
    return _combine_topk_pallas(y_ECD, x_TD, info.gate_TR, info.slot_TR, info.slot_token_EC,
                                info.slot_gate_EC, backend, block_sizes)
  return _combine_ec_pallas(y_ECD, x_TD, info.slot_gate_EC, info.slot_token_EC, backend,
                            block_sizes)
