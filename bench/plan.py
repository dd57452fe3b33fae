"""A sweep's plan: per run, the resolved schedule, the estimated time and peak memory on this machine,
and whether it fits; the refusal record of a run that does not (``bench.memory``).

Built from ``bench.cost_model`` (work per step, this machine's rates) in seconds, without training.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import torch

from bench.budget import Budget, resolve_budget
from bench.cost_model import (
    Cost,
    MethodCosts,
    Throughput,
    data_seconds_per_image,
    machine_throughput,
    method_costs,
    throughput_cache_path,
)
from bench.memory import (
    REFUSED_TYPE,
    Available,
    MemoryEstimate,
    available_memory,
    estimate_memory,
    gib,
    process_resident_bytes,
    refusal_message,
    smaller_batches,
)
from bench.runs import RunSpec


@dataclass
class RunPlan:
    spec: RunSpec
    iterations: int
    labeled_batch: int
    unlabeled_batch: int
    patch: int
    backbone: str
    step_seconds: float
    train_seconds: float
    eval_seconds: float
    memory: MemoryEstimate | None
    validation_seconds: float = math.nan
    """The part of ``eval_seconds`` spent validating during training (the rest scores the test split)."""
    step_cost: Cost | None = None
    """The work of one training step (``bench.cost_model``); seconds = this over the machine's rates + data."""
    data_seconds: float = 0.0
    """Loading and augmenting one step's images."""
    smaller_batch: str | None = None
    """The largest ``--batch`` (same ratio) whose estimate fits, when the run's does not."""
    fitting_batch: Callable[[Available], str | None] | None = field(default=None, repr=False)
    """Finds :attr:`smaller_batch` for an amount of memory."""
    gpu_memory: float | None = None
    """The peak the same run would reach on a GPU (what a refusal on a CPU suggests)."""
    error: str | None = None
    """Why the model could not cost this run (a plug-in the trace cannot build, say): it then runs unchecked."""

    @property
    def seconds(self) -> float:
        return self.train_seconds + self.eval_seconds

    def refusal(self, available: Available) -> str | None:
        """The refusal message when the estimate exceeds ``available``'s usable share, else ``None``."""
        if self.memory is None or self.memory.peak <= available.usable:
            return None
        if self.fitting_batch is not None:
            self.smaller_batch = self.fitting_batch(available)
        return refusal_message(self.spec.method, self.memory, available, self.smaller_batch, self.gpu_memory)


def run_device() -> torch.device:
    """The device a run of this process trains on (``bench.execute.make_accelerator``'s choice)."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def plan_run(spec: RunSpec, throughput: Throughput | None, available: Available, device: torch.device,
             process_bytes: float) -> RunPlan:
    """``throughput`` ``None``: memory only (no seconds, no micro-benchmark)."""
    from bench.execute import budget_for, dataset_for
    from bench.registry import METHODS

    method_cls = METHODS.get(spec.method)
    adapter = dataset_for(spec)
    budget = budget_for(spec, adapter, method_cls)
    labeled = budget.labeled_batch if method_cls.trains else 0
    unlabeled = budget.unlabeled_batch if method_cls.trains and method_cls.unlabeled_views else 0
    iterations = budget.iterations if method_cls.trains else 0
    plan = RunPlan(spec, iterations, labeled, unlabeled, budget.patch_size, "?", math.nan, math.nan, math.nan, None)
    try:
        costs = method_costs(spec, adapter, budget)
    except Exception as error:  # the plan must not stop a sweep: the run goes ahead unchecked
        plan.error = f"{type(error).__name__}: {error}"
        return plan
    plan.backbone = backbone_description(costs, spec)
    counts = split_counts(adapter, budget)
    plan.step_cost = costs.step(labeled, unlabeled, budget.patch_size)
    first_sights = min(counts.unlabeled_slices(spec, method_cls), iterations * unlabeled)
    if throughput is not None:
        plan.data_seconds = (
            labeled * data_seconds_per_image(budget.patch_size, ("weak",) + tuple(method_cls.labeled_views), True)
            + unlabeled * data_seconds_per_image(budget.patch_size, tuple(method_cls.unlabeled_views), False)
        ) if method_cls.trains else 0.0
        plan.step_seconds = throughput.seconds(plan.step_cost) + plan.data_seconds if method_cls.trains else 0.0
        plan.train_seconds = iterations * plan.step_seconds + throughput.seconds(
            costs.first_sight_cost(first_sights, budget.patch_size))
        per_image = throughput.seconds(costs.prediction(budget.eval_batch, budget.patch_size)) / budget.eval_batch
        validations = math.ceil(iterations / budget.validate_every) if method_cls.trains else 0
        plan.validation_seconds = per_image * validations * counts.val_slices
        plan.eval_seconds = plan.validation_seconds + per_image * counts.test_slices

    def estimate(labeled: int, unlabeled: int, on: torch.device = device) -> MemoryEstimate:
        return estimate_memory(costs, budget, labeled, unlabeled, counts.train_slices, counts.eval_bytes,
                               on, process_bytes, first_sights)

    plan.memory = estimate(labeled, unlabeled)
    plan.gpu_memory = estimate(labeled, unlabeled, torch.device("cuda")).peak
    if method_cls.trains:
        plan.fitting_batch = lambda room: _fitting_batch(spec, adapter, method_cls, estimate, room)
    return plan


def _fitting_batch(spec: RunSpec, adapter, method_cls, estimate: Callable[[int, int], MemoryEstimate],
                   available: Available) -> str | None:
    """The largest ``--batch L+U`` (the budget's ratio) whose estimate fits ``available``."""
    from bench.execute import budget_for

    unfilled = resolve_budget(spec.budget, adapter.budget_overrides, method_cls.budget_overrides, spec.iterations,
                              spec.batch)
    for labeled, unlabeled in smaller_batches(unfilled.labeled_batch, unfilled.unlabeled_batch):
        text = f"{labeled}+{unlabeled}"
        budget = budget_for(dataclasses.replace(spec, batch=text), adapter, method_cls)
        if estimate(budget.labeled_batch, budget.unlabeled_batch if method_cls.unlabeled_views else 0).peak \
                <= available.usable:
            return text
    return None


def backbone_description(costs: MethodCosts, spec: RunSpec) -> str:
    if costs.backbone.startswith("U-Net"):
        return costs.backbone
    weights = ("random init" if spec.options.get("sam_random_init")
               else Path(spec.options["sam_checkpoint"]).name if spec.options.get("sam_checkpoint") else "bundled weights")
    return f"{costs.backbone} ({weights})"


@dataclass(frozen=True)
class SplitCounts:
    adapter: object
    train_slices: int
    val_slices: int
    test_slices: int
    eval_bytes: float
    """Validation cases as ``validation_dice`` holds them (all at once) and the test predictions."""

    def unlabeled_slices(self, spec: RunSpec, method_cls) -> int:
        """Training slices outside the run's labeled cases (read from the adapter's slice list, which
        the data checks have loaded)."""
        from bench.execute import labeled_case_ids

        if not method_cls.unlabeled_views:
            return 0
        labeled = set(labeled_case_ids(spec, self.adapter, method_cls))
        return sum(1 for item in self.adapter.train_slices(patch_size=self.patch) if item.case_id not in labeled)

    patch: tuple[int, int] = (0, 0)


def split_counts(adapter, budget: Budget) -> SplitCounts:
    """Slice counts from the data checks every sweep runs first (``bench.data.check``: remembered per
    adapter, so free here), cut to a budget's reduced evaluation."""
    from bench.data.check import check_split

    patch = (budget.patch_size, budget.patch_size)
    train = check_split(adapter, "train", patch_size=patch)
    val, test = check_split(adapter, "val"), check_split(adapter, "test")
    val_slices, test_slices = (_evaluated(check, budget) for check in (val, test))
    pixels = _slice_pixels(adapter)
    return SplitCounts(adapter, train.slices, val_slices, test_slices, pixels * (val_slices * (4 + 1) + test_slices),
                       patch)


def _evaluated(check, budget: Budget) -> int:
    if not budget.reduced_evaluation or not check.cases:
        return check.slices
    cases = min(check.cases, budget.eval_cases or check.cases)
    per_case = check.slices / check.cases
    return int(round(cases * min(per_case, budget.eval_slices or per_case)))


def _slice_pixels(adapter) -> int:
    return _first_case_pixels(adapter)


@lru_cache(maxsize=8)
def _first_case_pixels(adapter) -> int:
    """Pixels of one slice of the first validation case (cases of a data set share their size, roughly)."""
    for case in adapter.eval_cases("val"):
        return int(case.image.shape[-1] * case.image.shape[-2])
    return 0


# -- printing -------------------------------------------------------------------------------------------------

def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def describe_machine(throughput: Throughput, available: Available) -> str:
    return (f"cost model for {throughput.machine}: convolutions {throughput.conv_flops_per_second / 1e9:.0f} GFLOP/s, "
            f"matrix products {throughput.matmul_flops_per_second / 1e9:.0f} GFLOP/s, writes "
            f"{throughput.bytes_per_second / 1e9:.1f} GB/s ({throughput.large_bytes_per_second / 1e9:.1f} to large "
            f"tensors), {throughput.seconds_per_operation * 1e6:.1f} us per "
            f"operation (measured once, cached in {throughput_cache_path()}); memory for a run: "
            f"{gib(available.usable)} ({available.source}: {gib(available.bytes)}, less the margin)")


def plan_line(plan: RunPlan, available: Available) -> str:
    spec = plan.spec
    name = f"{spec.method} labels {spec.labels} seed {spec.seed}"
    if plan.error:
        return f"  {name}: no estimate ({plan.error}); runs unchecked"
    batch = f"{plan.labeled_batch}+{plan.unlabeled_batch}" if plan.iterations else "-"
    memory = f"peak {gib(plan.memory.peak)}" if plan.memory else "peak ?"
    verdict = "  WOULD NOT FIT" + (f" (--batch {plan.smaller_batch} would)" if plan.smaller_batch else "") \
        if plan.refusal(available) else ""
    return (f"  {name}: {plan.iterations} it, batch {batch}, patch {plan.patch}, {plan.backbone}; "
            f"~{format_duration(plan.seconds)} (train {format_duration(plan.train_seconds)}, "
            f"{1000 * plan.step_seconds:.0f} ms/step; eval {format_duration(plan.eval_seconds)}), {memory}{verdict}")


def plan_totals(plans: Sequence[RunPlan], available: Available, jobs: int) -> str:
    costed = [plan for plan in plans if not plan.error]
    seconds = sum(plan.seconds for plan in costed)
    parallel = max(1, min(jobs, len(plans)))
    refused = [plan for plan in costed if plan.refusal(available)]
    peak = max((plan.memory.peak for plan in costed if plan.memory), default=0.0)
    line = (f"total: {len(plans)} run(s), ~{format_duration(seconds / parallel)} on {parallel} job(s) "
            f"(training and evaluation; metrics not included), largest peak {gib(peak)}")
    if refused:
        methods = sorted({plan.spec.method for plan in refused})
        line += f"; {len(refused)} would not fit and would be refused ({', '.join(methods)})"
    if len(costed) < len(plans):
        line += f"; {len(plans) - len(costed)} without an estimate"
    return line


def is_refusal(failure: dict | None) -> bool:
    """Whether a ``failure.json`` record is a refusal (the machine was too small), not a failure."""
    return bool(failure) and failure.get("type") == REFUSED_TYPE


def record_refusal(spec: RunSpec, out: Path, message: str) -> None:
    """The refusal, where a failed run's record goes (``failure.json``, ``traceback.txt``)."""
    from bench.execute import write_failure

    directory = spec.directory(out)
    directory.mkdir(parents=True, exist_ok=True)
    write_failure(directory, spec, None, REFUSED_TYPE, message, message + "\n")


# -- a sweep's plan ---------------------------------------------------------------------------------------------

class SweepPlan:
    """The plan of a sweep's pending runs, and the memory check before each of them starts."""

    def __init__(self, specs: Sequence[RunSpec], jobs: int = 1, memory_limit_gb: float | None = None,
                 device: torch.device | None = None, timed: bool = True) -> None:
        """``timed=False``: memory only (no duration, no throughput micro-benchmark)."""
        self.device = device or run_device()
        self.jobs = jobs
        self.memory_limit_gb = memory_limit_gb
        self.throughput = machine_throughput(self.device) if timed else None
        self.available = available_memory(self.device, jobs, memory_limit_gb)
        process = process_resident_bytes()
        self.plans = {spec.key: plan_run(spec, self.throughput, self.available, self.device, process) for spec in specs}

    def __getitem__(self, spec: RunSpec) -> RunPlan:
        return self.plans[spec.key]

    def use_measured_steps(self, seconds_per_step: dict[str, float]) -> None:
        """``--estimate measured``: training time from timed steps of the real models instead."""
        for plan in self.plans.values():
            if plan.spec.method in seconds_per_step:
                plan.step_seconds = seconds_per_step[plan.spec.method]
                plan.train_seconds = plan.iterations * plan.step_seconds

    def report(self, log: Callable[[str], None], dry_run: bool) -> None:
        """Per run (``dry_run``) or per method: schedule, time, peak memory and fit; then the totals."""
        plans = list(self.plans.values())
        if self.throughput is not None:
            log(describe_machine(self.throughput, self.available))
        if dry_run:
            for plan in plans:
                log(plan_line(plan, self.available))
        else:
            per_method: dict[str, RunPlan] = {}
            for plan in plans:
                per_method.setdefault(plan.spec.method, plan)
            log("per step: " + ", ".join(
                f"{name} {1000 * plan.step_seconds:.0f} ms" if not plan.error else f"{name} ?"
                for name, plan in per_method.items() if plan.iterations or plan.error))
        log(plan_totals(plans, self.available, self.jobs))

    def refusal(self, spec: RunSpec, recheck: bool = False) -> str | None:
        """The refusal message of ``spec`` if its estimate does not fit (``recheck``: against the memory
        available now); under ``accelerate launch`` the main process decides for every process."""
        from bench.execute import process_state

        if recheck and self.memory_limit_gb is None:
            self.available = available_memory(self.device, self.jobs, self.memory_limit_gb)
        message = self[spec].refusal(self.available) if spec.key in self.plans else None
        state = process_state()
        if state.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            decision = [message]
            broadcast_object_list(decision)
            message = decision[0]
        return message

    def refuse(self, spec: RunSpec, out: Path, message: str) -> None:
        from bench.execute import process_state

        if process_state().is_main_process:
            record_refusal(spec, out, message)
