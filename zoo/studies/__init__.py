"""Scaling studies: spec -> isoFLOP runs -> results table -> fits, plots and verdicts.

spec.py (what to run), runner.py (resumable, shardable), results.py (the tidy table),
fits.py and fitting.py (Kaplan, Chinchilla 1-3, Krajewski; bootstrap intervals), planner.py
(compute-optimal granularity), plots.py (matplotlib), verdicts.py, cli.py (`study.py`).
"""
