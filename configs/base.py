"""Shared defaults for every run; family files start from `get_config()` and override.

Not meant to be run on its own: use a family file, e.g.

  python train.py --config configs/dense.py:tiny --workdir /tmp/zoo/dense_tiny
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.steps = 1000
  c.batch_size = 16  # sequences per optimizer step, over all devices
  c.seq_len = 256
  c.grad_accum_steps = 1
  c.log_every = 10
  c.eval_every = 200
  c.eval_batches = 8
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.peak_flops_per_device = 0.0  # 0: from the device kind (measured on CPU)
  c.profile_start = 5  # a jax.profiler trace of profile_steps steps from here (0: none)
  c.profile_steps = 0

  c.model = ml_collections.ConfigDict(dict(
      num_layers=2, d_model=128, num_heads=4, head_dim=0, d_ff=0, activation="gelu",
      dropout=0.0, tie_embeddings=True, pattern=("dense",), stack="plain", norm="rmsnorm",
      rope_base=10_000.0, init_std=0.02, scan_layers=False, remat="none",
      compute_dtype="float32", param_dtype="float32",
      # Family options (zoo/config.py documents each group).
      ladder=dict(ladder_size=2),
      staircase=dict(forward_size=64, staircase_size=128, memory=128, attention_span=128),
      doped=dict(frozen_hidden_mult=6),
      structured=dict(num_blocks=4),
      mod=dict(capacity=0.125, routing="learned", router_loss_weight=0.01,
               predictor_loss_weight=0.1, predictor_hidden=0, decode="predictor",
               decode_threshold=0.0)))
  c.model.moe = ml_collections.ConfigDict(dict(
      router="switch", num_experts=8, top_k=1, capacity_factor=1.25, granularity=1,
      aux_loss_weight=0.01, z_loss_weight=0.0, hash_kind="random", hash_frequencies="",
      hash_seed=0, noop_experts=0, output_norm=False, backend=""))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, expert=1))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", lr=1e-3, warmup_steps=100, schedule="cosine", min_lr_ratio=0.1,
      b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, grad_clip=1.0))
  c.data = ml_collections.ConfigDict(dict(
      source="stdlib", path="", name="", text_feature="text", train_split="train",
      eval_split="validation", vocab_size=8192, tokenizer="", cache_dir="",
      num_workers=0))
  return c
