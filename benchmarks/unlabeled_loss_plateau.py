"""How often a confidence-masked Dice loss found no foreground to agree on, per run, next to its test Dice.

The unlabeled loss of FixMatch and UniMatch here is the SSL4MIS Dice loss over all C classes
(background included) restricted to the pixels whose weak-view confidence passes the threshold
(``bench.mixing.confident_dice_loss``).  When none of those pixels carries a foreground pseudo-label,
each foreground term is ``1 - s / (sum p^2 + s)`` with ``s = 1e-5``, i.e. ~1 as soon as the strong
view puts any probability on that class, while the background term is ~0: the loss sits at
``(C - 1) / C`` (0.75 on ACDC) and its only gradient pushes foreground probabilities towards zero.
The loss also sits there when confident foreground exists but the strong view's prediction misses
all of it (no overlap in any foreground class); the logs cannot tell the two apart.  Either way, a
step logged at that value is one where weak and strong views agreed on no foreground at all.

This script reads the committed ``train_log.csv`` of each run (no training, no GPU) and prints, per
run, the share of such steps in the first 200 steps and after them, with the run's test Dice.  It
backs the fixmatch reading in ``leaderboards/acdc-quick/STATUS.md``.

    python benchmarks/unlabeled_loss_plateau.py                       # fixmatch and unimatch, acdc-quick
    python benchmarks/unlabeled_loss_plateau.py --runs leaderboards/acdc-quick/runs/acdc/quick \\
        --method fixmatch=loss_unlabeled --tolerance 0.005
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Sequence

from scipy.stats import spearmanr

DEFAULT_RUNS = Path("leaderboards/acdc-quick/runs/acdc/quick")
DEFAULT_METHODS = ("fixmatch=loss_unlabeled", "unimatch=loss_strong")
WARMUP_STEPS = 200


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS,
                        help=f"folder holding METHOD/LABELS/seedN run folders (default: {DEFAULT_RUNS})")
    parser.add_argument("--method", action="append", metavar="NAME=COLUMN",
                        help="method and the train_log.csv column of its confidence-masked Dice loss; "
                             f"repeatable (default: {' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="a step counts when |loss - (C-1)/C| is below this (default: 0.01)")
    return parser.parse_args(argv)


def parse_method(text: str) -> tuple[str, str]:
    name, separator, column = text.partition("=")
    if not separator or not name or not column:
        raise SystemExit(f"--method {text!r}: expected NAME=COLUMN, e.g. fixmatch=loss_unlabeled")
    return name, column


def class_count(summary: dict) -> int:
    """Foreground classes are the ``dice_<class>`` metrics; the Dice loss also has background."""
    return 1 + sum(1 for key in summary["metrics"] if key.startswith("dice_"))


def plateau_shares(losses: list[float], plateau: float, tolerance: float) -> tuple[float, float]:
    at_plateau = [abs(loss - plateau) < tolerance for loss in losses]
    warmup, rest = at_plateau[:WARMUP_STEPS], at_plateau[WARMUP_STEPS:]
    return sum(warmup) / max(len(warmup), 1), sum(rest) / max(len(rest), 1)


def read_losses(train_log: Path, column: str) -> list[float]:
    with train_log.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    if not rows or column not in rows[0]:
        found = ", ".join(rows[0]) if rows else "no rows"
        raise SystemExit(f"{train_log}: no column {column!r} (found: {found})")
    return [float(row[column]) for row in rows if row[column] != ""]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    methods = [parse_method(text) for text in (args.method or DEFAULT_METHODS)]
    print(f"{'run':24s} {'C':>2s} {'plateau':>7s} {'steps 1-200':>11s} {'after 200':>9s} {'test Dice':>9s}")
    for name, column in methods:
        run_folders = sorted(args.runs.glob(f"{name}/*/seed*"), key=lambda p: (int(p.parent.name), p.name))
        if not run_folders:
            raise SystemExit(f"{args.runs}: no run folders {name}/LABELS/seedN")
        later_shares, dices = [], []
        for folder in run_folders:
            summary_file = folder / "summary.json"
            if not summary_file.is_file():
                print(f"{name}/{folder.parent.name}/{folder.name}: no summary.json (unfinished run), skipped")
                continue
            summary = json.loads(summary_file.read_text())
            classes = class_count(summary)
            plateau = (classes - 1) / classes
            warmup, later = plateau_shares(read_losses(folder / "train_log.csv", column), plateau, args.tolerance)
            dice = summary["metrics"]["dice"]
            later_shares.append(later)
            dices.append(dice)
            run = f"{name}/{folder.parent.name}/{folder.name}"
            print(f"{run:24s} {classes:2d} {plateau:7.3f} {warmup:11.2f} {later:9.3f} {dice:9.3f}")
        if len(dices) >= 3:
            result = spearmanr(later_shares, dices)
            print(f"{name}: Spearman(share after step {WARMUP_STEPS}, test Dice) = {result.statistic:.2f}, "
                  f"p = {result.pvalue:.2g}, {len(dices)} runs")


if __name__ == "__main__":
    main()
