"""The published leaderboards in ``leaderboards/`` are what ``bench leaderboard`` makes of their own run
records: rebuilding from the committed runs must give the committed files byte for byte."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.leaderboard import build_leaderboard

LEADERBOARDS = Path(__file__).resolve().parent.parent / "leaderboards"
PUBLISHED = sorted(path.parent for path in LEADERBOARDS.glob("*/runs"))
NEEDS_DATA = {"acdc-quick"}
"""Folders whose qualitative figure reads the dataset's test images: figures are rebuilt only when
``BENCH_DATA_ROOT`` is set; the tables always are."""


def test_there_are_published_leaderboards():
    assert {path.name for path in PUBLISHED} >= {"synthetic"}


@pytest.mark.parametrize("folder", PUBLISHED, ids=[path.name for path in PUBLISHED])
def test_published_leaderboard_rebuilds_byte_for_byte(folder, tmp_path):
    plots = folder.name not in NEEDS_DATA or bool(os.environ.get("BENCH_DATA_ROOT"))
    reported = any(folder.rglob("published_vs_reproduced.csv"))  # built with --reported
    report = build_leaderboard([folder / "runs"], tmp_path, reported=reported, plots=plots,
                               log=lambda _: None)
    assert report.tables and not report.skipped
    rebuilt = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file())
    committed = sorted(path.relative_to(folder) for path in folder.rglob("*") if path.is_file()
                       and "runs" not in path.relative_to(folder).parts[:1]
                       and path.suffix in {".csv", ".md", ".tex", ".png", ".svg"}
                       and path.name != "STATUS.md")
    if not plots:
        committed = [path for path in committed if "figures" not in path.parts]
    assert rebuilt == committed
    differing = [str(path) for path in rebuilt if (tmp_path / path).read_bytes() != (folder / path).read_bytes()]
    assert not differing
