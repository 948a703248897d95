"""The loop's time accounting (shares of wall time outside the step) and profiler traces."""

import glob
import json

import jax
import pytest

from zoo import config as config_lib
from zoo.config import DataConfig, MeshConfig
from zoo.testing import tiny_config, tiny_model
from zoo.training import train


@pytest.mark.slow
def test_trace_of_the_chosen_steps_and_shares_outside_the_step(corpus, tmp_path):
  path, cache = corpus
  cfg = tiny_config(model=tiny_model(vocab_size=512), mesh=MeshConfig(data=-1), steps=6,
                    log_every=2, eval_every=4, eval_tokens=64, checkpoint_every=4,
                    profile_start=3, profile_steps=2,
                    data=DataConfig(source="local_text", path=path, cache_dir=cache,
                                    vocab_size=512))
  config_lib.validate(cfg, jax.device_count())
  train(cfg, str(tmp_path), echo=lambda *a, **k: None)
  traces = glob.glob(str(tmp_path / "profile" / "process_0" / "**" / "*.xplane.pb"),
                     recursive=True)
  assert len(traces) == 1
  with open(tmp_path / "metrics.jsonl") as f:
    records = {r["step"]: r for r in map(json.loads, f)}
  for step in (2, 4, 6):
    r = records[step]
    parts = r["data_share"] + r["eval_share"] + r["checkpoint_share"]
    assert r["outside_step_share"] == pytest.approx(parts)
    assert 0 <= r["outside_step_share"] < 1
  # The evaluation and checkpoint after step 4 fall in the interval that ends at step 6.
  assert records[6]["eval_share"] > 0 and records[6]["checkpoint_share"] > 0
  assert records[4]["eval_share"] == 0
