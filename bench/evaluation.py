"""Per-case evaluation: predict each case slice by slice at the patch size, bring the prediction back
to the case's own grid, and score it there in 3D (the SSL4MIS protocol)."""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from bench.data.case import Case
from bench.data.resize import resize_image, resize_labels
from bench.metrics import score_case, summarize_case

Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(images [N,C,h,w], labels [N,h,w] at the patch size) -> logits``.  Labels are passed so that
evaluation-only methods marked ``ground-truth-prompts`` can build prompts; every other method's
predictor ignores them (see ``bench.execute.test_predictor``)."""


@torch.no_grad()
def predict_case(
    predict: Predictor,
    case: Case,
    patch_size: tuple[int, int],
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """Label volume ``[D, H, W]``: argmax at the patch size, then nearest-neighbour back to ``H, W``."""
    slices = torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32))[:, None]
    truth = torch.from_numpy(case.label.astype(np.int64))
    original_size = tuple(slices.shape[-2:])
    predictions = []
    for start in range(0, slices.shape[0], batch_size):
        chunk = resize_image(slices[start : start + batch_size], patch_size).to(device)
        chunk_truth = resize_labels(truth[start : start + batch_size], patch_size).to(device)
        logits = predict(chunk, chunk_truth).float()
        labels = logits.argmax(dim=1).cpu()
        predictions.append(resize_labels(labels, original_size))
    return torch.cat(predictions).numpy().astype(np.uint8)


def foreground_dice(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """Mean Dice over foreground classes, an empty prediction scoring 0 (SSL4MIS validation); used
    only for model selection on the validation split, where surface distances are not needed."""
    scores = []
    for cls in range(1, num_classes):
        pred_mask, true_mask = prediction == cls, truth == cls
        denominator = pred_mask.sum() + true_mask.sum()
        if pred_mask.sum() == 0 or denominator == 0:
            scores.append(0.0)
        else:
            scores.append(2.0 * np.logical_and(pred_mask, true_mask).sum() / denominator)
    return float(np.mean(scores))


def evaluation_subset(cases: Iterable[Case], max_cases: int | None, max_slices: int | None) -> Iterator[Case]:
    """The first ``max_cases`` cases, each cut to its middle ``max_slices`` slices (a budget's reduced
    evaluation, e.g. ``smoke``: enough to exercise prediction and scoring, no result)."""
    for index, case in enumerate(cases):
        if max_cases is not None and index >= max_cases:
            return
        if max_slices is not None and case.num_slices > max_slices:
            start = (case.num_slices - max_slices) // 2
            case = dataclasses.replace(case, image=case.image[start:start + max_slices],
                                       label=case.label[start:start + max_slices])
        yield case


def validation_dice(
    predict: Predictor,
    cases: Sequence[Case],
    num_classes: int,
    patch_size: tuple[int, int],
    batch_size: int,
    device: torch.device,
) -> float:
    return float(
        np.mean([
            foreground_dice(predict_case(predict, case, patch_size, batch_size, device), case.label, num_classes)
            for case in cases
        ])
    )


def score_cases(
    predict: Predictor,
    cases: Iterable[Case],
    class_names: Sequence[str],
    patch_size: tuple[int, int],
    batch_size: int,
    device: torch.device,
    policy: str,
    spacing_unit: str = "auto",
    on_case: Callable[[], None] | None = None,
    predictions: dict[str, np.ndarray] | None = None,
) -> list[dict]:
    """One row per case: id, domain, every metric per class and the class means.

    ``predictions``, when given, receives each case's predicted label volume (for qualitative figures).
    ``spacing_unit`` ``voxel`` ignores a known spacing so HD95/ASD are in voxels, as the SSL4MIS tables
    report them; ``auto`` uses millimetres where the case carries a spacing.
    """
    rows = []
    for case in cases:
        prediction = predict_case(predict, case, patch_size, batch_size, device)
        if predictions is not None:
            predictions[case.case_id] = prediction
        spacing = case.spacing if spacing_unit != "voxel" else None
        truth = case.label
        if case.num_slices == 1:
            # medpy would treat a [1, H, W] mask as all surface; a 2D image is scored in 2D.
            prediction, truth = prediction[0], truth[0]
            spacing = tuple(spacing[1:]) if spacing else None
        per_class = score_case(prediction, truth, len(class_names) + 1, spacing, policy)
        row = {"case_id": case.case_id, "domain": case.domain, "distance_unit": "mm" if spacing else "voxel"}
        row.update(summarize_case(per_class, class_names))
        rows.append(row)
        if on_case is not None:
            on_case()
    return rows
