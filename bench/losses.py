"""Segmentation losses shared by every method."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss(probs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, smooth: float = 1e-5) -> torch.Tensor:
    """SSL4MIS ``DiceLoss``: ``1 - (2 I + s) / (|P|^2 + |T|^2 + s)`` per class (background included),
    averaged over classes; ``probs`` are softmax probabilities ``[B, C, H, W]``, ``target`` class
    indices ``[B, H, W]``; ``mask`` ``[B, H, W]`` weights pixels (confidence masks)."""
    num_classes = probs.shape[1]
    one_hot = F.one_hot(target.long(), num_classes).permute(0, 3, 1, 2).to(probs.dtype)
    weight = torch.ones_like(target, dtype=probs.dtype) if mask is None else mask.to(probs.dtype)
    weight = weight[:, None]
    intersection = (probs * one_hot * weight).sum(dim=(0, 2, 3))
    denominator = (probs * probs * weight).sum(dim=(0, 2, 3)) + (one_hot * one_hot * weight).sum(dim=(0, 2, 3))
    return (1.0 - (2.0 * intersection + smooth) / (denominator + smooth)).mean()


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel-wise cross-entropy averaged over all pixels, masked pixels contributing zero (FixMatch's
    ``(loss * mask).mean()``, not a mean over the kept pixels only)."""
    losses = F.cross_entropy(logits.float(), target.long(), reduction="none")
    if mask is None:
        return losses.mean()
    return (losses * mask.to(losses.dtype)).mean()


def ce_dice_loss(logits: torch.Tensor, target: torch.Tensor, ce_weight: float = 0.5, dice_weight: float = 0.5) -> torch.Tensor:
    """The SSL4MIS supervised loss: ``0.5 CE + 0.5 Dice``."""
    return ce_weight * masked_cross_entropy(logits, target) + dice_weight * dice_loss(torch.softmax(logits.float(), dim=1), target)
