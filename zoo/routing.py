"""Routing statistics and routing maps of Mixture-of-Depths runs (Raposo et al. 2024).

`statistics` averages, over validation batches, each routed layer's fraction of tokens
processed and how often the causal substitutes used for sampling (the predictor, and the
router logit against its threshold) agree with the top-k decisions. `write_routing_map`
draws, for a few validation sequences, which tokens (x axis) each layer (y axis, layer 0 at
the bottom) processed, as the paper's Figure 5: purple processed by a routed block, pale
routed around it, grey a dense layer (processes every token), white padding.
"""

from __future__ import annotations

import collections

import jax
import numpy as np
from flax import nnx

from zoo import data, sharding
from zoo.models.mod import MoDBlock
from zoo.plotting import write_png

STATISTICS = ("routed_fraction", "predictor_accuracy", "router_accuracy", "router_mean",
              "router_std", "router_kept_mean")
PROCESSED, SKIPPED, DENSE, PADDING = (94, 60, 153), (235, 228, 240), (170, 170, 170), (255,) * 3


def mod_blocks(model: nnx.Module) -> list[MoDBlock]:
  return [m for _, m in nnx.iter_modules(model) if isinstance(m, MoDBlock)]


def recorded_forward(model: nnx.Module):
  """A jitted `fn(batch) -> aux` whose MoD layers also return their [B, L] "routed_mask"."""
  blocks = mod_blocks(model)
  for block in blocks:
    block.record = True
  graphdef, state = nnx.split(model)  # the graph keeps record=True; the model does not
  for block in blocks:
    block.record = False

  @jax.jit
  def forward(state, inputs, positions, segment_ids):
    return nnx.merge(graphdef, state)(inputs, positions, segment_ids)[1]

  return lambda b: forward(state, b["inputs"], b["positions"], b["segment_ids"])


def _eval_batches(run, num_batches: int | None):
  """The first `num_batches` batches of the run's validation sample (all when None)."""
  cfg = run.cfg
  eval_set = data.make_eval_set(cfg.data, run.tokenizer, seq_len=cfg.seq_len,
                                eval_tokens=cfg.eval_tokens)
  return eval_set.batches(cfg.batch_size, limit=num_batches)


def statistics(run, *, num_batches: int | None = None) -> dict:
  """{} for a run without routed blocks; else mean statistics overall and per layer."""
  model = run.model()
  if not mod_blocks(model):
    return {}
  forward = recorded_forward(model)
  sums, count = collections.defaultdict(float), 0
  with sharding.activate(run.mesh):
    for batch in _eval_batches(run, num_batches):
      aux = jax.device_get(forward(sharding.global_batch(batch, run.mesh)))
      for key, value in aux.items():
        layer, name = key.split("/", 1)
        if name in STATISTICS:
          sums[(layer, name)] += float(value)
      count += 1
  layers = collections.defaultdict(dict)
  for (layer, name), total in sums.items():
    layers[layer][name] = total / max(count, 1)
  result = {f"mod_{name}": float(np.mean([s[name] for s in layers.values()]))
            for name in ("predictor_accuracy", "router_accuracy", "routed_fraction")}
  return {**result, "mod_layers": dict(layers)}


def routing_image(masks: dict[int, np.ndarray], segment_ids_NL: np.ndarray, num_layers: int,
                  *, cell_w: int = 3, cell_h: int = 8, gap: int = 8) -> np.ndarray:
  """[H, W, 3] uint8: one panel per sequence, tokens across, layers up (layer 0 at the bottom).

  masks: {layer: [N, L] 1 where the routed layer processed the token}; other layers are dense.
  """
  n, length = segment_ids_NL.shape
  panels = []
  for i in range(n):
    panel = np.empty((num_layers, length, 3), np.uint8)
    for layer in range(num_layers):
      row = num_layers - 1 - layer
      if layer in masks:
        panel[row] = np.where(masks[layer][i][:, None] > 0, PROCESSED, SKIPPED)
      else:
        panel[row] = DENSE
    panel[:, segment_ids_NL[i] == 0] = PADDING
    panel = np.repeat(np.repeat(panel, cell_h, axis=0), cell_w, axis=1)
    panels.append(np.pad(panel, ((0, gap), (0, 0), (0, 0)), constant_values=255))
  return np.concatenate(panels, axis=0)


def routing_masks(run, num_sequences: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
  """Routing decisions (top-k, as in training) of the first validation sequences."""
  forward = recorded_forward(run.model())
  batch = next(iter(_eval_batches(run, 1)))
  with sharding.activate(run.mesh):
    aux = jax.device_get(forward(sharding.global_batch(batch, run.mesh)))
  masks = {int(key.split("/")[0][len("layer_"):]): np.asarray(value)[:num_sequences]
           for key, value in aux.items() if key.endswith("/routed_mask")}
  return masks, np.asarray(batch["segment_ids"])[:num_sequences]


def write_routing_map(run, path: str, *, num_sequences: int = 4) -> dict[int, np.ndarray]:
  """Writes the routing map PNG of `run` to `path`; returns the masks drawn."""
  masks, segment_ids = routing_masks(run, num_sequences)
  write_png(path, routing_image(masks, segment_ids, run.cfg.model.num_layers))
  return masks
