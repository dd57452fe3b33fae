"""Executing one run end to end: data, labeled subset, method, training, test scoring, records."""
from __future__ import annotations

import dataclasses

import os
import resource
import sys
import time
import traceback
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedDataParallelKwargs, set_seed

from bench.budget import Budget, resolve_budget
from bench.data.adapter import DatasetAdapter, TrainingSlice
from bench.data.case import Case
from bench.data.check import check_dataset
from bench.data.domains import per_domain_means, select_labeled_in_domain
from bench.data.label_budget import LabelBudget, select_labeled_cases
from bench.data.streams import SliceViews, endless_batches
from bench.evaluation import evaluation_subset, score_cases, validation_dice
from bench.method import GROUND_TRUTH_PROMPTS, Method, TaskSpec
from bench.metrics import EMPTY_POLICIES
from bench.record import (
    RESULT_FORMAT_VERSION,
    git_commit,
    package_versions,
    atomic_file,
    torch_save_atomic,
    write_atomic,
    write_csv_atomic,
    write_json_atomic,
)
from bench.registry import DATASETS, METHODS
from bench.runs import CHECKPOINT_FILE, FAILURE_FILE, PREDICTIONS_FILE, SUMMARY_FILE, RunSpec
from bench.tracking import tracker_of, training_curves
from bench.training import TRAINING_STEP_ATTRIBUTE, BatchStream, TrainingFailure, TrainingResult, train


@lru_cache(maxsize=4)
def load_dataset(name: str, data_root: str | None, options: tuple = ()) -> DatasetAdapter:
    """One adapter per (dataset, root) per process, so a sweep decodes the data once."""
    adapter_cls = DATASETS.get(name)
    return adapter_cls(Path(data_root) if data_root else None, **dict(options))


def dataset_for(spec: RunSpec) -> DatasetAdapter:
    dataset_options = tuple(sorted((spec.options.get("dataset_options") or {}).items()))
    return load_dataset(spec.dataset, spec.options.get("data_root"), dataset_options)


def budget_for(spec: RunSpec, adapter: DatasetAdapter, method_cls: type[Method]) -> Budget:
    budget = resolve_budget(
        spec.budget, adapter.budget_overrides, method_cls.budget_overrides, spec.iterations, spec.batch
    )
    if method_cls.fills_batch_with_labeled:
        budget = dataclasses.replace(budget, labeled_batch=budget.labeled_batch + budget.unlabeled_batch)
    return budget


def labeled_case_ids(spec: RunSpec, adapter: DatasetAdapter, method_cls: type[Method]) -> list[str]:
    case_ids = adapter.train_case_ids()
    if not method_cls.trains or spec.labels == "none":
        return []
    if method_cls.trains_on_all_labels or spec.labels == "all":
        return list(case_ids)
    selection = spec.label_selection or adapter.default_label_selection
    budget = LabelBudget.parse(spec.labels)
    labeled_domain = spec.options.get("labeled_domain")
    if labeled_domain:
        return select_labeled_in_domain(case_ids, adapter.case_domains(), budget, spec.seed, selection, labeled_domain)
    return select_labeled_cases(case_ids, budget, spec.seed, selection)


def validate_spec(spec: RunSpec) -> None:
    """Everything that can be checked without training, so a bad sweep fails before the first run."""
    method_cls = METHODS.get(spec.method)
    adapter = dataset_for(spec)
    budget = budget_for(spec, adapter, method_cls)
    # Every split the run will read, read now: bad data is named before any run trains.
    splits = ("train", "val", "test") if method_cls.trains else ("test",)
    check_dataset(adapter, splits, patch_size=(budget.patch_size, budget.patch_size))
    if spec.empty_policy not in EMPTY_POLICIES:
        raise ValueError(f"--empty-policy {spec.empty_policy!r}: expected one of {sorted(EMPTY_POLICIES)}")
    labeled = labeled_case_ids(spec, adapter, method_cls)
    if method_cls.unlabeled_views and len(labeled) >= len(adapter.train_case_ids()):
        raise ValueError(
            f"--labels {spec.labels}: method {spec.method!r} needs unlabeled cases but every one of the "
            f"{len(labeled)} training cases would be labeled"
        )
    if spec.params:
        method_cls.params_from_dict(spec.params)


def process_state() -> PartialState:
    """This process's place in the process group, formed as ``make_accelerator`` forms it.

    A bare ``PartialState()`` created first on a machine without GPUs would settle the (shared) state
    as a single process, and the ``Accelerator(cpu=True)`` after it would then form no group under
    ``accelerate launch --multi_gpu`` / ``torchrun``."""
    return PartialState(cpu=not torch.cuda.is_available())


def evaluated_cases(adapter: DatasetAdapter, split: str, budget: Budget) -> Iterator[Case]:
    """The cases of ``split`` the budget scores (all, or the smoke budget's first few, cut to their middle)."""
    return evaluation_subset(adapter.eval_cases(split), budget.eval_cases, budget.eval_slices)


def make_accelerator(precision: str, log_with: str | None = None, project_dir: Path | None = None) -> Accelerator:
    """CPU when no GPU is present; unused parameters tolerated under DDP, since some methods leave parts
    of themselves idle in some steps (a prompt encoder without prompts, a pre-training stage).
    ``log_with`` names an Accelerate tracker writing under ``project_dir`` (``bench.tracking``)."""
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        log_with=log_with,
        project_dir=project_dir,
    )


def test_predictor(method: Method):
    """Labels reach a method at evaluation only when it is marked as using ground-truth prompts
    (zero-shot SAM-point); that mark is recorded in every result it produces."""
    if GROUND_TRUTH_PROMPTS in method.result_flags:
        return method.predict_inputs
    return lambda images, labels: method.predict(images)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory when on a GPU, else the process's peak resident set (the whole process)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hardware_description(device: torch.device) -> str:
    """What a leaderboard states under "hardware": wall times mean little without the machine."""
    processes = process_state().num_processes
    if device.type == "cuda":
        return f"{processes} x {torch.cuda.get_device_name(device)}"
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads x {processes} process(es)"


def build_streams(
    adapter: DatasetAdapter, labeled_ids: list[str], method_cls: type[Method], budget: Budget, seed: int
) -> tuple[BatchStream, BatchStream | None]:
    labeled_set = set(labeled_ids)
    # Under `accelerate launch` each process draws its own samples (its share of the global batch).
    seed = seed + 1000 * process_state().process_index
    patch = (budget.patch_size, budget.patch_size)
    slices = adapter.train_slices(patch_size=patch)
    labeled_slices = [s for s in slices if s.case_id in labeled_set]
    unlabeled_slices: list[TrainingSlice] = [s for s in slices if s.case_id not in labeled_set]
    patch = (budget.patch_size, budget.patch_size)
    labeled_views = ("weak",) + tuple(method_cls.labeled_views)
    labeled_data = SliceViews(labeled_slices, patch, labeled_views, True, seed)
    labeled = BatchStream(lambda step: endless_batches(labeled_data, budget.labeled_batch, seed, step))
    unlabeled = None
    if method_cls.unlabeled_views:
        unlabeled_data = SliceViews(unlabeled_slices, patch, method_cls.unlabeled_views, False, seed + 1)
        unlabeled = BatchStream(lambda step: endless_batches(unlabeled_data, budget.unlabeled_batch, seed + 1, step))
    return labeled, unlabeled


def build_method(spec: RunSpec, adapter: DatasetAdapter, method_cls: type[Method], budget: Budget) -> Method:
    params = method_cls.params_from_dict(spec.params)
    task = TaskSpec(
        in_channels=adapter.in_channels,
        num_classes=adapter.num_classes,
        patch_size=(budget.patch_size, budget.patch_size),
        total_steps=budget.iterations,
        network_widths=budget.network_widths,
        options={k: v for k, v in spec.options.items() if k not in ("data_root", "dataset_options")},
    )
    return method_cls(params, task)


def train_method(
    spec: RunSpec,
    adapter: DatasetAdapter,
    method: Method,
    budget: Budget,
    labeled_ids: list[str],
    accelerator: Accelerator,
    log_path: Path,
    show_progress: bool = True,
    on_validation: Callable[[int, float], None] | None = None,
    checkpoint_path: Path | None = None,
) -> TrainingResult:
    """Training with model selection on the validation split; shared by ``bench run`` and ``bench tune``
    (which never reaches the test split)."""
    patch = (budget.patch_size, budget.patch_size)
    labeled, unlabeled = build_streams(adapter, labeled_ids, type(method), budget, spec.seed)
    validation_cases = list(evaluated_cases(adapter, "val", budget))

    def validate(model: Method) -> float:
        with accelerator.autocast():
            return validation_dice(
                test_predictor(model), validation_cases, adapter.num_classes, patch, budget.eval_batch, accelerator.device
            )

    return train(
        method, accelerator, labeled, unlabeled, budget.iterations, budget.validate_every, validate, log_path,
        gradient_clip=spec.gradient_clip, show_progress=show_progress,
        description=f"{spec.method} {spec.labels} s{spec.seed}", on_validation=on_validation,
        checkpoint_path=checkpoint_path, checkpoint_every=budget.validate_every,
    )


def execute_run(spec: RunSpec, out: Path, show_progress: bool = True) -> dict | None:
    """Train and score one run; returns its summary (``None`` on processes other than the main one,
    which train alongside it but write nothing).  Any exception, from the harness or from the method,
    is recorded as ``failure.json`` and ``traceback.txt`` before it propagates."""
    directory = spec.directory(out)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / FAILURE_FILE).unlink(missing_ok=True)
    main_process = process_state().is_main_process
    try:
        return _train_and_score(spec, directory, show_progress)
    except Exception as error:
        step = error.step if isinstance(error, TrainingFailure) else getattr(error, TRAINING_STEP_ATTRIBUTE, None)
        reason = error.reason if isinstance(error, TrainingFailure) else f"{type(error).__name__}: {error}"
        if main_process:
            write_failure(directory, spec, step, type(error).__name__, reason, traceback.format_exc())
        raise


def _train_and_score(spec: RunSpec, directory: Path, show_progress: bool) -> dict | None:
    started = time.perf_counter()
    # The source as the run loads it: the tree may change (commits, edits) while a long run trains.
    source_commit = git_commit()
    earlier_seconds: float | None = 0.0
    method_cls = METHODS.get(spec.method)
    adapter = dataset_for(spec)
    budget = budget_for(spec, adapter, method_cls)
    labeled_ids = labeled_case_ids(spec, adapter, method_cls)
    accelerator = make_accelerator(spec.precision, tracker_of(spec.options), directory)
    if accelerator.is_main_process:
        write_json_atomic(directory / "config.json", {"key": spec.key, "config": spec.config(), "budget": asdict(budget)})
        write_json_atomic(directory / "labeled_cases.json",
                          {"labels": spec.labels, "seed": spec.seed, "case_ids": labeled_ids})
    set_seed(spec.seed)
    method = build_method(spec, adapter, method_cls, budget)
    flags = sorted(set(method.result_flags))
    patch = (budget.patch_size, budget.patch_size)
    if method_cls.trains:
        with training_curves(accelerator, spec, directory):
            result = train_method(spec, adapter, method, budget, labeled_ids, accelerator,
                                  directory / "train_log.csv", show_progress, checkpoint_path=directory / CHECKPOINT_FILE)
        method = accelerator.unwrap_model(method)
        method.load_state_dict(result.best_state)
        if accelerator.is_main_process:
            torch_save_atomic(result.best_state, directory / "best.pt")
        earlier_seconds = result.seconds_before_resume
        training = {"best_validation_dice": result.best_validation_dice, "best_step": result.best_step,
                    "train_seconds": result.seconds, "resumed_from_step": result.resumed_from,
                    "seconds_before_resume": earlier_seconds}
    else:
        method = method.to(accelerator.device)
        training = {"best_validation_dice": None, "best_step": 0, "train_seconds": 0.0}
    method.eval()
    predictions: dict[str, Any] = {}
    with accelerator.autocast():
        rows = score_cases(
            test_predictor(method), evaluated_cases(adapter, "test", budget),
            adapter.class_names, patch, budget.eval_batch,
            accelerator.device, spec.empty_policy, spec.spacing_unit, predictions=predictions,
        )
    if not accelerator.is_main_process:
        return None
    write_csv_atomic(directory / "per_case.csv", rows)
    save_predictions(directory / PREDICTIONS_FILE, predictions)
    summary = summarize_run(spec, rows, adapter, method_cls, budget, labeled_ids, training, flags,
                            time.perf_counter() - started + (earlier_seconds or 0.0), accelerator.device,
                            source_commit)
    write_json_atomic(directory / SUMMARY_FILE, summary)
    (directory / CHECKPOINT_FILE).unlink(missing_ok=True)
    return summary


def save_predictions(path: Path, predictions: dict[str, Any]) -> None:
    """Test-split label volumes, compressed (labels compress well), for qualitative figures."""
    with atomic_file(path) as temporary, open(temporary, "wb") as stream:
        np.savez_compressed(stream, **predictions)


def write_failure(directory: Path, spec: RunSpec, step: int | None, error_type: str, reason: str, trace: str) -> None:
    """Each record is written where it can be: on a full disk the traceback may not fit while the small
    ``failure.json`` still does (or neither does: then the message goes to stderr alone)."""
    records = [
        (directory / FAILURE_FILE, lambda path: write_json_atomic(path, {
            "key": spec.key, "config": spec.config(), "step": step, "type": error_type, "reason": reason})),
        (directory / "traceback.txt", lambda path: write_atomic(path, trace)),
    ]
    for path, write in records:
        try:
            write(path)
        except OSError as error:
            print(f"bench: could not record the failure of {directory}: {error}", file=sys.stderr)


def summarize_run(
    spec: RunSpec,
    rows: list[dict],
    adapter: DatasetAdapter,
    method_cls: type[Method],
    budget: Budget,
    labeled_ids: list[str],
    training: dict,
    flags: list[str],
    wall_seconds: float,
    device: torch.device,
    source_commit: str | None,
) -> dict:
    """Means over cases derived from the per-case rows (which stay the primary record)."""
    table = pd.DataFrame(rows)
    numeric = table.select_dtypes("number")
    metrics = {column: float(numeric[column].mean()) for column in numeric.columns}
    empty = {f"empty_predictions_{name}": int(table[f"empty_pred_{name}"].sum()) for name in adapter.class_names}
    return {
        "format_version": RESULT_FORMAT_VERSION,
        "key": spec.key,
        "config": spec.config(),
        "method": spec.method,
        "family": method_cls.family,
        "paper": method_cls.paper,
        "params": method_cls.recorded_params(spec.params),
        "tuning": spec.options.get("tuning"),
        "dataset": spec.dataset,
        "dataset_protocol": adapter.protocol(),
        "labels": spec.labels,
        "trains": method_cls.trains,
        "unlabeled_views": list(method_cls.unlabeled_views),
        "num_labeled_cases": len(labeled_ids),
        "num_train_cases": len(adapter.train_case_ids()),
        "labeled_case_ids": labeled_ids,
        "seed": spec.seed,
        "budget": asdict(budget),
        "empty_policy": spec.empty_policy,
        "empty_policy_description": EMPTY_POLICIES[spec.empty_policy],
        "distance_unit": sorted(set(table["distance_unit"])),
        "num_test_cases": len(rows),
        "labeled_domain": spec.options.get("labeled_domain"),
        "metrics": metrics,
        "metrics_per_domain": per_domain_means(rows),
        "empty_predictions": empty,
        "flags": flags,
        "training": training,
        "wall_seconds": wall_seconds,
        "peak_memory_mb": peak_memory_mb(device),
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "hardware": hardware_description(device),
        "num_processes": process_state().num_processes,
        "versions": package_versions(),
        "git_commit": source_commit,
    }
