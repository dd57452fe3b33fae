"""Training curves through Accelerate's tracker API: TensorBoard by default, W&B or MLflow on request.

Every run logs the rows of its ``train_log.csv`` (loss terms, learning rate, validation Dice), under the
same names and steps, into its own folder, offline: ``tensorboard --logdir runs/`` then shows each run
named by its path (``<dataset>/<budget>/<method>/<labels>/seed<k>/tensorboard``).  The tracker changes
nothing trained, so it is not part of a run's config (``bench.runs.NOT_IN_CONFIG``).

A resumed run opens its TensorBoard writer with ``purge_step`` at the first step after its checkpoint:
steps an interrupted attempt logged past that checkpoint are dropped by TensorBoard's reader, so every
step shows once, with the values of the attempt that finished.
"""
from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from bench.runs import CHECKPOINT_FILE, RunSpec

if TYPE_CHECKING:
    from accelerate import Accelerator

TRACKERS = ("tensorboard", "wandb", "mlflow", "none")
TENSORBOARD_FOLDER = "tensorboard"
"""Where a run's TensorBoard event files go, inside its folder."""
PROJECT = "bench"
"""W&B project and MLflow experiment name."""


def check_tracker(name: str) -> None:
    """Fails with the package to install, before any run starts (Accelerate would drop a tracker whose
    package is missing silently)."""
    if name not in TRACKERS:
        raise ValueError(f"--log-with {name!r}: expected one of {', '.join(TRACKERS)}")
    if name == "none":
        return
    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules (tests) or a broken one
        found = False
    if not found:
        raise ValueError(f"--log-with {name}: the {name} package is not installed; "
                         f"pip install {name}, or pass --log-with none")


def tracker_of(options: dict) -> str | None:
    """The tracker a run's options name (``None`` for no tracker: runs built outside ``bench run``)."""
    name = options.get("log_with")
    return None if name in (None, "none") else name


def resumed_step(checkpoint: Path) -> int:
    """The step a run will resume from (0 without a checkpoint); memory-mapped, so nothing big is read."""
    import torch

    if not checkpoint.exists():
        return 0
    try:
        return int(torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["step"])
    except Exception:
        return 0  # the training loop reports an unreadable checkpoint


@contextmanager
def training_curves(accelerator: Accelerator, spec: RunSpec, directory: Path) -> Iterator[None]:
    """Starts ``accelerator``'s tracker for one run and finishes it when the run's training ends, failed
    or not (``Accelerator.end_training`` would also tear down the process group a sweep still needs)."""
    name = tracker_of(spec.options)
    if name is None:
        yield
        return
    run_label = f"{spec.dataset}/{spec.budget}/{spec.method}/{spec.labels}/seed{spec.seed}"
    init_kwargs: dict = {}
    if name == "tensorboard":
        init_kwargs = {"purge_step": resumed_step(directory / CHECKPOINT_FILE) + 1}
    elif name == "wandb":
        init_kwargs = {"mode": os.environ.get("WANDB_MODE", "offline"), "dir": str(directory), "name": run_label,
                       "resume": "allow", "id": spec.key}
    elif name == "mlflow":
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            import mlflow

            # A database of the run's own (MLflow no longer writes new runs to a plain ./mlruns folder).
            mlflow.set_tracking_uri(f"sqlite:///{(directory / 'mlflow.db').resolve()}")
        init_kwargs = {"run_name": run_label, "logging_dir": (directory / "mlruns").resolve().as_uri()}
    project = TENSORBOARD_FOLDER if name == "tensorboard" else PROJECT
    accelerator.init_trackers(project, init_kwargs={name: init_kwargs})
    try:
        yield
    finally:
        for tracker in accelerator.trackers:
            tracker.finish()
        accelerator.trackers.clear()
