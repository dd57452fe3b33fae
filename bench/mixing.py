"""Mixing images with their (pseudo-)labels, and the pseudo-label pieces that go with it.

* CutMix boxes, one per sample (UniMatch ``more-scenarios/medical/dataset/transform.py``,
  ``obtain_cutmix_box``), pasted from a partner image of the same batch (FixMatch, UniMatch).
* BCP's copy-paste mask (Bai et al., CVPR 2023; official ``code/ACDC_BCP_train.py``,
  ``generate_mask``): ones everywhere except a zero-valued box of 2/3 x 2/3 of the patch.
* ``mix_by_mask``: one mask mixes an image and its label alike, ``M * a + (1 - M) * b``.
* Hard pseudo-labels with their confidence, confidence masks, and BCP's largest-connected-component
  filtering of pseudo-labels.

Every random draw goes through ``torch`` (optionally a given ``torch.Generator``), so the harness's
seed fixes every box and mask of a run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from bench.losses import dice_loss
from bench.prompts import largest_component

CUTMIX_PROBABILITY = 0.5
"""UniMatch ``obtain_cutmix_box(p=0.5)``: half of the strong views get a box."""
CUTMIX_AREA_RANGE = (0.02, 0.4)
"""UniMatch ``size_min=0.02, size_max=0.4``: box area as a fraction of the image."""
CUTMIX_ASPECT_RANGE = (0.3, 1 / 0.3)
"""UniMatch ``ratio_1=0.3, ratio_2=1/0.3``: box aspect ratio (height / width)."""
BCP_PATCH_FRACTION = 2 / 3
"""BCP paper (beta = 2/3) and official ``generate_mask``: the zero box is 2/3 of each side."""


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[0, high)``."""
    return int(torch.randint(high, (), generator=generator))


def cutmix_boxes(
    batch_size: int,
    height: int,
    width: int,
    probability: float = CUTMIX_PROBABILITY,
    area_range: tuple[float, float] = CUTMIX_AREA_RANGE,
    aspect_range: tuple[float, float] = CUTMIX_ASPECT_RANGE,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """One CutMix box per sample, ``[B, H, W]`` float, 1 inside the box.

    UniMatch's ``obtain_cutmix_box``, drawn per sample as its data loader does: with probability
    ``1 - probability`` the mask is empty; otherwise the area is uniform in ``area_range`` (fraction
    of ``H * W``), and aspect ratio and top-left corner are drawn again until the box fits.  Non-square
    patches follow the same rule with height and width kept apart.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"cutmix probability must lie in [0, 1], got {probability}")
    boxes = torch.zeros(batch_size, height, width)
    for sample in range(batch_size):
        if float(torch.rand((), generator=generator)) > probability:
            continue
        area = _uniform(*area_range, generator) * height * width
        while True:
            aspect = _uniform(*aspect_range, generator)
            box_width = int(math.sqrt(area / aspect))
            box_height = int(math.sqrt(area * aspect))
            left = _randint(width, generator)
            top = _randint(height, generator)
            if left + box_width <= width and top + box_height <= height:
                break
        boxes[sample, top : top + box_height, left : left + box_width] = 1.0
    return boxes.to(device) if device is not None else boxes


def copy_paste_mask(
    height: int,
    width: int,
    patch_fraction: float = BCP_PATCH_FRACTION,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """BCP's zero-centred mask ``M`` ``[H, W]`` float: 0 inside one box of
    ``int(H * patch_fraction) x int(W * patch_fraction)`` pixels, 1 elsewhere.

    The official ``generate_mask`` draws one box per batch at a uniformly random position; here the
    top-left corner is uniform over every position where the box fits (the official
    ``np.random.randint(0, H - patch)`` leaves out the last one, a one-pixel difference).
    """
    if not 0.0 < patch_fraction <= 1.0:
        raise ValueError(f"copy-paste patch_fraction must lie in (0, 1], got {patch_fraction}")
    patch_height, patch_width = int(height * patch_fraction), int(width * patch_fraction)
    top = _randint(height - patch_height + 1, generator)
    left = _randint(width - patch_width + 1, generator)
    mask = torch.ones(height, width)
    mask[top : top + patch_height, left : left + patch_width] = 0.0
    return mask.to(device) if device is not None else mask


def mix_by_mask(mask: torch.Tensor, where_one: torch.Tensor, where_zero: torch.Tensor) -> torch.Tensor:
    """``M * where_one + (1 - M) * where_zero`` for a binary mask, for images and labels alike.

    ``mask`` is ``[H, W]`` (one mask for the batch, BCP) or ``[B, H, W]`` (one per sample, CutMix);
    the tensors are images ``[B, C, H, W]`` or label/confidence maps ``[B, H, W]``.  Using one call
    for an image and its label is what keeps a mixed label aligned with its mixed image.
    """
    if where_one.shape != where_zero.shape:
        raise ValueError(f"mix_by_mask: shapes differ, {tuple(where_one.shape)} vs {tuple(where_zero.shape)}")
    if mask.shape[-2:] != where_one.shape[-2:]:
        raise ValueError(f"mix_by_mask: mask {tuple(mask.shape)} does not match tensors {tuple(where_one.shape)}")
    selector = mask.bool()
    if where_one.dim() == 4:
        selector = selector.unsqueeze(-3)
    return torch.where(selector, where_one, where_zero)


def batch_partner(tensor: torch.Tensor) -> torch.Tensor:
    """The CutMix partner of sample ``i`` is sample ``i - 1`` of the same batch (``torch.roll`` by one).

    UniMatch draws the partners from a second unlabeled loader; the harness gives one unlabeled batch,
    and rolling it pairs every image with a different one (for batches of two or more) at no extra
    data cost.
    """
    return torch.roll(tensor, shifts=1, dims=0)


@dataclass(frozen=True)
class PseudoLabels:
    """Hard pseudo-labels ``[B, H, W]`` (argmax) and their confidence (max softmax probability)."""

    labels: torch.Tensor
    confidence: torch.Tensor

    @classmethod
    def from_logits(cls, logits: torch.Tensor) -> "PseudoLabels":
        """Targets carry no gradient (FixMatch and UniMatch detach the weak prediction)."""
        probs = torch.softmax(logits.detach().float(), dim=1)
        confidence, labels = probs.max(dim=1)
        return cls(labels, confidence)

    def confident(self, threshold: float) -> torch.Tensor:
        """Float confidence mask, see :func:`confidence_mask`."""
        return confidence_mask(self.confidence, threshold)

    def mixed(self, mask: torch.Tensor, where_zero: "PseudoLabels") -> "PseudoLabels":
        """Labels and confidences taken from ``self`` where ``mask`` is 1, from ``where_zero`` elsewhere."""
        return PseudoLabels(
            mix_by_mask(mask, self.labels, where_zero.labels),
            mix_by_mask(mask, self.confidence, where_zero.confidence),
        )

    def rolled(self) -> "PseudoLabels":
        """The pseudo-labels of each sample's :func:`batch_partner`."""
        return PseudoLabels(batch_partner(self.labels), batch_partner(self.confidence))


def confidence_mask(confidence: torch.Tensor, threshold: float) -> torch.Tensor:
    """1 where ``confidence >= threshold``, else 0 (FixMatch Eq. 4; UniMatch ignores ``conf < thresh``)."""
    return (confidence >= threshold).to(confidence.dtype if confidence.is_floating_point() else torch.float32)


def confident_dice_loss(logits: torch.Tensor, targets: PseudoLabels, threshold: float) -> torch.Tensor:
    """Dice of ``softmax(logits)`` against hard pseudo-labels over the confident pixels only: the
    unlabeled loss of UniMatch's medical code (``criterion_dice(..., ignore=conf < conf_thresh)``),
    shared by FixMatch and UniMatch here.  Ignored pixels get no gradient."""
    probs = torch.softmax(logits.float(), dim=1)
    return dice_loss(probs, targets.labels, targets.confident(threshold))


def cutmix_from_partner(
    box: torch.Tensor, images: torch.Tensor, targets: PseudoLabels
) -> tuple[torch.Tensor, PseudoLabels]:
    """Paste each sample's partner (:func:`batch_partner`) inside its box, in the images and in the
    targets alike: the mixed target is the partner's pseudo-label and confidence inside the box and
    the sample's own outside (UniMatch ``mask_u_w_cutmixed``, ``conf_u_w_cutmixed``)."""
    mixed_images = mix_by_mask(box, batch_partner(images), images)
    return mixed_images, targets.rolled().mixed(box, targets)


def largest_component_per_class(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Keep, per sample and per foreground class, only the largest connected component; the rest of
    that class becomes background (BCP ``get_ACDC_2DLargestCC``, generalised from ACDC's 3 classes).

    ``labels`` is ``[B, H, W]`` of class indices; class 0 is background and is not filtered.  A class
    absent from a sample stays absent.  Components are 8-connected, the default of the
    ``skimage.measure.label`` BCP uses, and ties keep the first in raster order
    (:func:`bench.prompts.largest_component`, shared with the SAM prompts).
    """
    if labels.dim() != 3:
        raise ValueError(f"largest_component_per_class expects [B, H, W] labels, got {tuple(labels.shape)}")
    label_maps = labels.detach().cpu().numpy()
    filtered = np.zeros_like(label_maps)
    for sample, label_map in enumerate(label_maps):
        for class_index in range(1, num_classes):
            filtered[sample][largest_component(label_map == class_index)] = class_index
    return torch.from_numpy(filtered).to(labels.device)
