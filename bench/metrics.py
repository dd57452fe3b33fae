"""Per-case, per-class segmentation metrics (Dice, Jaccard, HD95, ASD) computed with medpy.

Published semi-supervised segmentation codes all score with medpy but disagree on what to do when a
mask is empty, and medpy itself raises there.  Those disagreements move reported numbers by whole
points, so each convention is a named, selectable policy (``EMPTY_POLICIES``) that a results file
can record next to the scores it produced.

Surface metrics follow medpy exactly: the surface of a mask is ``mask XOR binary_erosion(mask)``
with the face-connected structure (``generate_binary_structure(ndim, 1)``, voxels outside the array
count as background), distances are Euclidean in the units of ``spacing`` (voxels when ``None``),
HD95 is the 95th percentile of both directed surface-distance sets pooled, and ASD is medpy's
``asd``: the mean distance from the *prediction's* surface to the truth's, one direction only (not
the symmetric ASSD).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from medpy.metric import binary as _mb

from bench.empty_policies import EMPTY_POLICIES

__all__ = [
    "EMPTY_POLICIES",
    "ClassScores",
    "score_binary",
    "score_case",
    "summarize_case",
]

_SYNFOC_MISSING_DISTANCE = 100.0

# Private medpy helper behind hd95/asd/assd.  Calling it once per direction lets HD95 and ASD share
# their distance transforms (medpy's public functions would compute the pred->truth one twice); the
# public functions are the fallback should a medpy release rename it.
_medpy_surface_distances = getattr(_mb, "__surface_distances", None)


@dataclass(frozen=True)
class ClassScores:
    """Scores of one foreground class in one case.

    The emptiness flags are kept so that aggregate reports can say how many scores came from an
    empty-mask policy rather than from medpy, and so that a different policy can be re-applied
    without re-running inference.
    """

    dice: float
    jaccard: float
    hd95: float
    asd: float
    pred_empty: bool
    truth_empty: bool


def _check_policy(policy: str) -> None:
    if policy not in EMPTY_POLICIES:
        raise ValueError(
            f"unknown empty-mask policy {policy!r}; valid policies: {', '.join(sorted(EMPTY_POLICIES))}"
        )


def _check_inputs(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None) -> tuple[float, ...] | None:
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {truth.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D label map, got {pred.ndim}D array of shape {pred.shape}")
    if spacing is None:
        return None
    spacing_t = tuple(float(s) for s in spacing)
    if len(spacing_t) != pred.ndim:
        raise ValueError(
            f"spacing {spacing_t} has {len(spacing_t)} entries but the masks are {pred.ndim}D "
            f"(shape {pred.shape}); give one spacing per axis, in the same axis order"
        )
    if not all(math.isfinite(s) and s > 0 for s in spacing_t):
        raise ValueError(f"spacing must be positive and finite, got {spacing_t}")
    return spacing_t


def _diagonal(shape: Sequence[int], spacing: Sequence[float] | None) -> float:
    steps = spacing if spacing is not None else (1.0,) * len(shape)
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, steps))))


def _empty_scores(policy: str, pred_empty: bool, truth_empty: bool, shape: Sequence[int],
                  spacing: Sequence[float] | None) -> ClassScores:
    both = pred_empty and truth_empty
    if policy in ("ssl4mis", "zero"):
        values = (0.0, 0.0, 0.0, 0.0)
    elif policy == "strict":
        diag = _diagonal(shape, spacing)
        values = (1.0, 1.0, 0.0, 0.0) if both else (0.0, 0.0, diag, diag)
    elif policy == "synfoc":
        d = _SYNFOC_MISSING_DISTANCE
        values = (1.0, 1.0, 0.0, 0.0) if both else (0.0, 0.0, d, d)
    else:
        values = (math.nan,) * 4
    return ClassScores(*values, pred_empty=pred_empty, truth_empty=truth_empty)


def _crop_to_union(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union.

    Exact for medpy's metrics: every surface voxel lies in the box, and the erosion treats voxels
    outside the array as background, which is what lies outside the box anyway.  The distance
    transforms then run on the organ's neighbourhood instead of the whole volume.
    """
    union = pred | truth
    slices = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        idx = np.flatnonzero(union.any(axis=other))
        slices.append(slice(int(idx[0]), int(idx[-1]) + 1))
    box = tuple(slices)
    return pred[box], truth[box]


def _surface_metrics(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...] | None) -> tuple[float, float]:
    if _medpy_surface_distances is None:
        return (float(_mb.hd95(pred, truth, voxelspacing=spacing)),
                float(_mb.asd(pred, truth, voxelspacing=spacing)))
    pred_to_truth = _medpy_surface_distances(pred, truth, spacing, 1)
    truth_to_pred = _medpy_surface_distances(truth, pred, spacing, 1)
    hd95 = np.percentile(np.hstack((pred_to_truth, truth_to_pred)), 95)
    return float(hd95), float(pred_to_truth.mean())


def score_binary(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None,
                 policy: str = "ssl4mis") -> ClassScores:
    """Score one binary mask (non-zero = foreground) against its ground truth.

    When both masks are non-empty the values are medpy's ``dc``, ``jc``, ``hd95`` and ``asd``
    (ASD in medpy's one-directional sense, prediction surface -> truth surface); otherwise the
    empty-mask ``policy`` decides.  ``spacing`` follows the array's axis order ([D, H, W] for 3D);
    ``None`` gives distances in voxels.

    A 2D image should be passed as a 2D array: medpy treats voxels outside the array as background,
    so in a one-slice [1, H, W] volume every foreground voxel is surface and HD95/ASD change.
    """
    _check_policy(policy)
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    spacing_t = _check_inputs(pred, truth, spacing)
    p = pred != 0
    t = truth != 0
    pred_empty = not p.any()
    truth_empty = not t.any()
    if pred_empty or truth_empty:
        return _empty_scores(policy, pred_empty, truth_empty, p.shape, spacing_t)
    p, t = _crop_to_union(p, t)
    hd95, asd = _surface_metrics(p, t, spacing_t)
    return ClassScores(
        dice=float(_mb.dc(p, t)),
        jaccard=float(_mb.jc(p, t)),
        hd95=hd95,
        asd=asd,
        pred_empty=False,
        truth_empty=False,
    )


def score_case(pred: np.ndarray, truth: np.ndarray, num_classes: int, spacing: Sequence[float] | None,
               policy: str = "ssl4mis") -> dict[int, ClassScores]:
    """Score every foreground class ``1..num_classes-1`` of one case (background is not a result).

    Labels outside ``0..num_classes-1`` raise rather than being silently ignored, since they mean the
    prediction and the dataset disagree on the label set.
    """
    _check_policy(policy)
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    _check_inputs(pred, truth, spacing)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background plus at least one class), got {num_classes}")
    for name, arr in (("prediction", pred), ("ground truth", truth)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(
                f"{name} has labels in [{arr.min()}, {arr.max()}] outside 0..{num_classes - 1} "
                f"(num_classes={num_classes})"
            )
    return {c: score_binary(pred == c, truth == c, spacing, policy) for c in range(1, num_classes)}


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    kept = arr[~np.isnan(arr)]
    return float(kept.mean()) if kept.size else math.nan


def summarize_case(scores: dict[int, ClassScores], class_names: Sequence[str]) -> dict[str, float]:
    """Flatten one case's scores into ``<metric>_<class name>`` columns plus class means.

    The means skip NaN classes (the ``nan`` policy's way of dropping empty masks) and are NaN only
    when every class is; ``empty_pred_<name>`` (0/1) keeps the count of empty predictions visible
    after aggregation, since those rows were scored by policy, not by medpy.
    """
    classes = sorted(scores)
    if len(class_names) != len(classes):
        raise ValueError(
            f"got {len(class_names)} class names {list(class_names)} for {len(classes)} scored classes "
            f"{classes}; class_names excludes background"
        )
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class names must be unique, got {list(class_names)}")
    out: dict[str, float] = {}
    metrics = ("dice", "jaccard", "hd95", "asd")
    for c, name in zip(classes, class_names):
        s = scores[c]
        for m in metrics:
            out[f"{m}_{name}"] = float(getattr(s, m))
        out[f"empty_pred_{name}"] = float(s.pred_empty)
    for m in metrics:
        out[m] = _nanmean([getattr(scores[c], m) for c in classes])
    return out
