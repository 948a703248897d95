"""Balanced assignment of tokens to experts for BASE layers, solved in JAX by an auction.

Lewis et al. 2021, "BASE Layers: Simplifying Training of Large, Sparse Models"
(arXiv:2103.16716): during training the T tokens of a routing group are assigned to E
experts so that every expert gets exactly C = T / E tokens and the total affinity is
maximal,

    max  sum_t s[t, e(t)]   subject to  |{t : e(t) = e}| = C  for every e.

fairseq solves it with an auction (`clib/libbase/balanced_assignment.cpp`); so do we, in its
"similar objects" form (Bertsekas 1988): each expert is C identical slots with one price
p_e, the lowest winning bid it holds once it is full (0 before). In each round every
unassigned token bids for its best expert e* = argmax_e (s[t, e] - p_e), raising the price
by the margin over its second-best expert plus eps,

    bid_t = s[t, e*] - max_{e != e*} (s[t, e] - p_e) + eps,

and every expert keeps its C highest bids (holders and new bidders together), releasing the
rest. Once a slot has been bid for it stays taken, so the auction ends with every token
assigned and, by eps-complementary slackness, a total within T * eps of the optimum.
Rounds are capped; if the cap is reached, the tokens still unassigned fill the free slots in
order, so the result is exactly balanced whatever happens (`auction_complete` says whether
the auction finished by itself).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _keep_top_bids(target_T, bid_T, num_experts: int, capacity: int):
  """For each expert, which of the tokens targeting it hold one of its C highest bids."""
  num_tokens = target_T.shape[0]
  # Sort by expert, then by bid descending; ties go to the lower token index.
  order = jnp.lexsort((jnp.arange(num_tokens), -bid_T, target_T))
  counts = jnp.bincount(jnp.where(target_T >= 0, target_T, num_experts), length=num_experts + 1)
  starts = jnp.cumsum(counts) - counts
  rank_sorted = jnp.arange(num_tokens) - starts[target_T[order]]
  rank_T = jnp.zeros((num_tokens,), jnp.int32).at[order].set(rank_sorted.astype(jnp.int32))
  keep_T = (target_T >= 0) & (rank_T < capacity)
  # The price of a full expert is its C-th highest bid.
  last = jnp.where(keep_T & (rank_T == capacity - 1), target_T, num_experts)
  price_E = jnp.full((num_experts,), -jnp.inf).at[last].set(bid_T, mode="drop")
  return keep_T, price_E


def balanced_assignment(score_TE: jax.Array, *, eps: float | None = None,
                        max_rounds: int = 1000) -> tuple[jax.Array, jax.Array]:
  """Expert of each token, each expert getting exactly T / E tokens; and whether the
  auction finished within `max_rounds` (else the leftovers were placed in order).

  `eps` defaults to 1e-3 of the score range divided by T, so the total is within 0.1% of
  the range of the optimum. No gradient flows through the assignment.
  """
  num_tokens, num_experts = score_TE.shape
  if num_tokens % num_experts:
    raise ValueError(f"{num_tokens} tokens cannot be split evenly over {num_experts} experts")
  capacity = num_tokens // num_experts
  s = jax.lax.stop_gradient(score_TE).astype(jnp.float32)
  if eps is None:
    eps = 1e-3 * (jnp.max(s) - jnp.min(s) + 1e-6) / num_tokens

  def cond(state):
    assign_T, _, _, rounds = state
    return jnp.any(assign_T < 0) & (rounds < max_rounds)

  def body(state):
    assign_T, held_T, price_E, rounds = state
    value_TE = s - price_E
    top_T2, best_T2 = jax.lax.top_k(value_TE, 2) if num_experts > 1 else (
        jnp.concatenate([value_TE, value_TE], 1), jnp.zeros((num_tokens, 2), jnp.int32))
    best_T = best_T2[:, 0]
    bid_T = jnp.take_along_axis(s, best_T[:, None], 1)[:, 0] - top_T2[:, 1] + eps
    free = assign_T < 0
    target_T = jnp.where(free, best_T, assign_T)
    bid_T = jnp.where(free, bid_T, held_T)
    keep_T, full_price_E = _keep_top_bids(target_T, bid_T, num_experts, capacity)
    price_E = jnp.where(jnp.isfinite(full_price_E), full_price_E, price_E)
    assign_T = jnp.where(keep_T, target_T, -1)
    held_T = jnp.where(keep_T, bid_T, -jnp.inf)
    return assign_T, held_T, price_E, rounds + 1

  init = (jnp.full((num_tokens,), -1, jnp.int32), jnp.full((num_tokens,), -jnp.inf),
          jnp.zeros((num_experts,), jnp.float32), jnp.zeros((), jnp.int32))
  assign_T, _, _, _ = jax.lax.while_loop(cond, body, init)
  complete = jnp.all(assign_T >= 0)
  return _fill_leftovers(assign_T, num_experts, capacity), complete


def _fill_leftovers(assign_T, num_experts: int, capacity: int):
  """Tokens still unassigned take the free slots in token order (a no-op when none are)."""
  free = assign_T < 0
  used_E = jnp.bincount(jnp.where(free, num_experts, assign_T), length=num_experts + 1)[:-1]
  slot_end_E = jnp.cumsum(capacity - used_E)
  rank_T = jnp.cumsum(free) - 1
  fill_T = jnp.searchsorted(slot_end_E, rank_T, side="right").astype(jnp.int32)
  return jnp.where(free, fill_T, assign_T)
