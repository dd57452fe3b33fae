"""The ``bench`` command line."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import textwrap
from pathlib import Path
from typing import Sequence

from bench.budget import BUDGETS
from bench.data.label_budget import LABEL_SELECTIONS
from bench.metrics import EMPTY_POLICIES
from bench.registry import DATASET_ENTRY_POINT_GROUP, DATASETS, METHOD_ENTRY_POINT_GROUP, METHODS, load_plugin_module

DESCRIPTION = """\
Benchmark harness for semi-supervised medical image segmentation.

  bench run --methods all --dataset synthetic --seeds 3     every method x label budgets x 3 seeds
  bench list methods                                        registered methods, papers, defaults
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE before anything else so its @register_method classes are known "
                             f"(installed packages register through the entry-point group '{METHOD_ENTRY_POINT_GROUP}' instead)")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="train and score methods x label budgets x seeds",
        description="Expand methods x label budgets x seeds into runs, skip the ones already complete, "
                    "train the rest and score them on the test split, then print Dice mean ± std over seeds.",
    )
    run.add_argument("--methods", default="all", help="comma-separated method names, or 'all' (default: all)")
    run.add_argument("--dataset", default="synthetic", help="dataset name (default: synthetic, generated on the fly)")
    run.add_argument("--labels", default=None,
                     help="comma-separated label budgets: counts of labeled cases (3), percentages (5%%) or "
                          "fractions (1/8); default: the dataset's published settings")
    run.add_argument("--seeds", type=int, default=1, help="number of seeds, run as 0..N-1 (default: 1)")
    run.add_argument("--budget", default="quick", choices=sorted(BUDGETS),
                     help="paper = the published protocol; quick = a CPU reduction; smoke = seconds, for tests "
                          "(default: quick)")
    run.add_argument("--iters", type=int, default=None, help="override the budget's number of training iterations")
    run.add_argument("--out", type=Path, default=Path("runs"), help="results folder (default: runs/)")
    run.add_argument("--data-root", type=Path, default=None,
                     help="dataset folder (default: $BENCH_DATA_ROOT/<dataset> for datasets read from disk)")
    run.add_argument("--label-selection", choices=LABEL_SELECTIONS, default=None,
                     help="first = first N cases in list order (SSL4MIS convention); random = seeded per seed "
                          "(default: the dataset's convention)")
    run.add_argument("--empty-policy", default="ssl4mis", choices=sorted(EMPTY_POLICIES),
                     help="how empty masks are scored: " + "; ".join(f"{k}: {v}" for k, v in EMPTY_POLICIES.items()))
    run.add_argument("--spacing", dest="spacing_unit", choices=("auto", "voxel"), default="auto",
                     help="HD95/ASD units: auto = millimetres where the data carries spacing; voxel = always voxels")
    run.add_argument("--precision", choices=("no", "fp16", "bf16"), default="no", help="Accelerate mixed precision")
    run.add_argument("--overwrite", action="store_true", help="re-run runs whose folder holds a result with another config")
    run.add_argument("--no-estimate", action="store_true", help="skip the timed steps that estimate the sweep's duration")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")

    listing = commands.add_parser("list", help="list registered methods or datasets")
    listing.add_argument("what", choices=("methods", "datasets"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        for module in args.plugin:
            load_plugin_module(module)
        if args.command == "list":
            print(list_methods() if args.what == "methods" else list_datasets())
            return 0
        if args.command == "run":
            return command_run(args)
    except (ValueError, KeyError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"bench: error: {message}", file=sys.stderr)
        return 2
    return 0


def parse_methods(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError("--methods: no method named")
    if names == ["all"]:
        return METHODS.names()
    for name in names:
        METHODS.get(name)
    return names


def command_run(args: argparse.Namespace) -> int:
    from bench.record import check_writable
    from bench.sweep import expand_runs, results_table, run_sweep

    if args.seeds <= 0:
        raise ValueError(f"--seeds {args.seeds}: need at least one seed")
    methods = parse_methods(args.methods)
    adapter_cls = DATASETS.get(args.dataset)
    labels = [text.strip() for text in args.labels.split(",")] if args.labels else list(adapter_cls.default_labels)
    data_root = args.data_root
    if data_root is None and os.environ.get("BENCH_DATA_ROOT"):
        data_root = Path(os.environ["BENCH_DATA_ROOT"]) / args.dataset
    check_writable(args.out)
    specs = expand_runs(
        methods, args.dataset, labels, list(range(args.seeds)), args.budget,
        iterations=args.iters, label_selection=args.label_selection, empty_policy=args.empty_policy,
        spacing_unit=args.spacing_unit, precision=args.precision,
        options={"data_root": str(data_root) if data_root else None},
    )
    outcome = run_sweep(specs, args.out, overwrite=args.overwrite, estimate=not args.no_estimate,
                        show_progress=not args.no_progress)
    table = results_table(outcome.summaries)
    if not table.empty:
        print(f"\nDice on {args.dataset} test split (mean ± std over seeds), budget {args.budget}:")
        print(table.to_string())
    if outcome.failed:
        print(f"\n{len(outcome.failed)} run(s) failed:", file=sys.stderr)
        for spec, reason in outcome.failed:
            print(f"  {spec.directory(args.out)}: {reason}", file=sys.stderr)
        return 1
    return 0


def list_methods() -> str:
    lines = []
    for name, method_cls in METHODS.items():
        defaults = dataclasses.asdict(method_cls.default_params())
        lines.append(f"{name}  [{method_cls.family}]")
        lines.append(textwrap.indent(textwrap.fill(method_cls.paper or "(no paper given)", 96), "    paper: "))
        if defaults:
            rendered = ", ".join(f"{key}={value}" for key, value in defaults.items())
            lines.append(textwrap.indent(textwrap.fill(rendered, 96), "    defaults: "))
        views = ", ".join(method_cls.unlabeled_views) or "none (labeled data only)"
        lines.append(f"    unlabeled views: {views}")
    if METHODS.load_errors:
        lines.append(f"plug-ins that failed to load: {METHODS.load_errors}")
    return "\n".join(lines)


def list_datasets() -> str:
    lines = []
    for name, adapter_cls in DATASETS.items():
        lines.append(f"{name}: {adapter_cls.description}")
        lines.append(f"    classes: {', '.join(adapter_cls.class_names)}; default labels: {','.join(adapter_cls.default_labels)}; "
                     f"label selection: {adapter_cls.default_label_selection}")
    lines.append(f"(plug-in datasets register under the entry-point group '{DATASET_ENTRY_POINT_GROUP}')")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
