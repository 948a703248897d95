"""A study end to end: spec -> isoFLOP runs -> resumable runner -> results table -> fits."""

import os
import random

import pandas as pd
import pytest

from zoo.studies import cli, fits, results, runner
from zoo.studies import spec as spec_lib

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards hex jovial zebras".split()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  """Two budgets x two widths of a tiny dense model on a small local corpus."""
  root = tmp_path_factory.mktemp("study")
  corpus = root / "corpus"
  corpus.mkdir()
  rng = random.Random(0)
  for i in range(12):
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(60)]
    (corpus / f"doc{i}.txt").write_text("\n".join(lines) + "\n")
  shared = {"batch_size": 8, "seq_len": 32, "eval_tokens": 256, "log_every": 5,
            "checkpoint_every": 10, "data.source": "local_text", "data.path": str(corpus),
            "data.vocab_size": 384, "data.cache_dir": str(root / "cache"),
            "model.num_layers": 1, "model.num_heads": 2}
  spec = spec_lib.StudySpec(
      name="smoke", claim="a test", seeds=(0,), shared=shared, min_steps=3,
      variants=(spec_lib.Variant("dense", "configs/dense.py:tiny"),),
      sizes=(spec_lib.Size("w16", {"model.d_model": 16}),
             spec_lib.Size("w32", {"model.d_model": 32})),
      budgets=(4e8, 8e8))
  return spec, str(root / "runs")


def test_isoflop_groups_spend_their_budget(study):
  spec, _ = study
  runs, skipped = spec_lib.expand(spec)
  assert len(runs) == 4 and not skipped
  for budget, spread in spec_lib.isoflop_spread(runs).items():
    print(f"budget {budget:.3g}: spread {spread:.3%}")
    assert all(abs(r.flops / budget - 1) < 0.2 for r in runs if r.budget == budget)
  assert {r.name for r in spec_lib.shard(runs, "0/2")} | {
      r.name for r in spec_lib.shard(runs, "1/2")} == {r.name for r in runs}
  with pytest.raises(ValueError, match="shard"):
    spec_lib.shard(runs, "2/2")


def test_tokens_of_takes_the_other_variants_steps():
  """The seed studies' Ladder: same size, same tokens as dense, more FLOPs (not isoFLOP)."""
  from configs.studies import roller
  spec = roller.get_spec("cpu")
  runs, _ = spec_lib.expand(spec)
  by_name = {r.name: r for r in runs}
  for size in ("d64", "d128"):
    ladder, dense = by_name[f"ladder-{size}-C2e12-s0"], by_name[f"dense-{size}-C2e12-s0"]
    assert ladder.cfg.steps == dense.cfg.steps
    assert 1.5 < ladder.flops / dense.flops < 2.0 and ladder.target == ladder.flops
  bad = spec_lib.StudySpec("bad", "", (spec_lib.Variant("x", "configs/dense.py:tiny",
                                                        tokens_of="nope"),),
                           (spec_lib.Size("s"),), budgets=(1e12,))
  with pytest.raises(ValueError, match="tokens_of"):
    spec_lib.expand(bad)


@pytest.mark.slow  # four tiny trainings with their compiles: about a minute idle
def test_dry_run_then_run_then_resume(study):
  spec, study_dir = study
  dry = runner.dry_run(spec, time_steps=1)
  assert list(dry.name) == [r.name for r in spec_lib.expand(spec)[0]]
  assert (dry.est_wall_s > 0).all()
  table = runner.run(spec, study_dir, shard="1/2")  # half the study, as one machine would
  assert table.done.sum() == 2
  table = runner.run(spec, study_dir)  # the rest; the finished half is skipped
  print(table.to_string())
  assert table.done.all() and table.loss.notna().all()
  assert pd.read_csv(os.path.join(study_dir, runner.RESULTS_FILE)).shape[0] == 4
  for name in table.name:
    assert results.is_done(os.path.join(study_dir, name))
  # A run whose marker is lost is recognised from its checkpoints: nothing is retrained.
  os.remove(os.path.join(study_dir, table.name[0], results.DONE_FILE))
  steps_before = open(os.path.join(study_dir, table.name[0], "metrics.jsonl")).read()
  assert runner.run(spec, study_dir).done.all()
  assert open(os.path.join(study_dir, table.name[0], "metrics.jsonl")).read() == steps_before
  cli.report(spec, study_dir)  # plots from the table on disk
  assert os.path.exists(os.path.join(study_dir, "plots", "isoflop_total.svg"))
  fit = fits.kaplan(results.with_n(table, "trainable"), irreducible=False, n_boot=10)
  print(fit.table())
  # Four runs put two or three points on the compute frontier: the fit runs, or says why not.
  assert fit.ok or any("need at least" in w for w in fit.warnings), fit.warnings
