"""Peak memory of a run, estimated before it starts, and the refusal of a run that would not fit.

A run is refused, not started, when its estimated peak exceeds what this machine has for it: the RAM
available (``psutil``: free plus reclaimable page cache, plus what this process already holds, since
an in-process run reuses it) on a CPU, the free memory of the GPU (``torch.cuda.mem_get_info``) on a
GPU, less :data:`MEMORY_MARGIN`; ``--memory-limit GB`` replaces the measured amount.  The refusal is
recorded in the run's folder as a failure of type :data:`REFUSED_TYPE` (``failure.json``, whose reason
starts with :data:`REFUSED_REASON`), which ``bench leaderboard`` lists among the skipped runs; a later
sweep estimates such a run again rather than reporting it as failed, since the run did not fail: the
machine was too small.

**The estimate** (:func:`estimate_memory`), on a CPU the peak resident set of the whole process, as a
run's summary records it (``peak_memory_mb``):

- this process as it is (interpreter, torch, the data set already read by the checks);
- the model: parameters and buffers, gradients of the trainable parameters, optimizer state, and the
  copy of the best state the training loop keeps (``bench.cost_model.model_memory``: counted on the
  real model built on the ``meta`` device, no weights read);
- activations autograd saves for backward in one step, from the tiny trace scaled to the run's patch,
  batch and backbone (``bench.cost_model``), plus the largest set of tensors a no-grad SAM pass holds
  at once;
- the training slices as the streams hold them (float32 image and uint8 label at the patch), the
  validation cases (read whole) and the test predictions, and what a method keeps per unlabeled slice
  it has seen (SemiSAM's embedding cache: the real encoder's output per slice, for every slice the run
  draws);
- evaluation: ``eval_batch`` slices through ``predict``, on top of training's activations (memory a
  process freed stays in its resident set);
- a whole run's bookkeeping (:data:`RUN_BOOKKEEPING_BYTES`, :data:`ALLOCATOR_GROWTH`).

On a GPU the model, activations or evaluation (the larger: the caching allocator reuses training's
blocks) count against the GPU (data stay in RAM), plus the CUDA context.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MEMORY_MARGIN = 0.10
"""Share of the available memory kept free: the estimate is a model, and the allocator fragments."""
RUN_BOOKKEEPING_BYTES = 256 * 2**20
ALLOCATOR_GROWTH = 0.10
"""A whole run holds more than one step and one evaluation: scoring, checkpoints, logs, and an
allocator that fragments over a thousand steps.  Calibrated on the 95 finished runs of
``leaderboards/acdc-quick`` (13 methods, full 1,000-step runs with test scoring; the highest peak of
each setting's seeds): without these two terms the estimate was 0.89-1.06 of the recorded peak, with
them 0.94-1.31 (``python benchmarks/cost_model_check.py --records leaderboards/acdc-quick/runs``)."""
CUDA_CONTEXT_BYTES = 600 * 2**20
"""The CUDA context and kernels a process loads before its first tensor (not in ``max_memory_allocated``)."""
REFUSED_TYPE = "WouldNotFit"
REFUSED_REASON = "refused: would not fit"
GIB = 2**30


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes; ``peak`` is what counts against ``device``'s memory."""

    device: str
    process: float
    model: float
    activations: float
    data: float
    evaluation: float
    bookkeeping: float = 0.0

    @property
    def training(self) -> float:
        return self.process + self.model + self.activations + self.data + self.bookkeeping

    @property
    def peak(self) -> float:
        """On a CPU training's activations and evaluation's add up: memory a process freed stays in its
        resident set (glibc keeps it for reuse, fragmented), and evaluation allocates on top (measured
        with LiteMedSAM: 3.3 GiB after two training steps, 6.8 GiB after a 16-slice evaluation next).
        A GPU's caching allocator hands training's blocks to evaluation."""
        if self.device == "cuda":
            return max(self.training, self.process + self.model + self.data + self.evaluation)
        return self.training + self.evaluation


@dataclass(frozen=True)
class Available:
    bytes: float
    source: str
    """Where the figure comes from, for messages: ``RAM available``, ``GPU free``, ``--memory-limit``."""

    @property
    def usable(self) -> float:
        return self.bytes * (1 - MEMORY_MARGIN)


def gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def process_resident_bytes() -> float:
    """This process's resident set now (0 where psutil, a dependency of accelerate, is missing)."""
    try:
        import psutil
    except ImportError:
        return 0.0
    return float(psutil.Process().memory_info().rss)


def available_memory(device: torch.device, jobs: int = 1, limit_gb: float | None = None) -> Available:
    """Memory one run may use: ``--memory-limit`` when given, else what the machine has free now
    (shared by ``jobs`` concurrent runs).  On a CPU an in-process run (``jobs == 1``) also reuses what
    this process already holds, which the estimate counts."""
    if limit_gb is not None:
        return Available(limit_gb * GIB, f"--memory-limit {limit_gb:g} GB")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        gpus = max(1, torch.cuda.device_count())
        share = max(1, math.ceil(jobs / gpus))
        return Available(free / share, f"GPU free memory ({torch.cuda.get_device_name(device)})"
                         + (f" / {share} jobs" if share > 1 else ""))
    try:
        import psutil

        free = float(psutil.virtual_memory().available)
    except ImportError:
        return Available(math.inf, "RAM (unknown: psutil missing)")
    if jobs > 1:
        return Available(free / jobs, f"RAM available / {jobs} jobs")
    return Available(free + process_resident_bytes(), "RAM available to this process")


def estimate_memory(costs, budget, labeled: int, unlabeled: int, training_slices: int, eval_bytes: float,
                    device: torch.device, process_bytes: float, first_sights: int = 0) -> MemoryEstimate:
    """The estimate described in the module docstring; ``costs`` is ``bench.cost_model.MethodCosts``;
    ``first_sights``: unlabeled slices the run sees (a per-slice cache keeps something of each)."""
    model = costs.model
    patch = budget.patch_size
    step = costs.step(labeled, unlabeled, patch) if costs.trains else None
    activations = (step.saved_bytes + step.transient_bytes) if step is not None else 0.0
    evaluation = costs.prediction(budget.eval_batch, patch).transient_bytes
    trained = model.gradients + model.optimizer_state if costs.trains else 0
    data = training_slices * patch * patch * (4 + 1) + eval_bytes if costs.trains else eval_bytes
    cache = costs.kept_per_first_sight * first_sights
    growth = ALLOCATOR_GROWTH * (activations + evaluation)
    if device.type == "cuda":
        return MemoryEstimate("cuda", CUDA_CONTEXT_BYTES, model.parameters + model.buffers + trained,
                              activations, cache, evaluation, growth)
    best_copy = model.best_state if costs.trains else 0
    return MemoryEstimate("cpu", process_bytes, model.parameters + model.buffers + trained + best_copy,
                          activations, data + cache, evaluation, RUN_BOOKKEEPING_BYTES + growth)


def smaller_batches(labeled: int, unlabeled: int) -> list[tuple[int, int]]:
    """``--batch`` values below ``labeled+unlabeled`` at about its ratio, largest first, down to 1+1."""
    batches = []
    for smaller in range(labeled - 1, 0, -1):
        candidate = (smaller, max(1, round(unlabeled * smaller / labeled)))
        if candidate not in batches:
            batches.append(candidate)
    return batches


def refusal_message(method: str, estimate: MemoryEstimate, available: Available, smaller_batch: str | None,
                    gpu_peak: float | None) -> str:
    """``refused: would not fit: <method> needs ~X GiB, Y GiB usable (...); would fit: <what would>``."""
    options = []
    if smaller_batch:
        options.append(f"--batch {smaller_batch}")
    if estimate.device != "cuda" and gpu_peak is not None:
        options.append(f"a GPU with at least {gib(gpu_peak / (1 - MEMORY_MARGIN))} free")
    elif not smaller_batch:
        options.append("a GPU with more memory")
    options.append("or --memory-limit GB to override the check")
    return (f"{REFUSED_REASON}: {method} needs ~{gib(estimate.peak)} at its peak, {gib(available.usable)} usable "
            f"({available.source}: {gib(available.bytes)}, less a {MEMORY_MARGIN:.0%} margin); would fit: "
            + ", ".join(options))
