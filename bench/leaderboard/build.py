"""``bench leaderboard``: finished runs -> tables, statistics and figures, one folder per table.

Layout of ``out``::

    index.md                      the tables built, the runs left out
    skipped_runs.csv              run, reason  (failed, incomplete, unreadable, duplicate, foreign test set)
    <dataset>/<budget>/<empty policy>/
        runs.csv                  one row per run (long format)
        summary.csv               one row per label budget x method: mean/std over seeds, case bootstrap CI, tests
        significance.csv          Wilcoxon + Holm of every method against the best, per label budget
        leaderboard.md            the papers' layout (+ per-class Dice, + published vs reproduced)
        leaderboard.tex           the same table with booktabs
        published_vs_reproduced.csv   with ``reported=True``
        figures/*.png, *.svg

Runs of different datasets, budgets, empty-mask policies or distance units are never averaged
together: each combination is its own folder.
"""
from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd

from bench.leaderboard.collect import GroupKey, RunRecord, SkippedRun, collect_runs
from bench.leaderboard.reported import compare_with_published, comparison_markdown, load_reported
from bench.leaderboard.tables import build_group_tables, latex_table, markdown_document, to_csv_text
from bench.record import write_atomic


@dataclass
class TableOutput:
    key: GroupKey
    directory: Path
    num_runs: int
    files: list[Path] = field(default_factory=list)


@dataclass
class LeaderboardReport:
    out: Path
    tables: list[TableOutput]
    skipped: list[SkippedRun]
    messages: list[str]

    @property
    def files(self) -> list[Path]:
        return [path for table in self.tables for path in table.files]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def build_leaderboard(
    run_dirs: Sequence[Path],
    out: Path,
    reported: bool = False,
    *,
    reported_csv: Path | None = None,
    plots: bool = True,
    data_roots: Mapping[str, Path] | None = None,
    log: Callable[[str], None] = _stderr,
) -> LeaderboardReport:
    """Build every table under ``out`` from the runs under ``run_dirs``.

    ``reported`` adds the published numbers (``reported_csv``, default ``leaderboards/reported.csv``)
    and the gap to ours where the protocol matches.  ``data_roots`` (dataset name -> folder) points
    the qualitative figure at a dataset whose folder moved since the runs recorded it; without it the
    recorded folder is used, then ``$BENCH_DATA_ROOT/<dataset>``.  Raises ``ValueError`` when a runs
    folder does not exist or holds no run at all; runs that cannot be used are listed, not fatal.
    """
    out = Path(out)
    records, skipped = collect_runs([Path(d) for d in run_dirs])
    if not records and not skipped:
        raise ValueError(f"{', '.join(str(d) for d in run_dirs)}: no run folders found (expected "
                         f"<dataset>/<budget>/<method>/<labels>/seed<k>/ with summary.json and per_case.csv)")
    published = load_reported(reported_csv) if reported else None
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "skipped_runs.csv", to_csv_text(pd.DataFrame(
        [{"run": run.path, "reason": run.reason} for run in skipped], columns=["run", "reason"])))
    groups: dict[GroupKey, list[RunRecord]] = defaultdict(list)
    for record in records:
        groups[record.group].append(record)
    units = defaultdict(set)
    for key in groups:
        units[(key.dataset, key.budget, key.empty_policy)].add(key.distance_unit)
    messages: list[str] = []
    outputs = []
    for key in sorted(groups):
        folder = out / key.folder(split_units=len(units[(key.dataset, key.budget, key.empty_policy)]) > 1)
        tables = build_group_tables(key, groups[key])
        output = TableOutput(key, folder, len(groups[key]))
        published_text = ""
        if published is not None:
            comparison = compare_with_published(key, tables.summary, published)
            output.files.append(_write(folder / "published_vs_reproduced.csv", to_csv_text(comparison)))
            published_text = comparison_markdown(key, comparison)
        output.files += [
            _write(folder / "runs.csv", to_csv_text(tables.runs)),
            _write(folder / "summary.csv", to_csv_text(tables.summary)),
            _write(folder / "significance.csv", to_csv_text(tables.significance)),
            _write(folder / "leaderboard.md", markdown_document(tables, published_text)),
            _write(folder / "leaderboard.tex", latex_table(tables)),
        ]
        if plots:
            from bench.leaderboard.plots import make_figures  # seaborn/matplotlib only when figures are wanted

            figures, notes = make_figures(tables, folder / "figures", data_roots)
            output.files += figures
            messages += notes
        outputs.append(output)
    write_atomic(out / "index.md", _index(out, outputs, skipped))
    for table in outputs:
        log(f"{table.key.title}: {table.num_runs} runs -> {table.directory}")
    if skipped:
        log(f"{len(skipped)} run(s) left out (listed in {out / 'skipped_runs.csv'}):")
        for run in skipped:
            log(f"  {run.path}: {run.reason}")
    for message in messages:
        log(message)
    return LeaderboardReport(out, outputs, skipped, messages)


def _write(path: Path, text: str) -> Path:
    write_atomic(path, text)
    return path


def _index(out: Path, outputs: Sequence[TableOutput], skipped: Sequence[SkippedRun]) -> str:
    lines = ["# Leaderboards\n"]
    for table in outputs:
        relative = table.directory.relative_to(out).as_posix()
        lines.append(f"- [{table.key.title}]({relative}/leaderboard.md): {table.num_runs} runs")
    if not outputs:
        lines.append("No complete run.")
    lines.append("")
    lines.append(f"{len(skipped)} run(s) left out: see `skipped_runs.csv`." if skipped else "Every run found was used.")
    return "\n".join(lines) + "\n"
