"""The `study.py` commands: run a study (or print its dry-run table), report on it (table,
plots, verdicts), fit a law to any CSV, and plan compute-optimal granularity from a fit."""

from __future__ import annotations

import argparse
import json
import os

import pandas as pd

from zoo.studies import fits, runner, verdicts
from zoo.studies import spec as spec_lib


def report(spec: spec_lib.StudySpec, study_dir: str, df: pd.DataFrame | None = None,
           echo=print) -> pd.DataFrame:
  """results.csv, plots under plots/, and the verdict table (also verdict.json)."""
  if df is None:
    df = runner.write_table(spec_lib.expand(spec)[0], study_dir)
  done = df[df.done]
  echo(f"{len(done)} of {len(df)} runs finished; results in "
       f"{os.path.join(study_dir, runner.RESULTS_FILE)}")
  try:
    from zoo.studies import plots
    for path in plots.all_plots(done, os.path.join(study_dir, "plots"), spec.name):
      echo(f"wrote {path}")
  except ImportError as e:  # matplotlib is in the test and notebooks extras
    echo(f"no plots: {e}")
  if spec.verdict and len(done):
    rows = [{"claim": f"[{spec.name}] {spec.claim}", "measured": "", "verdict": ""}]
    rows += spec.verdict(done)
    echo(verdicts.table(rows))
    with open(os.path.join(study_dir, "verdict.json"), "w") as f:
      json.dump(rows, f, indent=2)
  return df


def cmd_run(args) -> None:
  spec = spec_lib.load_spec(args.spec)
  if args.dry_run:
    runner.dry_run(spec, shard=args.shard, time_steps=args.time_steps)
    return
  df = runner.run(spec, args.dir, shard=args.shard)
  report(spec, args.dir, df)


def cmd_report(args) -> None:
  report(spec_lib.load_spec(args.spec), args.dir)


def cmd_fit(args) -> None:
  df = pd.read_csv(args.csv)
  if "done" in df.columns:
    df = df[df.done]
  cols = dict(n_column=args.n_column, d_column=args.d_column, c_column=args.c_column)
  kwargs = dict(n_boot=args.n_boot, seed=args.seed, **cols)
  if args.law == "krajewski":
    kwargs["g_column"] = args.g_column
  if args.law == "kaplan":
    kwargs["irreducible"] = not args.no_irreducible
  result = fits.fit(df, args.law, **kwargs)
  print(result.table())
  out = args.json or os.path.splitext(args.csv)[0] + f".{args.law}.json"
  with open(out, "w") as f:
    json.dump(result.to_dict(), f, indent=2, default=float)
  print(f"wrote {out}")


def cmd_plan(args) -> None:
  from zoo.studies import planner

  with open(args.json) as f:
    fitted = json.load(f)
  if fitted.get("law") != "krajewski" or not fitted.get("ok"):
    raise ValueError(f"--json={args.json}: needs an ok krajewski fit (study.py fit --law "
                     "krajewski)")
  params = {k: v["value"] for k, v in fitted["params"].items()}
  flops = planner.MoeFlops(expansion=args.expansion, c_r=args.c_r, d_per_block=args.d_per_block)
  for compute in args.compute:
    print(f"compute {compute:.3g} FLOPs:")
    print(planner.plan(params, compute, flops=flops).to_string(index=False,
                                                               float_format="%.4g"))


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="study.py", description=__doc__)
  sub = p.add_subparsers(dest="command", required=True)
  run = sub.add_parser("run", help="train a study's runs (resumable), then report")
  run.add_argument("--spec", required=True, help="configs/studies/<name>.py:<cpu|table1>")
  run.add_argument("--dir", required=True, help="the study directory (shared by all shards)")
  run.add_argument("--dry_run", action="store_true", help="print the table of runs only")
  run.add_argument("--shard", default="0/1", help="i/n: this machine's share of the runs")
  run.add_argument("--time_steps", type=int, default=2,
                   help="dry run: steps timed per model for the wall-time estimate (0: none)")
  run.set_defaults(fn=cmd_run)
  rep = sub.add_parser("report", help="results table, plots and verdicts from disk")
  rep.add_argument("--spec", required=True)
  rep.add_argument("--dir", required=True)
  rep.set_defaults(fn=cmd_report)
  fit = sub.add_parser("fit", help="fit a scaling law to any CSV")
  fit.add_argument("--csv", required=True)
  fit.add_argument("--law", required=True, choices=sorted(fits.LAWS))
  fit.add_argument("--n_column", default="N",
                   help="parameter column: N, or params_total / params_trainable / "
                        "params_active in a study's results.csv")
  fit.add_argument("--d_column", default="D")
  fit.add_argument("--c_column", default="C", help="compute column (6·N·D when absent)")
  fit.add_argument("--g_column", default="G")
  fit.add_argument("--n_boot", type=int, default=100)
  fit.add_argument("--seed", type=int, default=0)
  fit.add_argument("--no_irreducible", action="store_true", help="kaplan: L = (C0/C)^alpha")
  fit.add_argument("--json", default="", help="output (default: beside the CSV)")
  fit.set_defaults(fn=cmd_fit)
  plan = sub.add_parser("plan", help="compute-optimal N, D, G from a krajewski fit's JSON")
  plan.add_argument("--json", required=True)
  plan.add_argument("--compute", type=float, nargs="+", required=True, help="budgets in FLOPs")
  plan.add_argument("--expansion", type=float, default=64.0, help="expansion rate E")
  plan.add_argument("--c_r", type=float, default=14.0, help="router FLOPs (0: 6·N_active·D)")
  plan.add_argument("--d_per_block", type=float, default=64.0, help="aspect ratio d/n_blocks")
  plan.set_defaults(fn=cmd_plan)
  return p


def main(argv=None) -> None:
  args = parser().parse_args(argv)
  args.fn(args)
