"""Losses of the SAM fine-tuning methods written out independently of ``bench``, for tests that recompute
a method's loss from its own outputs (SAMed, CPC-SAM, InteractMatch)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def reference_dice(probs: torch.Tensor, labels: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """SAMed ``utils.DiceLoss`` (TransUNet's): per class 1 - (2 I + s) / (sum p^2 + sum g^2 + s), mean over
    classes, background included."""
    losses = []
    for class_id in range(probs.shape[1]):
        score, target = probs[:, class_id], (labels == class_id).float()
        intersection = (score * target).sum()
        losses.append(1 - (2 * intersection + smooth) / ((score * score).sum() + (target * target).sum() + smooth))
    return torch.stack(losses).mean()


def dice_ce(logits: torch.Tensor, labels: torch.Tensor, dice_weight: float) -> torch.Tensor:
    """``(1 - w) CE + w Dice``: SAMed's 0.2/0.8 supervision (``w = 0.8``), CPC-SAM's 0.5/0.5 bracket."""
    probs = torch.softmax(logits, dim=1)
    return (1 - dice_weight) * F.cross_entropy(logits, labels) + dice_weight * reference_dice(probs, labels)


def half_dice_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return dice_ce(logits, labels, 0.5)


def hard_ensemble(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Argmax of the mean softmax of two prompted outputs: CPC-SAM's and InteractMatch's pseudo-label."""
    return ((torch.softmax(first, dim=1) + torch.softmax(second, dim=1)) / 2).argmax(dim=1)
