"""A sweep: methods x label budgets x seeds expanded into runs, run in order, summarised as a table."""
from __future__ import annotations

import dataclasses

import fcntl
import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch
from accelerate.utils import broadcast_object_list, set_seed

from bench.execute import (
    make_accelerator,
    budget_for,
    build_method,
    build_streams,
    dataset_for,
    execute_run,
    labeled_case_ids,
    process_state,
    validate_spec,
)
from bench.plan import SweepPlan, format_duration, is_refusal
from bench.registry import METHODS
from bench.runs import RunSpec, completed_summary, previous_failure
from bench.training import time_steps


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
    sam_options: dict[str, Any] | None = None,
    tuning_by_method: dict[str, dict] | None = None,
    **common: Any,
) -> list[RunSpec]:
    """Methods trained on every label (the fully-supervised bound) run once per seed, as ``all``;
    evaluation-only methods (zero-shot SAM) run once, as ``none`` with seed 0, since neither the label
    budget nor the seed changes what they predict.

    ``sam_options`` (backbone, checkpoint) join the options of SAM-family methods only: a U-Net run is
    the same experiment whether or not the sweep that launched it also held a SAM method.

    ``tuning_by_method`` (the ``bench tune`` study a method's parameters came from) rides along in the
    options for the run's summary; it is not part of the run's config, since where equal parameters
    came from does not change what is trained."""
    specs: list[RunSpec] = []
    common_options = common.pop("options", None) or {}
    for method in methods:
        method_cls = METHODS.get(method)
        options = {**common_options, **(sam_options or {})} if method_cls.family == "sam" else dict(common_options)
        if (tuning_by_method or {}).get(method):
            options["tuning"] = tuning_by_method[method]
        method_labels = ["all"] if method_cls.trains_on_all_labels else list(labels)
        method_seeds = list(seeds)
        if not method_cls.trains:
            method_labels, method_seeds = ["none"], [0]
        for label in method_labels:
            for seed in method_seeds:
                params = dict((params_by_method or {}).get(method, {}))
                specs.append(RunSpec(dataset=dataset, method=method, labels=label, seed=seed, budget=budget,
                                     params=params, options=options, **common))
    return specs


STEADY_STATE_SCHEDULE = 1
"""Schedule length the duration estimate builds methods for: every timed step is past every phase switch."""


def estimate_seconds(specs: Sequence[RunSpec], timing_steps: int = 3) -> dict[str, float]:
    """Seconds per training step for each method, from a few timed steps on the sweep's first setting.

    The method is built for a one-iteration schedule, so the timed steps fall after every phase switch
    (CPC-SAM's and InteractMatch's supervised warm-up, BCP's pre-training): timing the first steps of
    the real schedule would measure the cheap warm-up and under-estimate the sweep several-fold."""
    per_step: dict[str, float] = {}
    for spec in specs:
        if spec.method in per_step:
            continue
        method_cls = METHODS.get(spec.method)
        if not method_cls.trains:
            per_step[spec.method] = 0.0
            continue
        adapter = dataset_for(spec)
        budget = dataclasses.replace(budget_for(spec, adapter, method_cls), iterations=STEADY_STATE_SCHEDULE)
        set_seed(spec.seed)
        method = build_method(spec, adapter, method_cls, budget)
        labeled, unlabeled = build_streams(adapter, labeled_case_ids(spec, adapter, method_cls), method_cls, budget, spec.seed)
        accelerator = make_accelerator(spec.precision)
        per_step[spec.method] = time_steps(method, accelerator, labeled, unlabeled, timing_steps, STEADY_STATE_SCHEDULE)
    return per_step


def pending_runs(specs: Sequence[RunSpec], out: Path, overwrite: bool = False,
                 retry_failed: bool = False) -> tuple[SweepOutcome, list[RunSpec]]:
    """The runs still to train, and an outcome holding the complete ones (read back) and the ones that
    failed before (left alone unless ``retry_failed``)."""
    outcome = SweepOutcome()
    pending: list[RunSpec] = []
    for spec in specs:
        summary = None if overwrite else completed_summary(spec, out, method_params(spec))
        failure = None if (overwrite or retry_failed or summary) else previous_failure(spec, out)
        if is_refusal(failure):
            failure = None  # refused for want of memory, not failed: planned and checked again
        if summary is not None:
            outcome.summaries.append(summary)
            outcome.skipped.append(spec)
        elif failure is not None:
            outcome.failed.append((spec, f"failed before at step {failure.get('step')}: {failure.get('reason')} "
                                         "(--retry-failed re-runs it)"))
        else:
            pending.append(spec)
    return outcome, pending


def run_sweep(
    specs: Sequence[RunSpec],
    out: Path,
    overwrite: bool = False,
    estimate: bool = True,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
    show_progress: bool = True,
    retry_failed: bool = False,
    jobs: int = 1,
    dry_run: bool = False,
    estimate_mode: str = "model",
    memory_limit_gb: float | None = None,
) -> SweepOutcome:
    """Runs what is not complete yet.  Complete runs are read back, runs that failed before are reported
    (and re-run with ``retry_failed``); ``jobs > 1`` runs that many in separate processes, GPUs assigned
    round-robin.  Every pending run is planned first (``bench.plan``: time and peak memory from the cost
    model, ``estimate_mode="measured"`` times real steps instead); a run whose estimate does not fit the
    memory available (or ``memory_limit_gb``) is refused and recorded, and the sweep goes on."""
    for spec in specs:
        validate_spec(spec)
    outcome, pending = pending_runs(specs, out, overwrite, retry_failed)
    log(f"{len(specs)} runs: {len(outcome.skipped)} already complete, {len(outcome.failed)} failed before, "
        f"{len(pending)} to run")
    plan = SweepPlan(pending, jobs, memory_limit_gb, timed=estimate or dry_run) if pending else None
    if plan is not None and estimate and estimate_mode == "measured":
        plan.use_measured_steps(estimate_seconds(pending))
    if plan is not None and (estimate or dry_run):
        plan.report(log, dry_run)
    if dry_run:
        return outcome
    if jobs <= 1:
        for index, spec in enumerate(pending, 1):
            log(f"[{index}/{len(pending)}] {spec.method} on {spec.dataset}, labels {spec.labels}, seed {spec.seed}, budget {spec.budget}")
            if refused(plan, spec, out, outcome, log, recheck=True):
                continue
            record_result(outcome, spec, out, *run_locked(spec, out, show_progress, overwrite), log)
        return outcome
    pending = [spec for spec in pending if not refused(plan, spec, out, outcome, log)]
    gpus = torch.cuda.device_count()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {
            pool.submit(run_in_child, spec, out, index % gpus if gpus else None,
                        max(1, (os.cpu_count() or 1) // jobs), overwrite): spec
            for index, spec in enumerate(pending)
        }
        for future in as_completed(futures):
            spec = futures[future]
            try:
                result = future.result()
            except Exception as error:  # a worker that died (killed, out of memory) is a failed run
                result = (None, f"{type(error).__name__}: {error}")
            record_result(outcome, spec, out, *result, log)
    return outcome


def refused(plan: SweepPlan | None, spec: RunSpec, out: Path, outcome: SweepOutcome, log: Callable[[str], None],
            recheck: bool = False) -> bool:
    """Refuse ``spec`` (record it, count it among the failed) when its memory estimate does not fit."""
    message = plan.refusal(spec, recheck) if plan is not None else None
    if message is None:
        return False
    plan.refuse(spec, out, message)
    outcome.failed.append((spec, message))
    log(f"    REFUSED {spec.method} labels {spec.labels} seed {spec.seed}: {message}")
    return True


def record_result(outcome: SweepOutcome, spec: RunSpec, out: Path, summary: dict | None, error: str | None,
                  log: Callable[[str], None]) -> None:
    if summary is None and error is None:
        return  # a process of an ``accelerate launch`` group other than the main one
    if summary is not None:
        outcome.summaries.append(summary)
        log(f"    {spec.method} labels {spec.labels} seed {spec.seed}: Dice {summary['metrics']['dice']:.4f} "
            f"in {format_duration(summary['wall_seconds'])}")
    elif error == RUNNING_ELSEWHERE:
        log(f"    {spec.directory(out)}: being trained by another process, left to it")
    else:
        outcome.failed.append((spec, error or "unknown error"))
        log(f"    FAILED: {error} (see {spec.directory(out)})")


RUNNING_ELSEWHERE = "running elsewhere"


def method_params(spec: RunSpec) -> dict[str, Any]:
    """The method parameters a run of ``spec`` would train with in this checkout (as its summary
    records them)."""
    return METHODS.get(spec.method).recorded_params(spec.params)


def run_locked(spec: RunSpec, out: Path, show_progress: bool,
               overwrite: bool = False) -> tuple[dict | None, str | None]:
    """One run under an exclusive lock on its folder, so two sweeps on one ``runs/`` never train the same
    run twice.  Under ``accelerate launch`` the main process takes the lock and tells the others whether
    to train (they train together, or not at all).

    Any exception from the run (the harness, a method, a plug-in) is that run's failure, recorded by
    ``execute_run``; the sweep goes on.  ``(None, None)`` on a process other than the main one: it
    trained, the main process reports."""
    directory = spec.directory(out)
    directory.mkdir(parents=True, exist_ok=True)
    state = process_state()
    with open(directory / ".lock", "w") as lock:
        locked = True
        if state.is_main_process:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                locked = False
        if state.num_processes > 1:
            decision = [locked]
            broadcast_object_list(decision)
            locked = decision[0]
        if not locked:
            return None, RUNNING_ELSEWHERE
        try:
            done = None if overwrite else completed_summary(spec, out, method_params(spec))
            if done is not None:
                return done, None
            summary = execute_run(spec, out, show_progress=show_progress)
            return summary, None
        except Exception as error:
            return None, f"{type(error).__name__}: {error}"


def run_in_child(spec: RunSpec, out: Path, gpu: int | None, threads: int,
                 overwrite: bool = False) -> tuple[dict | None, str | None]:
    """One run in a fresh process: its GPU, and its share of the CPU cores so jobs do not oversubscribe."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    torch.set_num_threads(threads)
    return run_locked(spec, out, show_progress=False, overwrite=overwrite)


def select_shard(specs: Sequence[RunSpec], shard: str) -> list[RunSpec]:
    """``i/n``: every n-th run starting at i (0-based), from the deterministic expansion order."""
    index_text, sep, count_text = shard.partition("/")
    if not (sep and index_text.isdigit() and count_text.isdigit() and 0 <= int(index_text) < int(count_text)):
        raise ValueError(f"--shard {shard!r}: expected i/n with 0 <= i < n, e.g. 0/4")
    index, count = int(index_text), int(count_text)
    return [spec for position, spec in enumerate(specs) if position % count == index]


def results_table(summaries: Sequence[dict], metric: str = "dice") -> pd.DataFrame:
    """One row per label budget x leaderboard row: ``labels`` (the leaderboard's ``#Lab``), ``rank``
    within the label budget (1 = best), ``method`` (named with its flags and non-default
    hyper-parameters, as the leaderboard names its rows), ``mean`` and sample ``std`` over seeds in %
    (NaN for one seed), ``seeds``.  Rows whose means print alike share a rank.  Label budgets in the leaderboard's order (bounds first)."""
    from bench.leaderboard.collect import row_name, setting_of
    from bench.leaderboard.tables import PRINTED_DECIMALS

    columns = ["labels", "rank", "method", "mean", "std", "seeds"]
    if not summaries:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame({"setting": setting_of(s), "method": row_name(s), "value": 100.0 * s["metrics"][metric]}
                         for s in summaries)
    table = frame.groupby(["setting", "method"])["value"].agg(["mean", "std", "count"]).reset_index()
    table = table.sort_values(["setting", "mean", "method"], ascending=[True, False, True], na_position="last")
    # Rows equal as printed share a rank, as they share the leaderboard's bold/underline marks.
    printed = table["mean"].round(PRINTED_DECIMALS)
    table["rank"] = printed.groupby(table["setting"]).rank(method="min", ascending=False).astype("Int64")
    table["labels"] = [setting.text for setting in table["setting"]]
    return table.rename(columns={"count": "seeds"})[columns].reset_index(drop=True)


def results_text(table: pd.DataFrame) -> str:
    """:func:`results_table` as printed text: a block per label budget, ``mean ± std`` with the
    leaderboard's decimals (``mean`` alone for one seed, as the leaderboard prints it)."""
    from bench.leaderboard.tables import PRINTED_DECIMALS

    width = max(len(name) for name in table["method"])
    lines = []
    for labels, block in table.groupby("labels", sort=False):
        lines.append(f"#Lab {labels}")
        for row in block.itertuples(index=False):
            value = f"{row.mean:.{PRINTED_DECIMALS}f}"
            if math.isfinite(row.std):
                value += f" ± {row.std:.{PRINTED_DECIMALS}f}"
            rank = f"{row.rank:>2}." if not pd.isna(row.rank) else " –."
            lines.append(f"  {rank} {row.method:<{width}}  {value:>15}  n={row.seeds}")
    return "\n".join(lines)
