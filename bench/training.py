"""The one training loop every method runs in: Accelerate owns devices, precision and distribution;
the method owns its loss.  The loop checkpoints itself so an interrupted run resumes exactly."""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from bench.method import Batch, Method, Progress
from bench.record import torch_save_atomic, write_csv_atomic

CHECKPOINT_FORMAT_VERSION = 1


TRAINING_STEP_ATTRIBUTE = "bench_training_step"
"""Set on any exception raised inside the training loop: the step a failure record names."""


class TrainingFailure(RuntimeError):
    """A run that cannot go on (non-finite loss); recorded as a failed result, never as a score."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"step {step}: {reason}")
        self.step = step
        self.reason = reason


@dataclass
class TrainingResult:
    best_state: dict
    best_validation_dice: float
    best_step: int
    steps: int
    seconds: float
    """Training time of all steps, those before a resume included (as far as the checkpoint recorded it)."""
    resumed_from: int = 0
    seconds_before_resume: float | None = 0.0
    """Training time of the steps a resumed run had done before; None when its checkpoint predates this record."""


class BatchStream:
    """An endless batch iterator that can be rebuilt at any step: ``make(start_step)`` must return the
    batches a fresh iterator would yield from ``start_step`` on (see ``bench.data.streams``)."""

    def __init__(self, make: Callable[[int], Iterator[dict]]) -> None:
        self.make = make

    def start(self, step: int) -> Iterator[dict]:
        return self.make(step)


def assemble_batch(labeled: dict, unlabeled: dict | None, method: Method) -> Batch:
    """Only what the method declared it needs goes in; unlabeled samples carry no label key at all.
    Their slice index and augmentation geometry pass through when the stream provides them."""
    unlabeled_views = {view: unlabeled[view] for view in method.unlabeled_views} if unlabeled else {}
    labeled_views = {view: labeled[view] for view in method.labeled_views}
    return Batch(
        labeled_images=labeled["weak"], labels=labeled["label"], unlabeled=unlabeled_views,
        labeled_strong=labeled_views,
        unlabeled_index=unlabeled.get("index") if unlabeled else None,
        unlabeled_geometry=unlabeled.get("geometry") if unlabeled else None,
    )


def _rng_state() -> dict:
    """Global RNG states as tensors and Python scalars, so the checkpoint loads with ``weights_only=True``."""
    name, keys, position, has_gauss, cached_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rng_states_of_every_process(accelerator: Accelerator) -> list[dict]:
    """Each process draws its own noise and samples: a resumed multi-process run restores each its own."""
    if accelerator.num_processes == 1:
        return [_rng_state()]
    return gather_object([_rng_state()])


def save_checkpoint(path: Path, payload: dict) -> None:
    """Atomic: a kill during the write leaves the previous checkpoint intact."""
    torch_save_atomic(payload, path)


def load_checkpoint(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: unreadable checkpoint ({error}); delete it to restart the run") from error
    if payload.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {payload.get('format_version')} != {CHECKPOINT_FORMAT_VERSION}")
    return payload


def train(
    method: Method,
    accelerator: Accelerator,
    labeled_stream: BatchStream,
    unlabeled_stream: BatchStream | None,
    total_steps: int,
    validate_every: int,
    validate: Callable[[Method], float],
    log_path: Path,
    gradient_clip: float | None = None,
    show_progress: bool = True,
    description: str = "",
    on_validation: Callable[[int, float], None] | None = None,
    checkpoint_path: Path | None = None,
    checkpoint_every: int | None = None,
) -> TrainingResult:
    """Runs ``total_steps`` optimisation steps and keeps the state with the best validation Dice.

    Model selection sees the validation split only; the test split is not reachable from here.  With
    ``checkpoint_path``, the loop saves model, optimizers, schedulers, RNG states and its step every
    ``checkpoint_every`` steps and resumes from such a checkpoint when one exists.
    """
    specs = method.optimizers()
    prepared = accelerator.prepare(method, *[spec.optimizer for spec in specs])
    model, optimizers = prepared[0], list(prepared[1:])
    # Schedulers are not prepared: Accelerate would step them once per process, and our schedules are
    # defined per optimisation step.
    schedulers = [
        torch.optim.lr_scheduler.LambdaLR(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
                                          lambda step, f=spec.lr_lambda: f(step / total_steps))
        for optimizer, spec in zip(optimizers, specs)
    ]
    unwrapped: Method = accelerator.unwrap_model(model)

    start_step, best_dice, best_step, rows, earlier_seconds = 0, -math.inf, 0, [], 0.0
    best_state = {k: v.detach().cpu().clone() for k, v in unwrapped.state_dict().items()}
    checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path is not None else None
    if checkpoint is not None:
        unwrapped.load_state_dict(checkpoint["model"])
        for optimizer, state in zip(optimizers, checkpoint["optimizers"]):
            optimizer.load_state_dict(state)
        for scheduler, state in zip(schedulers, checkpoint["schedulers"]):
            scheduler.load_state_dict(state)
        start_step, best_dice, best_step = checkpoint["step"], checkpoint["best_dice"], checkpoint["best_step"]
        best_state, rows = checkpoint["best_state"], checkpoint["log_rows"]
        earlier_seconds = checkpoint.get("train_seconds")
    labeled_batches = labeled_stream.start(start_step)
    unlabeled_batches = unlabeled_stream.start(start_step) if unlabeled_stream is not None else None
    if checkpoint is not None:
        # After the streams: building a DataLoader iterator draws from the global torch RNG, which an
        # uninterrupted run did at step 0, not at the resumed step.
        per_process = checkpoint.get("rng_per_process") or [checkpoint["rng"]]
        rank = accelerator.process_index
        _set_rng_state(per_process[rank] if len(per_process) == accelerator.num_processes else checkpoint["rng"])

    started = time.perf_counter()
    bar = tqdm(total=total_steps, initial=start_step, desc=description, leave=False, dynamic_ncols=True,
               disable=not (show_progress and accelerator.is_main_process))
    step = start_step
    try:
        for step in range(start_step, total_steps):
            progress = Progress(step=step, total_steps=total_steps)
            labeled = next(labeled_batches)
            unlabeled = next(unlabeled_batches) if unlabeled_batches is not None else None
            batch = assemble_batch(labeled, unlabeled, unwrapped).to(accelerator.device)
            model.train()
            with accelerator.autocast():
                output = model(batch, progress)
            if not torch.isfinite(output.loss.detach()):
                raise TrainingFailure(step, f"non-finite loss {output.loss.item()}")
            accelerator.backward(output.loss)
            if gradient_clip is not None:
                accelerator.clip_grad_norm_(model.parameters(), gradient_clip)
            for optimizer in optimizers:
                optimizer.step()
            for scheduler in schedulers:
                scheduler.step()
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            unwrapped.on_step_end(progress)

            row = {"step": step + 1, "loss": float(output.loss.detach()), "lr": optimizers[0].param_groups[0]["lr"]}
            row.update({key: float(value) for key, value in output.logs.items()})
            if (step + 1) % validate_every == 0 or step + 1 == total_steps:
                model.eval()
                row["val_dice"] = validate(unwrapped)
                if row["val_dice"] > best_dice:
                    best_dice, best_step = row["val_dice"], step + 1
                    best_state = {k: v.detach().cpu().clone() for k, v in unwrapped.state_dict().items()}
                bar.set_postfix(loss=f"{row['loss']:.3f}", val_dice=f"{row['val_dice']:.3f}", best=f"{best_dice:.3f}")
                if on_validation is not None:
                    on_validation(step + 1, row["val_dice"])
            elif step % 10 == 0:
                bar.set_postfix(loss=f"{row['loss']:.3f}", best=f"{best_dice:.3f}" if best_step else "-")
            rows.append(row)
            # The same row to the run's tracker (bench.tracking), if any; Accelerate logs on the main process.
            accelerator.log({key: value for key, value in row.items() if key != "step"}, step=step + 1)
            bar.update(1)
            if "val_dice" in row and accelerator.is_main_process:
                write_csv_atomic(log_path, rows)
            if (checkpoint_path is not None and checkpoint_every and (step + 1) % checkpoint_every == 0
                    and step + 1 < total_steps):
                rng_per_process = _rng_states_of_every_process(accelerator)
                if accelerator.is_main_process:
                    save_checkpoint(checkpoint_path, {
                        "format_version": CHECKPOINT_FORMAT_VERSION, "step": step + 1,
                        "model": {k: v.detach().cpu() for k, v in unwrapped.state_dict().items()},
                        "optimizers": [optimizer.state_dict() for optimizer in optimizers],
                        "schedulers": [scheduler.state_dict() for scheduler in schedulers],
                        "best_dice": best_dice, "best_step": best_step, "best_state": best_state,
                        "log_rows": rows, "rng": rng_per_process[0], "rng_per_process": rng_per_process,
                        "train_seconds": None if earlier_seconds is None else earlier_seconds + time.perf_counter() - started,
                    })
    except Exception as error:
        setattr(error, TRAINING_STEP_ATTRIBUTE, step)
        raise
    bar.close()
    if accelerator.is_main_process:
        write_csv_atomic(log_path, rows)
    seconds = time.perf_counter() - started
    return TrainingResult(best_state, best_dice, best_step, total_steps, seconds + (earlier_seconds or 0.0), start_step,
                          earlier_seconds)


def time_steps(
    method: Method,
    accelerator: Accelerator,
    labeled_stream: BatchStream,
    unlabeled_stream: BatchStream | None,
    steps: int,
    total_steps: int,
) -> float:
    """Seconds per training step (after one warm-up step), for sweep duration estimates and benchmarks."""
    specs = method.optimizers()
    model = accelerator.prepare(method)
    labeled_batches = labeled_stream.start(0)
    unlabeled_batches = unlabeled_stream.start(0) if unlabeled_stream is not None else None
    durations = []
    for step in range(steps + 1):
        started = time.perf_counter()
        labeled = next(labeled_batches)
        unlabeled = next(unlabeled_batches) if unlabeled_batches is not None else None
        batch = assemble_batch(labeled, unlabeled, method).to(accelerator.device)
        with accelerator.autocast():
            output = model(batch, Progress(step, total_steps))
        accelerator.backward(output.loss)
        for spec in specs:
            spec.optimizer.step()
            spec.optimizer.zero_grad(set_to_none=True)
        method.on_step_end(Progress(step, total_steps))
        if step:
            durations.append(time.perf_counter() - started)
    return sum(durations) / max(1, len(durations))
