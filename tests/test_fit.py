"""The compile-and-fit check: slice names, and (tpu_aot) a small config compiled for a v5e."""

import os

os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import pytest  # noqa: E402

from zoo.config import ConfigError, MeshConfig  # noqa: E402
from zoo.testing import tiny_config, tiny_model  # noqa: E402
from zoo.training import fit  # noqa: E402


@pytest.mark.parametrize("name, grid", [
    ("v5e-8", "v5e:2x4"), ("v5e-1", "v5e:1x1"), ("v6e-256", "v6e:16x16"),
    ("v5p-8", "v5p:2x2x1"), ("v5p-16", "v5p:2x2x2"), ("v5p-32", "v5p:2x2x4"),
    ("v5p-128", "v5p:4x4x4"), ("v4-8", "v4:2x2x1"), ("v5p:2x2x1", "v5p:2x2x1")])
def test_slice_names(name, grid):
  assert fit.topology(name).grid == grid


@pytest.mark.parametrize("name", ["v5p-6", "v7x-8", "v5e", "tpu-8", "v5p-1"])
def test_bad_slice_name_is_one_line(name):
  with pytest.raises(ConfigError, match="topology"):
    fit.topology(name)


@pytest.mark.tpu_aot
def test_small_step_fits_and_huge_batch_does_not():
  try:
    import libtpu  # noqa: F401
  except ImportError:
    pytest.fail("libtpu is missing: install the tpu extra, pip install -e '.[tpu]'")
  topo = fit.topology("v5e-4")
  # Wide enough that matmuls, which the analytic count holds, dominate the step's FLOPs.
  model = tiny_model(d_model=128, num_heads=4, d_ff=512, vocab_size=512)
  cfg = tiny_config(model=model, mesh=MeshConfig(data=-1), batch_size=8, seq_len=128)
  report = fit.check(cfg, topo)
  assert report.fits and report.chips == 4 and report.batch_per_chip == 2
  assert 0 < report.params < report.optimizer < report.total < topo.chip.hbm_bytes
  assert report.compiled_flops == pytest.approx(report.analytic_flops, rel=0.05)
  huge = fit.check(fit.with_batch(cfg, 4 << 20), topo)
  assert not huge.fits and "RESOURCE_EXHAUSTED" in huge.error


@pytest.mark.parametrize("limit", [0, 1, 5, 55, 1000])
@pytest.mark.parametrize("guess", [1, 3, 50, 400])
def test_search_finds_the_largest_fitting_batch(limit, guess):
  probes = []
  fits = lambda n: probes.append(n) or n <= limit  # noqa: E731
  assert fit._search(fits, guess, 1 << 16) == limit
  assert len(probes) <= 40


@pytest.mark.tpu_aot
@pytest.mark.parametrize("kind", ["moe", "mod"])
def test_kernels_run_per_shard_on_a_slice(kind):
  """MoE (experts over 4 chips) and MoD (data over 4 chips) with the Mosaic kernels on a
  v5p:2x2x1: the compiled step holds the kernels, gathers no whole [B, L, D] activation,
  and the MoE moves its slots by all-to-all."""
  try:
    import libtpu  # noqa: F401
  except ImportError:
    pytest.fail("libtpu is missing: install the tpu extra, pip install -e '.[tpu]'")
  from zoo.families.mixture_of_depths import ModConfig
  from zoo.families.mixture_of_experts import MoeConfig
  if kind == "moe":
    model = tiny_model(d_model=128, num_heads=4, d_ff=256, vocab_size=512, pattern=("dense", "moe"),
                       moe=MoeConfig(num_experts=8, backend="pallas_tpu"))
    mesh = MeshConfig(data=1, expert=4)
  else:
    model = tiny_model(d_model=128, num_heads=4, d_ff=256, vocab_size=512, pattern=("dense", "mod"),
                       mod=ModConfig(backend="pallas_tpu"))
    mesh = MeshConfig(data=4)
  cfg = tiny_config(model=model, mesh=mesh, batch_size=16, seq_len=128)
  report = fit.check(cfg, fit.topology("v5p:2x2x1"))
  assert report.fits, report.error
  assert report.mosaic_kernels > 0
  assert report.activation_gathers == 0
  if kind == "moe":
    assert report.collective_bytes["all-to-all"] > 0
