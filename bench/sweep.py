"""A sweep: methods x label budgets x seeds expanded into runs, run in order, summarised as a table."""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from bench.execute import (
    budget_for,
    build_method,
    build_streams,
    dataset_for,
    execute_run,
    labeled_case_ids,
    validate_spec,
)
from bench.registry import METHODS
from bench.runs import RunSpec, completed_summary
from bench.training import TrainingFailure, time_steps


@dataclass
class SweepOutcome:
    summaries: list[dict] = field(default_factory=list)
    skipped: list[RunSpec] = field(default_factory=list)
    failed: list[tuple[RunSpec, str]] = field(default_factory=list)


def expand_runs(
    methods: Sequence[str],
    dataset: str,
    labels: Sequence[str],
    seeds: Sequence[int],
    budget: str,
    params_by_method: dict[str, dict] | None = None,
    **common: Any,
) -> list[RunSpec]:
    """Methods trained on every label (the fully-supervised bound) run once per seed, as ``all``."""
    specs: list[RunSpec] = []
    for method in methods:
        method_cls = METHODS.get(method)
        method_labels = ["all"] if method_cls.trains_on_all_labels else list(labels)
        for label in method_labels:
            for seed in seeds:
                params = dict((params_by_method or {}).get(method, {}))
                specs.append(RunSpec(dataset=dataset, method=method, labels=label, seed=seed, budget=budget,
                                     params=params, **common))
    return specs


def estimate_seconds(specs: Sequence[RunSpec], timing_steps: int = 3) -> dict[str, float]:
    """Seconds per training step for each method, from a few timed steps on the sweep's first setting."""
    per_step: dict[str, float] = {}
    for spec in specs:
        if spec.method in per_step:
            continue
        method_cls = METHODS.get(spec.method)
        if not method_cls.trains:
            per_step[spec.method] = 0.0
            continue
        adapter = dataset_for(spec)
        budget = budget_for(spec, adapter, method_cls)
        set_seed(spec.seed)
        method = build_method(spec, adapter, method_cls, budget)
        labeled, unlabeled = build_streams(adapter, labeled_case_ids(spec, adapter, method_cls), method_cls, budget, spec.seed)
        accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=spec.precision)
        per_step[spec.method] = time_steps(method, accelerator, labeled, unlabeled, timing_steps, budget.iterations)
    return per_step


def run_sweep(
    specs: Sequence[RunSpec],
    out: Path,
    overwrite: bool = False,
    estimate: bool = True,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
    show_progress: bool = True,
) -> SweepOutcome:
    outcome = SweepOutcome()
    for spec in specs:
        validate_spec(spec)
    pending: list[RunSpec] = []
    for spec in specs:
        summary = None if overwrite else completed_summary(spec, out)
        if summary is None:
            pending.append(spec)
        else:
            outcome.summaries.append(summary)
            outcome.skipped.append(spec)
    log(f"{len(specs)} runs: {len(outcome.skipped)} already complete, {len(pending)} to run")
    if pending and estimate:
        per_step = estimate_seconds(pending)
        total = sum(per_step[s.method] * budget_for(s, dataset_for(s), METHODS.get(s.method)).iterations for s in pending)
        detail = ", ".join(f"{name} {seconds * 1000:.0f} ms/step" for name, seconds in per_step.items())
        log(f"estimated training time: {format_duration(total)} ({detail}; evaluation not included)")
    for index, spec in enumerate(pending, 1):
        log(f"[{index}/{len(pending)}] {spec.method} on {spec.dataset}, labels {spec.labels}, seed {spec.seed}, budget {spec.budget}")
        started = time.perf_counter()
        try:
            summary = execute_run(spec, out, show_progress=show_progress)
        except (TrainingFailure, RuntimeError, ValueError, torch.cuda.OutOfMemoryError) as error:
            outcome.failed.append((spec, f"{type(error).__name__}: {error}"))
            log(f"    FAILED: {error} (see {spec.directory(out)})")
            continue
        outcome.summaries.append(summary)
        log(f"    Dice {summary['metrics']['dice']:.4f} in {format_duration(time.perf_counter() - started)}")
    return outcome


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def results_table(summaries: Sequence[dict], metric: str = "dice") -> pd.DataFrame:
    """Method x label budget, ``mean ± std`` over seeds (std over seeds, n in brackets)."""
    if not summaries:
        return pd.DataFrame()
    frame = pd.DataFrame(
        {"method": s["method"], "labels": s["labels"], "seed": s["seed"], metric: s["metrics"][metric]} for s in summaries
    )
    grouped = frame.groupby(["method", "labels"])[metric].agg(["mean", "std", "count"]).reset_index()

    def cell(row: pd.Series) -> str:
        std = 0.0 if pd.isna(row["std"]) else row["std"]
        return f"{row['mean']:.4f} ± {std:.4f} (n={int(row['count'])})"

    grouped["cell"] = grouped.apply(cell, axis=1)
    table = grouped.pivot(index="method", columns="labels", values="cell").fillna("")
    ordered = sorted(table.columns, key=lambda text: (text == "all", _label_sort_key(text)))
    return table[ordered]


def _label_sort_key(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf
