"""The one training loop every method runs in: Accelerate owns devices, precision and distribution;
the method owns its loss."""
from __future__ import annotations

import copy
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from bench.method import Batch, Method, Progress


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


def assemble_batch(labeled: dict, unlabeled: dict | None, method: Method) -> Batch:
    """Only what the method declared it needs goes in; unlabeled samples carry no label key at all."""
    unlabeled_views = {view: unlabeled[view] for view in method.unlabeled_views} if unlabeled else {}
    labeled_views = {view: labeled[view] for view in method.labeled_views}
    return Batch(
        labeled_images=labeled["weak"], labels=labeled["label"], unlabeled=unlabeled_views, labeled_strong=labeled_views
    )


def train(
    method: Method,
    accelerator: Accelerator,
    labeled_batches: Iterator[dict],
    unlabeled_batches: Iterator[dict] | None,
    total_steps: int,
    validate_every: int,
    validate: Callable[[Method], float],
    log_path: Path,
    gradient_clip: float | None = None,
    show_progress: bool = True,
    description: str = "",
    on_validation: Callable[[int, float], None] | None = None,
) -> TrainingResult:
    """Runs ``total_steps`` optimisation steps and keeps the state with the best validation Dice.

    Model selection sees the validation split only; the test split is not reachable from here.
    """
    specs = method.optimizers()
    optimizers = [spec.optimizer for spec in specs]
    schedulers = [
        torch.optim.lr_scheduler.LambdaLR(spec.optimizer, lambda step, f=spec.lr_lambda: f(step / total_steps))
        for spec in specs
    ]
    prepared = accelerator.prepare(method, *optimizers, *schedulers)
    model = prepared[0]
    optimizers = list(prepared[1 : 1 + len(optimizers)])
    schedulers = list(prepared[1 + len(optimizers) :])
    unwrapped: Method = accelerator.unwrap_model(model)

    best_dice, best_step, best_state = -math.inf, 0, copy.deepcopy(unwrapped.state_dict())
    started = time.perf_counter()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", newline="") as log_file:
        writer = None
        bar = tqdm(total=total_steps, desc=description, disable=not (show_progress and accelerator.is_main_process),
                   leave=False, dynamic_ncols=True)
        for step in range(total_steps):
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
                if on_validation is not None:
                    on_validation(step + 1, row["val_dice"])
                if row["val_dice"] > best_dice:
                    best_dice, best_step = row["val_dice"], step + 1
                    best_state = {k: v.detach().cpu().clone() for k, v in unwrapped.state_dict().items()}
                bar.set_postfix(loss=f"{row['loss']:.3f}", val_dice=f"{row['val_dice']:.3f}", best=f"{best_dice:.3f}")
            elif step % 10 == 0:
                bar.set_postfix(loss=f"{row['loss']:.3f}", best=f"{best_dice:.3f}" if best_step else "-")
            if writer is None:
                fields = list(row) + (["val_dice"] if "val_dice" not in row else [])
                writer = csv.DictWriter(log_file, fieldnames=fields, extrasaction="ignore")
                writer.writeheader()
            writer.writerow(row)
            if "val_dice" in row:
                log_file.flush()
            bar.update(1)
        bar.close()
    return TrainingResult(best_state, best_dice, best_step, total_steps, time.perf_counter() - started)


def time_steps(
    method: Method,
    accelerator: Accelerator,
    labeled_batches: Iterator[dict],
    unlabeled_batches: Iterator[dict] | None,
    steps: int,
    total_steps: int,
) -> float:
    """Seconds per training step (after one warm-up step), for sweep duration estimates."""
    specs = method.optimizers()
    model = accelerator.prepare(method)
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
