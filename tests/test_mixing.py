"""The shared mixing pieces: CutMix boxes, BCP's copy-paste mask, one-mask mixing, pseudo-labels,
confidence-masked Dice and largest-component filtering."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import (
    PseudoLabels,
    batch_partner,
    confidence_mask,
    confident_dice_loss,
    copy_paste_mask,
    cutmix_boxes,
    cutmix_from_partner,
    largest_component_per_class,
    mix_by_mask,
)


def box_extent(mask: torch.Tensor) -> tuple[int, int] | None:
    """(height, width) of the mask's single filled rectangle, None when empty; fails otherwise."""
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    if len(rows) == 0:
        return None
    height = int(rows.max() - rows.min() + 1)
    width = int(cols.max() - cols.min() + 1)
    assert int(mask.sum()) == height * width, "the mask is not one filled rectangle"
    return height, width


def reference_masked_dice(probs: torch.Tensor, target: torch.Tensor, keep: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """SSL4MIS Dice computed on the kept pixels only, by indexing rather than weighting."""
    losses = []
    for class_index in range(probs.shape[1]):
        class_probs = probs[:, class_index][keep]
        class_target = (target[keep] == class_index).float()
        intersection = (class_probs * class_target).sum()
        denominator = (class_probs**2).sum() + (class_target**2).sum()
        losses.append(1 - (2 * intersection + smooth) / (denominator + smooth))
    return torch.stack(losses).mean()


def test_cutmix_boxes_follow_unimatch_distribution():
    generator = torch.Generator().manual_seed(0)
    boxes = cutmix_boxes(400, 32, 32, generator=generator)
    assert boxes.shape == (400, 32, 32)
    assert set(boxes.unique().tolist()) <= {0.0, 1.0}
    extents = [box_extent(box) for box in boxes]
    with_box = [extent for extent in extents if extent is not None]
    assert 0.4 < len(with_box) / len(extents) < 0.6  # p = 0.5
    for height, width in with_box:
        area = height * width / (32 * 32)
        assert area <= 0.4 + 1e-9
        assert area >= 0.02 * 0.5  # int() truncation of each side can lose up to ~half of a tiny box
        assert 0.3 * 0.5 <= height / width <= (1 / 0.3) * 2
    # a wide spread of sizes, not one fixed box
    assert len({extent for extent in with_box}) > 20


def test_cutmix_boxes_probability_extremes_and_seeding():
    assert cutmix_boxes(16, 32, 32, probability=0.0).sum() == 0
    always = cutmix_boxes(16, 32, 32, probability=1.0)
    assert all(box.sum() > 0 for box in always)
    first = cutmix_boxes(8, 32, 48, generator=torch.Generator().manual_seed(3))
    second = cutmix_boxes(8, 32, 48, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second)
    with pytest.raises(ValueError, match="probability"):
        cutmix_boxes(2, 8, 8, probability=1.5)


@pytest.mark.parametrize("height, width", [(32, 32), (30, 48)])
def test_copy_paste_mask_has_one_zero_box_of_two_thirds(height, width):
    corners = set()
    for seed in range(30):
        mask = copy_paste_mask(height, width, generator=torch.Generator().manual_seed(seed))
        assert mask.shape == (height, width)
        assert set(mask.unique().tolist()) == {0.0, 1.0}
        zero_box = mask == 0
        assert box_extent(zero_box) == (int(height * 2 / 3), int(width * 2 / 3))
        rows = torch.nonzero(zero_box.any(dim=1)).flatten()
        cols = torch.nonzero(zero_box.any(dim=0)).flatten()
        corners.add((int(rows.min()), int(cols.min())))
    assert len(corners) > 5  # the box moves


def test_mix_by_mask_is_the_mask_equation_for_images_and_labels():
    generator = torch.Generator().manual_seed(1)
    first = torch.rand(3, 2, 8, 8, generator=generator)
    second = torch.rand(3, 2, 8, 8, generator=generator)
    shared_mask = (torch.rand(8, 8, generator=generator) > 0.5).float()
    per_sample_mask = (torch.rand(3, 8, 8, generator=generator) > 0.5).float()
    expected = shared_mask * first + (1 - shared_mask) * second
    assert torch.allclose(mix_by_mask(shared_mask, first, second), expected)
    expected = per_sample_mask[:, None] * first + (1 - per_sample_mask[:, None]) * second
    assert torch.allclose(mix_by_mask(per_sample_mask, first, second), expected)

    labels_one = torch.randint(0, 4, (3, 8, 8), generator=generator)
    labels_zero = torch.randint(0, 4, (3, 8, 8), generator=generator)
    mixed = mix_by_mask(shared_mask, labels_one, labels_zero)
    assert mixed.dtype == torch.long
    assert torch.equal(mixed[:, shared_mask == 1], labels_one[:, shared_mask == 1])
    assert torch.equal(mixed[:, shared_mask == 0], labels_zero[:, shared_mask == 0])
    with pytest.raises(ValueError, match="shapes differ"):
        mix_by_mask(shared_mask, first, second[:2])


def test_pseudo_labels_and_confidence_mask():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]], [[0.0, 3.0]]]], requires_grad=True)  # [1, 3, 1, 2]
    targets = PseudoLabels.from_logits(logits)
    probs = torch.softmax(logits.detach(), dim=1)
    assert torch.equal(targets.labels, torch.tensor([[[0, 2]]]))
    assert torch.allclose(targets.confidence, probs.max(dim=1).values)
    assert not targets.confidence.requires_grad
    threshold = float(targets.confidence[0, 0, 0])
    assert torch.equal(confidence_mask(targets.confidence, threshold), torch.tensor([[[1.0, 1.0]]]))
    assert torch.equal(targets.confident(threshold + 1e-4), (targets.confidence >= threshold + 1e-4).float())


def test_cutmix_from_partner_takes_image_label_and_confidence_of_the_previous_sample_inside_the_box():
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(3, 1, 8, 8, generator=generator)
    targets = PseudoLabels(torch.randint(0, 3, (3, 8, 8), generator=generator), torch.rand(3, 8, 8, generator=generator))
    box = torch.zeros(3, 8, 8)
    box[0, 2:5, 1:7] = 1
    box[2, :, :4] = 1
    mixed_images, mixed_targets = cutmix_from_partner(box, images, targets)
    for sample in range(3):
        partner = (sample - 1) % 3
        inside = box[sample] == 1
        assert torch.equal(mixed_images[sample, 0][inside], images[partner, 0][inside])
        assert torch.equal(mixed_images[sample, 0][~inside], images[sample, 0][~inside])
        assert torch.equal(mixed_targets.labels[sample][inside], targets.labels[partner][inside])
        assert torch.equal(mixed_targets.labels[sample][~inside], targets.labels[sample][~inside])
        assert torch.equal(mixed_targets.confidence[sample][inside], targets.confidence[partner][inside])
    assert torch.equal(batch_partner(torch.arange(3)), torch.tensor([2, 0, 1]))


def test_confident_dice_ignores_unconfident_pixels():
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 6, 6, generator=generator, requires_grad=True)
    targets = PseudoLabels(torch.randint(0, 3, (2, 6, 6), generator=generator), torch.rand(2, 6, 6, generator=generator))
    threshold = 0.5
    keep = targets.confidence >= threshold
    assert 0 < keep.sum() < keep.numel()
    loss = confident_dice_loss(logits, targets, threshold)
    expected = reference_masked_dice(torch.softmax(logits, dim=1), targets.labels, keep)
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    pixel_gradient = logits.grad.abs().sum(dim=1)
    assert torch.all(pixel_gradient[~keep] == 0)
    assert torch.all(pixel_gradient[keep] > 0)


@pytest.mark.parametrize("num_classes", [2, 4])
def test_confident_dice_without_confident_foreground_sits_at_c_minus_one_over_c_and_only_lowers_foreground(num_classes):
    """The premise of ``benchmarks/unlabeled_loss_plateau.py``: pseudo-labels that are background on
    every confident pixel, against a strong view that is confident background with some foreground
    mass left, put the loss at (C-1)/C, and descending it lowers every foreground logit there."""
    generator = torch.Generator().manual_seed(5)
    strong_logits = torch.randn(4, num_classes, 16, 16, generator=generator)
    strong_logits[:, 0] += 6.0  # confident background, yet summed squared foreground mass >> 1e-5
    strong_logits.requires_grad_(True)
    labels = torch.zeros(4, 16, 16, dtype=torch.long)
    labels[:, :4, :4] = 1  # foreground pseudo-labels, all below the threshold
    confidence = torch.where(labels == 0, 0.99, 0.5)
    loss = confident_dice_loss(strong_logits, PseudoLabels(labels, confidence), threshold=0.95)
    assert float(loss) == pytest.approx((num_classes - 1) / num_classes, abs=2e-3)
    loss.backward()
    confident = confidence >= 0.95
    foreground_gradient = strong_logits.grad[:, 1:].permute(1, 0, 2, 3)[:, confident]
    assert torch.all(foreground_gradient > 0)


def test_largest_component_keeps_exactly_the_largest_blob_per_class():
    label_map = np.zeros((10, 10), dtype=np.int64)
    label_map[0:2, 0:3] = 1  # class 1, 6 pixels: kept
    label_map[5, 5] = 1  # class 1, 1 pixel: removed
    label_map[8:10, 8:10] = 1  # class 1, 4 pixels: removed
    label_map[0, 6] = 2  # class 2: three pixels joined diagonally form one 3-pixel blob: kept
    label_map[1, 7] = 2
    label_map[2, 8] = 2
    label_map[6:8, 0] = 2  # class 2, 2 pixels: removed
    expected = np.zeros_like(label_map)
    expected[0:2, 0:3] = 1
    expected[0, 6] = expected[1, 7] = expected[2, 8] = 2
    second = np.zeros((10, 10), dtype=np.int64)
    second[3:5, 3:5] = 2  # class 2 tie (4 vs 4): the first in raster order is kept; class 1 absent
    second[7:9, 6:8] = 2
    second_expected = np.zeros_like(second)
    second_expected[3:5, 3:5] = 2
    labels = torch.from_numpy(np.stack([label_map, second]))
    filtered = largest_component_per_class(labels, num_classes=4)
    assert filtered.dtype == labels.dtype
    assert np.array_equal(filtered.numpy(), np.stack([expected, second_expected]))
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        largest_component_per_class(labels[0], num_classes=4)
