"""A plain nanoGPT-style PyTorch peer of the dense `tiny` model; times its train step on CPU.

Same architecture as zoo's dense block stack: token embedding tied to the output
projection, pre-norm blocks x + Attn(RMSNorm(x)), x + MLP(RMSNorm(x)), rotary positions on
queries and keys (pairs (i, i + K/2), as zoo.models.parts.rotary), causal softmax attention
(`F.scaled_dot_product_attention`, is_causal), tanh-GELU MLP, no biases, a final RMSNorm,
float32 cross-entropy; AdamW (betas 0.9/0.95, eps 1e-8, no decay; fused where the CPU build
has it) after global-norm clipping at 1.0, at a constant learning rate (ours follows a
schedule, which costs nothing). Everything float32. Loaded with zoo's initial weights it
gives zoo's loss (checked to float32 print precision on the `tiny` preset).

Needs torch (CPU); run by benchmarks/cpu_peer.py with the torch venv's python, or alone:

  .venv-torch/bin/python benchmarks/torch_peer.py --steps 10 --repeats 3

Prints one JSON line (the last line of stdout) with tokens/s of every repeat.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
  def __init__(self, d: int, eps: float = 1e-6):
    super().__init__()
    self.eps = eps
    self.weight = nn.Parameter(torch.ones(d))

  def forward(self, x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary_tables(seq_len: int, head_size: int, base: float):
  half = head_size // 2
  freq = base ** (-torch.arange(half, dtype=torch.float32) / half)
  angle = torch.arange(seq_len, dtype=torch.float32)[:, None] * freq  # [L, K/2]
  return torch.cos(angle)[:, None, :], torch.sin(angle)[:, None, :]  # [L, 1, K/2]


def rotate(x, cos, sin):  # x [B, L, H, K]
  x1, x2 = x.chunk(2, dim=-1)
  return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
  def __init__(self, d: int, heads: int):
    super().__init__()
    self.heads = heads
    self.qkv = nn.Linear(d, 3 * d, bias=False)
    self.proj = nn.Linear(d, d, bias=False)

  def forward(self, x, cos, sin):
    b, l, d = x.shape
    q, k, v = self.qkv(x).view(b, l, 3, self.heads, d // self.heads).unbind(2)
    q, k = rotate(q, cos, sin), rotate(k, cos, sin)
    y = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
    return self.proj(y.transpose(1, 2).reshape(b, l, d))


class MLP(nn.Module):
  def __init__(self, d: int, f: int):
    super().__init__()
    self.fc = nn.Linear(d, f, bias=False)
    self.proj = nn.Linear(f, d, bias=False)

  def forward(self, x):
    return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
  def __init__(self, d: int, heads: int, f: int):
    super().__init__()
    self.ln_1, self.attn = RMSNorm(d), Attention(d, heads)
    self.ln_2, self.mlp = RMSNorm(d), MLP(d, f)

  def forward(self, x, cos, sin):
    x = x + self.attn(self.ln_1(x), cos, sin)
    return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
  def __init__(self, vocab: int, d: int, layers: int, heads: int, f: int, seq_len: int,
               rope_base: float = 10_000.0):
    super().__init__()
    self.wte = nn.Embedding(vocab, d)
    self.blocks = nn.ModuleList([Block(d, heads, f) for _ in range(layers)])
    self.ln_f = RMSNorm(d)
    cos, sin = rotary_tables(seq_len, d // heads, rope_base)
    self.register_buffer("cos", cos, persistent=False)
    self.register_buffer("sin", sin, persistent=False)
    for name, p in self.named_parameters():
      if p.dim() >= 2:
        std = 0.02 / math.sqrt(2 * layers) if name.endswith("proj.weight") else 0.02
        nn.init.normal_(p, std=std)

  def forward(self, idx, targets):
    x = self.wte(idx)
    for block in self.blocks:
      x = block(x, self.cos, self.sin)
    logits = F.linear(self.ln_f(x), self.wte.weight)  # tied embeddings
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--seq_len", type=int, default=256)
  ap.add_argument("--layers", type=int, default=4)
  ap.add_argument("--d_model", type=int, default=256)
  ap.add_argument("--heads", type=int, default=4)
  ap.add_argument("--d_ff", type=int, default=1024)
  ap.add_argument("--vocab", type=int, default=8192)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
  ap.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--compile", action="store_true", help="torch.compile the model")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()

  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  model = GPT(args.vocab, args.d_model, args.layers, args.heads, args.d_ff, args.seq_len)
  n_params = sum(p.numel() for p in model.parameters())
  try:
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.0, fused=True)
    fused = True
  except (RuntimeError, TypeError):
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.0)
    fused = False
  fwd = torch.compile(model) if args.compile else model

  def batch():
    tokens = torch.randint(1, args.vocab, (args.batch, args.seq_len + 1))
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

  def step(x, y):
    opt.zero_grad(set_to_none=True)
    loss = fwd(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss

  batches = [batch() for _ in range(4)]
  t0 = time.perf_counter()
  for i in range(args.warmup):
    loss = step(*batches[i % len(batches)])
  warmup_s = time.perf_counter() - t0
  rates, cpu_rates = [], []
  tokens = args.batch * args.seq_len * args.steps
  for _ in range(args.repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(args.steps):
      loss = step(*batches[i % len(batches)])
    loss.item()
    rates.append(tokens / (time.perf_counter() - t0))
    cpu_rates.append(tokens / (time.process_time() - c0))
  print(json.dumps({
      "name": "torch" + ("+compile" if args.compile else ""), "torch": torch.__version__,
      "threads": torch.get_num_threads(), "fused_adamw": fused, "params": n_params,
      "warmup_s": round(warmup_s, 2), "loss": loss.item(),
      "tokens_per_s": statistics.median(rates), "repeats": [round(r, 1) for r in rates],
      "tokens_per_cpu_s": statistics.median(cpu_rates),
      "cpu_repeats": [round(r, 1) for r in cpu_rates]}))


if __name__ == "__main__":
  main()
