"""Structured layers: the Walsh-Hadamard transform, Adaptive FastFood, block-Hadamard MLP."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from flax import nnx

from configs import structured as structured_configs
from zoo import accounting
from zoo import config as config_lib
from zoo.config import ConfigError
from zoo.families.structured import StructuredConfig
from zoo.families import structured
from zoo.models import Decoder
from zoo.testing import tiny_config, tiny_model


@pytest.mark.parametrize("n", [1, 2, 8, 64])
def test_fwht_matches_the_explicit_hadamard_matrix(n):
  x = np.random.default_rng(0).normal(size=(3, 5, n)).astype(np.float32)
  want = x @ scipy.linalg.hadamard(n).T
  np.testing.assert_allclose(structured.fwht(jnp.asarray(x)), want, rtol=1e-5, atol=1e-5)
  # Along a middle axis, as the block-Hadamard MLP uses it.
  moved = structured.fwht(jnp.asarray(np.moveaxis(x, -1, 1)), axis=1)
  np.testing.assert_allclose(np.moveaxis(np.asarray(moved), 1, -1), want, rtol=1e-5, atol=1e-5)


def test_fwht_is_its_own_inverse_up_to_scale():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 256)), jnp.float32)
  np.testing.assert_allclose(structured.fwht(structured.fwht(x)), 256 * x, rtol=1e-5, atol=1e-4)


def test_fwht_is_n_log_n_additions_and_no_matmul():
  n, rows = 1024, 8
  fn = jax.jit(structured.fwht)
  jaxpr = str(jax.make_jaxpr(structured.fwht)(jnp.zeros((rows, n))))
  assert "dot_general" not in jaxpr
  flops = fn.lower(jax.ShapeDtypeStruct((rows, n), jnp.float32)).compile().cost_analysis()["flops"]
  assert flops == rows * n * math.log2(n)


def test_fwht_rejects_other_lengths():
  with pytest.raises(ValueError, match="power-of-two"):
    structured.fwht(jnp.zeros((2, 12)))


def _jit(module):
  """Calls `module` under jit: one compile instead of one per eager op."""
  graphdef, state = nnx.split(module)
  fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
  return lambda x: np.asarray(fn(state, jnp.asarray(x)))


def _hadamard(n):
  return scipy.linalg.hadamard(n).astype(np.float64)


@pytest.mark.parametrize("d_in, d_out", [(8, 8), (12, 40), (40, 12)])
def test_fastfood_linear_is_s_h_g_pi_h_b(d_in, d_out):
  """The layer equals the explicit matrix S H G Π H B / n (padding, stacking, truncation)."""
  layer = structured.FastFoodLinear(d_in, d_out, 0.02, rngs=nnx.Rngs(0))
  n, k = layer.n, layer.k
  b, g = np.asarray(layer.b_TN[...]), np.asarray(layer.g_TN[...])
  perm = np.asarray(layer.perm[...]).reshape(k, n) - n * np.arange(k)[:, None]
  rows = []
  for i in range(k):
    pi = np.eye(n)[perm[i]]  # (Π z)_j = z_perm[j]
    rows.append(_hadamard(n) @ np.diag(g[i]) @ pi @ _hadamard(n) @ np.diag(b[i]))
  w = np.concatenate(rows)[:d_out, :d_in] * np.asarray(layer.s_O[...])[:, None] / n
  x = np.random.default_rng(2).normal(size=(2, 3, d_in)).astype(np.float32)
  np.testing.assert_allclose(_jit(layer)(x), x @ w.T, rtol=1e-4, atol=1e-6)


def test_fastfood_output_variance_matches_the_dense_layer_it_emulates():
  d, std = 256, 0.02
  layer = structured.FastFoodLinear(d, 4 * d, std, rngs=nnx.Rngs(0))
  x = np.random.default_rng(3).normal(size=(512, d)).astype(np.float32)
  y = _jit(layer)(x)
  dense_std = std * np.sqrt(d)  # N(0, std^2) weights on unit-variance inputs
  assert abs(y.std() / dense_std - 1) < 0.1


def test_block_hadamard_mlp_is_w2_h_act_w1():
  cfg = tiny_model(d_model=16, d_ff=32, activation="relu", structured=StructuredConfig(4))
  mlp = structured.BlockHadamardMLP(cfg, rngs=nnx.Rngs(0))
  w1 = scipy.linalg.block_diag(*np.asarray(mlp.in_NDF[...]))  # [D, F]
  w2 = scipy.linalg.block_diag(*np.asarray(mlp.out_NFD[...]))  # [F, D]
  h_blocks = np.kron(_hadamard(4), np.eye(32 // 4)) / 2  # (H_4 ⊗ I) / sqrt(4)
  x = np.random.default_rng(4).normal(size=(2, 3, 16)).astype(np.float32)
  want = np.maximum(x @ w1, 0) @ h_blocks.T @ w2
  np.testing.assert_allclose(_jit(mlp)(x), want, rtol=1e-4, atol=1e-6)


def test_param_counts_per_kind():
  d, f, n_layers, v = 32, 128, 2, 64
  base = dict(num_layers=n_layers, d_model=d, d_ff=f, vocab_size=v)
  dense = accounting.count_params(tiny_model(**base))
  attention_and_norms = n_layers * (4 * d * d + 2 * d) + d
  assert dense.trainable_non_embedding == attention_and_norms + n_layers * 2 * d * f
  # FastFood: d -> f stacks f/d transforms of width d (3 diagonals, S only on kept outputs);
  # f -> d is one transform of width f with d outputs.
  ff = accounting.count_params(tiny_model(pattern=("fastfood",), **base))
  per_layer = (2 * (f // d) * d + f) + (2 * f + d)
  assert ff.structured_params == n_layers * per_layer
  assert ff.trainable_non_embedding == attention_and_norms + ff.structured_params
  assert ff.emulated_dense == n_layers * 2 * d * f and ff.frozen == 0
  assert ff.total == ff.embedding + ff.trainable_non_embedding  # permutations are not params
  bh = accounting.count_params(tiny_model(pattern=("block_hadamard",), **base))
  assert bh.structured_params == n_layers * 2 * d * f // 4
  assert bh.trainable_non_embedding == attention_and_norms + bh.structured_params
  assert bh.emulated_dense == n_layers * 2 * d * f


def test_fastfood_linear_flops_match_xla():
  """The FWHT is counted as it runs: n log2 n additions per transform."""
  d_in, d_out, tokens = 96, 384, 64  # 96 pads to 128
  layer = structured.FastFoodLinear(d_in, d_out, 0.02, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(layer)
  fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
  xla = fn.lower(state, jax.ShapeDtypeStruct((tokens, d_in), jnp.float32)).compile()
  weighted, transforms = structured.fastfood_flops(d_in, d_out)
  analytic = (weighted + transforms) * tokens
  # + d_out once per call: S / n is computed on the parameter, not per token.
  assert xla.cost_analysis()["flops"] == pytest.approx(analytic + d_out, rel=0.01)


@pytest.mark.parametrize("size", structured_configs.SIZES)
def test_presets_parse_validate_and_build(size):
  cfg = config_lib.from_configdict(structured_configs.get_config(size))
  config_lib.validate(cfg, num_devices=1)
  nnx.eval_shape(lambda: Decoder(cfg.model, rngs=nnx.Rngs(0)))
  if not size.startswith("tiny"):  # Table 3
    m = cfg.model
    assert (m.num_layers, m.d_model, m.num_heads, m.pattern) == (12, 1024, 16, (size,))
    assert cfg.optimizer.lr == 5e-4 and m.structured.num_blocks == 4 and cfg.seq_len == 1024


@pytest.mark.parametrize("blocks, d_ff", [(3, 0), (0, 0), (8, 68)])
def test_bad_block_counts_name_the_field(blocks, d_ff):
  model = tiny_model(pattern=("block_hadamard",), d_ff=d_ff,
                     structured=StructuredConfig(blocks))
  with pytest.raises(ConfigError) as err:
    config_lib.validate(tiny_config(model=model), 1)
  assert err.value.field == "model.structured.num_blocks"
