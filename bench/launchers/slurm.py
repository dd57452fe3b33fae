"""A sweep as ONE SLURM job array through submitit: one array task per run.

- **Task.** Each task calls ``bench.sweep.run_locked`` on its run, as a local sweep does: the run folder's
  lock keeps two tasks (or a task and a local sweep) from training one run twice, and a run found
  complete is read back, not retrained.  A run that fails writes ``failure.json`` and its task ends
  FAILED; the other tasks go on.
- **Requeue.** :class:`SweepTask` is a ``submitit.helpers.Checkpointable``: when SLURM signals a
  preemption or an approaching time limit (``USR2``, 90 s ahead), submitit requeues the same call, and the
  run resumes from the ``checkpoint.pt`` its training loop writes at every validation (exactly: the
  resumed run ends as an uninterrupted one).  A task cancelled with ``scancel`` stays cancelled; submitting
  the sweep again resumes it the same way.
- **Records.** Submission writes ``slurm.json`` (job id, log files) into each run folder, so
  ``bench status`` can name the task and ask ``sacct`` for its state.

The task runs in the submitting Python (``sys.executable``: the venv's), from the submitting directory,
with its environment (sbatch exports it): the compute nodes must see the same paths.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import submitit

from bench.record import write_json_atomic
from bench.runs import FAILURE_FILE, RunSpec

SLURM_FILE = "slurm.json"
SUBMITIT_FOLDER = ".slurm"
"""Inside ``--out``: submitit's pickles and every task's stdout/stderr, ``<job id>/``."""
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
                           "COMPLETING", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "STOPPED"})
FAILED_STATES = frozenset({"FAILED", "OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"})
"""Terminal states that mean the run died (a ``CANCELLED`` run was stopped on purpose: it resumes when
the sweep is submitted again)."""


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    mem_gb: float | None = None
    """None: the cluster's default memory per CPU."""
    time_minutes: int = 24 * 60
    array_parallelism: int = 256
    """At most this many tasks of the array run at once (``--array=0-N%K``)."""
    sbatch: dict[str, str | bool] = field(default_factory=dict)
    """Extra ``#SBATCH --key=value`` lines (account, qos, constraint, ...)."""
    max_timeouts: int = 3
    """A run that times out more often than this is not requeued again (submitit's default)."""


def parse_time_limit(text: str | int) -> int:
    """Minutes from ``MINUTES``, ``HH:MM:SS``, ``HH:MM`` or ``D-HH:MM[:SS]`` (SLURM's forms)."""
    raw = str(text).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", raw)
    if not match:
        raise ValueError(f"--time-limit {raw!r}: expected minutes, HH:MM:SS or D-HH:MM:SS")
    days, first, second, third = match.groups()
    if second is None and days is None:
        minutes = int(first)
    else:
        hours, minutes_part, seconds = int(first), int(second or 0), int(third or 0)
        minutes = int(days or 0) * 24 * 60 + hours * 60 + minutes_part + (1 if seconds else 0)
    if minutes <= 0:
        raise ValueError(f"--time-limit {raw!r}: must be at least one minute")
    return minutes


def parse_sbatch_lines(lines: Sequence[str]) -> dict[str, str | bool]:
    """``--account=abc``, ``account=abc`` or ``#SBATCH --qos low`` -> ``{"account": "abc"}``; ``--exclusive`` ->
    ``{"exclusive": True}``."""
    parsed: dict[str, str | bool] = {}
    for line in lines:
        text = line.strip()
        if text.startswith("#SBATCH"):
            text = text[len("#SBATCH"):].strip()
        if text.startswith("-") and not text.startswith("--"):
            raise ValueError(f"--sbatch {line!r}: use the long form of the option (e.g. --account=abc, not -A abc)")
        text = text.lstrip("-")
        key, sep, value = text.replace(" ", "=", 1).partition("=")
        if not key or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
            raise ValueError(f"--sbatch {line!r}: expected an sbatch option such as --account=abc")
        # submitit's own parameter names use underscores: --job-name here replaces its job_name.
        parsed[key.replace("-", "_")] = value.strip() if sep else True
    return parsed


class RunFailed(RuntimeError):
    """A run that failed (its folder holds ``failure.json``); the array task ends FAILED."""


class SweepTask(submitit.helpers.Checkpointable):
    """One array task: one run.  ``checkpoint`` (inherited) resubmits this same call on preemption or
    time-out; the run resumes from its own checkpoint, so the task holds no state of its own."""

    def __init__(self, plugins: Sequence[str] = (), overwrite: bool = False) -> None:
        self.plugins = tuple(plugins)
        self.overwrite = overwrite

    def __call__(self, spec: RunSpec, out: Path) -> str:
        import torch

        from bench.registry import load_plugin_module
        from bench.sweep import RUNNING_ELSEWHERE, run_locked

        for module in self.plugins:
            load_plugin_module(module)
        # The run's share of the node, as `--jobs` gives each run its share of this machine.
        if "OMP_NUM_THREADS" not in os.environ and os.environ.get("SLURM_CPUS_PER_TASK"):
            torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
        summary, error = run_locked(spec, out, show_progress=False, overwrite=self.overwrite)
        if error == RUNNING_ELSEWHERE:
            return f"{spec.directory(out)}: being trained by another process, left to it"
        if error is not None:
            raise RunFailed(f"{spec.directory(out)}: {error}")
        return f"{spec.directory(out)}: Dice {summary['metrics']['dice']:.4f}"


def check_slurm() -> None:
    if shutil.which("sbatch") is None:
        raise ValueError("--launcher slurm: sbatch is not on PATH (run bench on a SLURM login node)")


def submit_runs(specs: Sequence[RunSpec], out: Path, options: SlurmOptions,
                plugins: Sequence[str] = (), overwrite: bool = False) -> list[str]:
    """Submits ``specs`` as one job array (a single run: one job); returns each run's SLURM job id
    (``<array id>_<task>``) and records it in the run's folder."""
    check_slurm()
    executor = submitit.SlurmExecutor(folder=out / SUBMITIT_FOLDER / "%j", max_num_timeout=options.max_timeouts)
    parameters = {"job_name": "bench", "time": options.time_minutes, "cpus_per_task": options.cpus_per_run,
                  "array_parallelism": options.array_parallelism, "additional_parameters": dict(options.sbatch)}
    if options.partition:
        parameters["partition"] = options.partition
    if options.gpus_per_run:
        parameters["gpus_per_node"] = options.gpus_per_run
    if options.mem_gb is not None:
        parameters["mem"] = f"{int(options.mem_gb * 1024)}MB"
    executor.update_parameters(**parameters)
    task = SweepTask(plugins, overwrite)
    with executor.batch():
        jobs = [executor.submit(task, spec, out) for spec in specs]
    submitted = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for spec, job in zip(specs, jobs):
        write_json_atomic(spec.directory(out) / SLURM_FILE, {
            "job_id": job.job_id, "submitted": submitted, "key": spec.key, "dataset": spec.dataset,
            "budget": spec.budget, "method": spec.method, "labels": spec.labels, "seed": spec.seed,
            "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)})
    return [job.job_id for job in jobs]


def _expand_job_ids(text: str) -> list[str]:
    """sacct shows an array's pending tasks as one line, ``123_[2-5%2]``; one id per task."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", text)
    if not match:
        return [text]
    array, ranges = match.group(1), match.group(2).split("%")[0]
    ids = []
    for part in ranges.split(","):
        first, _, last = part.partition("-")
        ids += [f"{array}_{task}" for task in range(int(first), int(last or first) + 1)]
    return ids


def job_states(job_ids: Sequence[str]) -> dict[str, str]:
    """SLURM state of each job id (``123_4`` or ``123``): from ``sacct`` where the accounting knows the
    job, else from ``squeue`` (a job in neither has left the queue: ``ENDED``).  Empty without SLURM."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    if not arrays:
        return {}
    states: dict[str, str] = {}
    listing = _slurm_command(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(arrays)])
    for line in (listing or "").splitlines():
        job_id, _, state = line.partition("|")
        for expanded in _expand_job_ids(job_id.strip()):
            states[expanded] = state.split()[0] if state.split() else "UNKNOWN"
    missing = [job_id for job_id in job_ids if job_id not in states]
    if missing:
        queue = _slurm_command(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(arrays)])
        if queue is None and listing is None:
            return {}
        for line in (queue or "").splitlines():
            job_id, _, state = line.partition("|")
            if job_id.strip() in missing:
                states[job_id.strip()] = state.strip()
    return {job_id: states.get(job_id, "ENDED") for job_id in job_ids}


def _slurm_command(command: list[str]) -> str | None:
    """stdout of a SLURM client command, None where it is missing or fails (no accounting, no SLURM)."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0 and "Invalid job id" not in result.stderr:
        return None
    return result.stdout


def wait_for_runs(specs: Sequence[RunSpec], job_ids: Sequence[str], out: Path, show_progress: bool,
                  log: Callable[[str], None]):
    """Blocks until every submitted run has ended (a requeued task is not over), with a progress bar over
    runs; returns their outcome read from the run folders, as a local sweep reports it."""
    from tqdm.auto import tqdm

    from bench.runs import completed_summary
    from bench.sweep import SweepOutcome, format_duration, method_params

    outcome = SweepOutcome()
    remaining = dict(zip(job_ids, specs))
    bar = tqdm(total=len(remaining), desc="runs", unit="run", dynamic_ncols=True, disable=not show_progress,
               file=sys.stderr)
    say = (lambda message: bar.write(message, file=sys.stderr)) if show_progress else log
    started = time.monotonic()
    while remaining:
        states = job_states(list(remaining))
        for job_id, spec in list(remaining.items()):
            state = states.get(job_id, "UNKNOWN")
            if state in ACTIVE_STATES or state == "UNKNOWN":
                continue
            del remaining[job_id]
            bar.update(1)
            summary = completed_summary(spec, out, method_params(spec))
            failure = spec.directory(out) / FAILURE_FILE
            if summary is not None:
                outcome.summaries.append(summary)
                say(f"    {spec.method} labels {spec.labels} seed {spec.seed}: Dice {summary['metrics']['dice']:.4f} "
                    f"in {format_duration(summary['wall_seconds'])} (job {job_id})")
            elif failure.exists():
                record = json.loads(failure.read_text())
                outcome.failed.append((spec, f"failed at step {record.get('step')}: {record.get('reason')} "
                                             f"(job {job_id})"))
            elif state == "COMPLETED":
                say(f"    {spec.directory(out)}: being trained by another process, left to it (job {job_id})")
            else:
                outcome.failed.append((spec, f"SLURM job {job_id} ended {state} without a result "
                                             f"(its log is under {out / SUBMITIT_FOLDER})"))
        bar.set_postfix(running=sum(states.get(j) == "RUNNING" for j in remaining), refresh=False)
        if remaining:
            # Often at first (smoke runs take seconds), then at most every 30 s: sacct is shared.
            time.sleep(min(30.0, 1.0 + (time.monotonic() - started) / 10))
    bar.close()
    return outcome
