"""Writes tests/testdata/layout1_checkpoint: a tiny MoD+MoE run saved by the code of 70aefaa."""
# Ran once at commit 70aefaa (before the family registry); kept to show how the data was made.
import dataclasses, json, os, shutil, sys
import jax, numpy as np
from zoo import checkpoint, sharding
from zoo.testing import tiny_config, tiny_model, random_batch
from zoo.training import step as step_lib
from zoo.config import MoeConfig

out = "tests/testdata/layout1_checkpoint"
shutil.rmtree(out, ignore_errors=True)
model = tiny_model(vocab_size=32, d_model=16, num_heads=2, d_ff=32, pattern=("mod", "moe"),
                   moe=MoeConfig(num_experts=4))
cfg = tiny_config(model=model, batch_size=2, seq_len=16)
mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
trainer, state, shardings = step_lib.create(cfg, mesh)
train_fn, eval_fn = step_lib.jit_steps(trainer, shardings, mesh)
batch = random_batch(cfg)
with sharding.activate(mesh):
  for _ in range(3):
    state, m = train_fn(state, sharding.global_batch(batch, mesh))
  s, n = eval_fn(state, sharding.global_batch(batch, mesh))
ck = checkpoint.Checkpointer(os.path.join(out, "checkpoints"), keep=1, async_save=False)
ck.save(3, state, None, checkpoint.metadata(cfg, "no-tokenizer"))
ck.close()
with open(os.path.join(out, "expected.json"), "w") as f:
  json.dump({"eval_loss_sum": float(s), "eval_tokens": float(n), "commit": "70aefaa",
             "config": dataclasses.asdict(cfg)}, f, indent=1)
np.savez(os.path.join(out, "batch.npz"), **batch)
print(float(s)/float(n))
