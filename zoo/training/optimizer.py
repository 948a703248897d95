"""Optimizer and learning-rate schedule from `OptimizerConfig`.

Linear warmup from 0 to `lr`, then cosine (or linear) decay to `min_lr_ratio * lr` at the
last step; global-norm clipping before the update. Weight decay, when set, applies to
matrices only (not norms' scales and biases), as in GPT-2 and nanoGPT.
"""

from __future__ import annotations

import jax
import optax

from zoo.config import OptimizerConfig


def schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
  warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
  end = cfg.lr * cfg.min_lr_ratio
  if cfg.schedule == "constant":
    decay = optax.constant_schedule(cfg.lr)
  elif cfg.schedule == "linear":
    decay = optax.linear_schedule(cfg.lr, end, max(total_steps - warmup, 1))
  else:
    decay = optax.cosine_decay_schedule(cfg.lr, max(total_steps - warmup, 1), end / cfg.lr)
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), decay], [warmup])


def _matrices(params):
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
  lr = schedule(cfg, total_steps)
  if cfg.name == "sgd":
    update = optax.sgd(lr, momentum=cfg.b1 or None)
  else:  # "adam" is AdamW without decay
    decay = 0.0 if cfg.name == "adam" else cfg.weight_decay
    update = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=decay,
                         mask=_matrices)
  clip = optax.clip_by_global_norm(cfg.grad_clip) if cfg.grad_clip else optax.identity()
  return optax.chain(clip, update)
