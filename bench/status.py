"""``bench status RUNS_DIR``: one line per run of a sweep, read from the run folders and ``sacct``.

A run's state comes from what its folder holds (``bench.runs``, ``bench.execute``):

- ``finished``: ``summary.json`` (written last, atomically);
- ``running``: its ``.lock`` is held (an flock, seen in ``/proc/locks`` without taking it, so looking
  never stops a task from starting), or its SLURM task is RUNNING (a lock held on another node of a
  shared file system is not visible here);
- ``failed``: ``failure.json``, or a SLURM task that died without one (out of memory, node failure,
  timed out more often than requeued) and was not submitted again since;
- ``pending``: the rest: queued, cancelled, or interrupted (its step column says how far it got; the next
  ``bench run`` of the sweep resumes it).

Step and best validation Dice come from ``train_log.csv`` (written at every validation).
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from bench.launchers.slurm import ACTIVE_STATES, FAILED_STATES, SLURM_FILE, job_states
from bench.runs import FAILURE_FILE, SUMMARY_FILE

CONFIG_FILE = "config.json"
STATES = ("finished", "running", "pending", "failed")


@dataclass
class RunStatus:
    run: str
    state: str
    step: str
    best_val_dice: float | None
    elapsed_seconds: float | None
    slurm_job: str | None
    slurm_state: str | None


def run_folders(root: Path) -> list[Path]:
    """Folders that hold a run record (started, finished, failed, or submitted to SLURM)."""
    markers = (CONFIG_FILE, SUMMARY_FILE, FAILURE_FILE, SLURM_FILE)
    found = {path.parent for marker in markers for path in root.rglob(marker)}
    return sorted(folder for folder in found
                  if not any(part.startswith(".") for part in folder.relative_to(root).parts))


def held_locks() -> set[tuple[int, int, int]]:
    """(major, minor, inode) of every file with a lock in this machine's kernel."""
    held = set()
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return held
    for line in lines:
        fields = line.split()
        for field in fields:
            parts = field.split(":")
            if len(parts) == 3 and all(parts):
                try:
                    held.add((int(parts[0], 16), int(parts[1], 16), int(parts[2])))
                except ValueError:
                    continue
                break
    return held


def is_locked(folder: Path, locks: set[tuple[int, int, int]]) -> bool:
    try:
        stat = (folder / ".lock").stat()
    except OSError:
        return False
    return (os.major(stat.st_dev), os.minor(stat.st_dev), stat.st_ino) in locks


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def training_progress(folder: Path) -> tuple[int | None, float | None]:
    """Last logged step and best validation Dice so far, from ``train_log.csv``."""
    try:
        with open(folder / "train_log.csv", newline="") as stream:
            rows = list(csv.DictReader(stream))
    except OSError:
        return None, None
    if not rows:
        return None, None
    dices = [float(row["val_dice"]) for row in rows if row.get("val_dice") not in (None, "")]
    return int(float(rows[-1]["step"])), max(dices) if dices else None


def run_status(folder: Path, root: Path, locks: set[tuple[int, int, int]], slurm_states: dict[str, str]) -> RunStatus:
    config = _read_json(folder / CONFIG_FILE) or {}
    summary = _read_json(folder / SUMMARY_FILE) if (folder / SUMMARY_FILE).exists() else None
    failure_path = folder / FAILURE_FILE
    slurm = _read_json(folder / SLURM_FILE) or {}
    job_id = slurm.get("job_id")
    slurm_state = slurm_states.get(job_id) if job_id else None
    submitted_after_failure = (failure_path.exists() and (folder / SLURM_FILE).exists()
                               and (folder / SLURM_FILE).stat().st_mtime > failure_path.stat().st_mtime)
    total = (config.get("budget") or {}).get("iterations")
    step, best = training_progress(folder)
    started = (folder / CONFIG_FILE).stat().st_mtime if (folder / CONFIG_FILE).exists() else None
    elapsed = None
    if summary is not None:
        state, elapsed = "finished", summary.get("wall_seconds")
        best = (summary.get("training") or {}).get("best_validation_dice", best)
        step = total if total else step
    elif is_locked(folder, locks) or slurm_state == "RUNNING":
        state = "running"
        elapsed = time.time() - started if started else None
    elif slurm_state in ACTIVE_STATES:
        state = "pending"
    elif failure_path.exists() and not submitted_after_failure:
        state = "failed"
        failed_at = failure_path.stat().st_mtime
        elapsed = failed_at - started if started and failed_at >= started else None
    elif slurm_state in FAILED_STATES:
        state = "failed"
    else:
        state = "pending"
    step_text = "-" if step is None and not total else f"{step or 0}/{total or '?'}"
    return RunStatus(str(folder.relative_to(root)), state, step_text, best, elapsed, job_id, slurm_state)


def sweep_status(root: Path) -> list[RunStatus]:
    folders = run_folders(root)
    job_ids = [job for job in ((_read_json(folder / SLURM_FILE) or {}).get("job_id") for folder in folders) if job]
    states = job_states(job_ids) if job_ids else {}
    locks = held_locks()
    return [run_status(folder, root, locks, states) for folder in folders]


def format_status(statuses: list[RunStatus]) -> str:
    from bench.sweep import format_duration

    header = ("run", "state", "step", "best val Dice", "elapsed", "SLURM job", "SLURM state")
    rows = [(s.run, s.state, s.step, "-" if s.best_val_dice is None or math.isnan(s.best_val_dice) else f"{s.best_val_dice:.4f}",
             "-" if s.elapsed_seconds is None else format_duration(s.elapsed_seconds),
             s.slurm_job or "-", s.slurm_state or "-") for s in statuses]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    counts = {state: sum(s.state == state for s in statuses) for state in STATES}
    lines.append(f"{len(statuses)} runs: " + ", ".join(f"{counts[state]} {state}" for state in STATES))
    return "\n".join(lines)


def status_command(root: Path) -> int:
    """Prints the table; exit 1 when a run failed, 0 otherwise."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    statuses = sweep_status(root)
    if not statuses:
        raise ValueError(f"{root}: holds no run folders (<dataset>/<budget>/<method>/<labels>/seed<k>/)")
    print(format_status(statuses))
    return 1 if any(s.state == "failed" for s in statuses) else 0
