"""Leaderboards from finished runs: tables (CSV, Markdown, LaTeX), statistics, figures, and published
numbers beside reproduced ones.  ``build_leaderboard`` is the whole surface the CLI needs."""
from __future__ import annotations

from bench.leaderboard.build import LeaderboardReport, TableOutput, build_leaderboard
from bench.leaderboard.collect import GroupKey, RunRecord, Setting, SkippedRun, collect_runs
from bench.leaderboard.reported import DEFAULT_REPORTED_CSV, load_reported
from bench.leaderboard.statistics import bootstrap_mean_ci, compare_with_best, holm_adjust

__all__ = [
    "DEFAULT_REPORTED_CSV", "GroupKey", "LeaderboardReport", "RunRecord", "Setting", "SkippedRun", "TableOutput",
    "bootstrap_mean_ci", "build_leaderboard", "collect_runs", "compare_with_best", "holm_adjust", "load_reported",
]
