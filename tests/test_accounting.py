"""Analytic FLOPs against XLA's cost analysis; parameter counts against the formula."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from configs import dense
from zoo import accounting
from zoo import config as config_lib
from zoo.models import Decoder
from zoo.testing import tiny_model


def _xla_forward_flops(model_cfg, batch, seq_len) -> float:
  graphdef, state = nnx.split(nnx.eval_shape(lambda: Decoder(model_cfg, rngs=nnx.Rngs(0))))
  tokens = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32)
  forward = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t)[0])
  return forward.lower(state, tokens).compile().cost_analysis()["flops"]


@pytest.mark.parametrize("size", ["tiny", "xxsmall"])
def test_forward_flops_match_xla_within_10_percent(size):
  cfg = config_lib.from_configdict(dense.get_config(size))
  model_cfg = dataclasses.replace(cfg.model, compute_dtype="float32", scan_layers=False)
  batch = 2
  analytic = accounting.forward_flops_per_token(model_cfg, cfg.seq_len) * batch * cfg.seq_len
  xla = _xla_forward_flops(model_cfg, batch, cfg.seq_len)
  print(f"{size}: analytic {analytic:.4g} xla {xla:.4g} ratio {analytic / xla:.3f}")
  assert abs(analytic / xla - 1) < 0.10


def test_param_counts_match_the_formula():
  cfg = tiny_model(num_layers=3, d_model=32, num_heads=4, d_ff=64, vocab_size=100,
                   tie_embeddings=False)
  counts = accounting.count_params(cfg)
  d, f, v, n = 32, 64, 100, 3
  per_layer = 4 * d * d + 2 * d * f + 2 * d  # qkv + out, two MLP matrices, two norm scales
  assert counts.embedding == 2 * v * d
  assert counts.trainable_non_embedding == n * per_layer + d  # + final norm
  assert counts.total == counts.embedding + counts.trainable_non_embedding
  assert counts.frozen == 0 and counts.active_per_token == counts.total


def test_tied_embeddings_count_once():
  tied = accounting.count_params(tiny_model(tie_embeddings=True))
  untied = accounting.count_params(tiny_model(tie_embeddings=False))
  assert untied.embedding == 2 * tied.embedding
