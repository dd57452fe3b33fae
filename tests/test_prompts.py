"""Prompts from masks (bench.prompts) on hand-made label maps: which component, which point, which box."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.prompts import (
    center_point,
    jitter_boxes,
    largest_component,
    mask_prompt_logits,
    prompts_from_labels,
    random_point,
    tight_box,
)


def brute_force_center(component: np.ndarray) -> tuple[int, int]:
    """Independent definition: the component pixels whose nearest non-component pixel (the image is
    surrounded by non-component pixels) is farthest away; among them the one nearest their mean,
    then the first in row-major order."""
    height, width = component.shape
    padded = np.zeros((height + 2, width + 2), dtype=bool)
    padded[1:-1, 1:-1] = component
    outside = np.argwhere(~padded)
    pixels = np.argwhere(component)
    distances = np.array([np.sqrt(((outside - (row + 1, column + 1)) ** 2).sum(axis=1)).min() for row, column in pixels])
    tied = pixels[np.isclose(distances, distances.max())]
    middle = tied.mean(axis=0)
    row, column = min(tied.tolist(), key=lambda pixel: (round(float(((pixel - middle) ** 2).sum()), 9), pixel[0], pixel[1]))
    return int(column), int(row)


def two_components_and_a_ring() -> torch.Tensor:
    """Class 1: a 5-row x 9-column bar (the larger) and a 2x2 island; class 2: a ring with a hole;
    class 3: absent."""
    label_map = np.zeros((24, 32), dtype=np.int64)
    label_map[2:7, 3:12] = 1            # rows 2-6, columns 3-11: 45 pixels
    label_map[20:22, 28:30] = 1         # 4 pixels, far away
    label_map[10:21, 14:25] = 2         # 11 x 11 square ...
    label_map[13:18, 17:22] = 0         # ... with a 5 x 5 hole
    return torch.from_numpy(label_map)[None]


def test_largest_component_keeps_only_the_bigger_region():
    labels = two_components_and_a_ring()[0].numpy()
    component = largest_component(labels == 1)
    assert component.sum() == 45
    assert component[2:7, 3:12].all() and not component[20:22, 28:30].any()


def test_diagonal_neighbours_connect():
    mask = np.zeros((5, 5), dtype=bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True
    mask[4, 0] = True
    assert largest_component(mask).sum() == 3


def test_center_of_a_bar_is_its_middle_pixel_in_x_y_order():
    labels = two_components_and_a_ring()
    prompts = prompts_from_labels(labels, num_classes=4)
    # bar rows 2..6, columns 3..11: middle row 4, middle column 7 -> (x, y) = (7, 4)
    assert prompts.center_points[0, 1].tolist() == [7.0, 4.0]
    assert prompts.boxes[0, 1].tolist() == [3.0, 2.0, 11.0, 6.0]


def test_center_of_a_ring_lies_on_the_ring_not_in_its_hole():
    labels = two_components_and_a_ring()
    ring = labels[0].numpy() == 2
    x, y = center_point(largest_component(ring))
    assert ring[y, x]
    assert (x, y) == brute_force_center(ring)


@pytest.mark.parametrize("seed", range(5))
def test_center_point_matches_brute_force_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((12, 15)) < 0.6
    component = largest_component(mask)
    assert center_point(component) == brute_force_center(component)


def test_absent_class_is_not_prompted():
    prompts = prompts_from_labels(two_components_and_a_ring(), num_classes=4)
    assert prompts.valid[0].tolist() == [True, True, True, False]
    assert prompts.center_points[0, 3].tolist() == [0.0, 0.0]
    assert prompts.point_labels()[0].tolist() == [0, 1, 2, -1]
    assert prompts.frame_size == (24, 32)


def test_prompts_are_per_image_in_a_batch():
    first = two_components_and_a_ring()
    second = torch.zeros_like(first)
    second[0, 0:3, 0:4] = 3
    prompts = prompts_from_labels(torch.cat([first, second]), num_classes=4)
    assert prompts.valid.tolist() == [[True, True, True, False], [True, False, False, True]]
    assert prompts.boxes[1, 3].tolist() == [0.0, 0.0, 3.0, 2.0]


def test_random_point_is_inside_and_seeded():
    ring = two_components_and_a_ring()[0].numpy() == 2
    draws = [random_point(ring, torch.Generator().manual_seed(seed)) for seed in range(20)]
    assert all(ring[y, x] for x, y in draws)
    assert random_point(ring, torch.Generator().manual_seed(3)) == draws[3]
    assert len(set(draws)) > 5


def test_tight_box_bounds_the_component():
    mask = np.zeros((10, 20), dtype=bool)
    mask[3, 15] = mask[7, 2] = True
    assert tight_box(mask) == (2, 3, 15, 7)


def test_jittered_box_always_encloses_the_component():
    boxes = torch.tensor([[3.0, 2.0, 11.0, 6.0], [14.0, 10.0, 24.0, 20.0], [0.0, 0.0, 0.0, 0.0]])
    offset = 0.2
    for seed in range(300):
        jittered = jitter_boxes(boxes, offset, (24, 32), torch.Generator().manual_seed(seed))
        assert (jittered[:, :2] <= boxes[:, :2]).all() and (jittered[:, 2:] >= boxes[:, 2:]).all()
        assert (jittered >= 0).all() and (jittered[:, [0, 2]] <= 31).all() and (jittered[:, [1, 3]] <= 23).all()
        extent = boxes[:, 2:] - boxes[:, :2] + 1
        assert ((jittered[:, 2:] - jittered[:, :2] + 1) <= extent * (1 + 2 * offset) + 1e-5).all()


def test_jitter_moves_boxes_and_zero_offset_does_not():
    boxes = torch.tensor([[8.0, 8.0, 15.0, 15.0]])
    moved = jitter_boxes(boxes, 0.25, (32, 32), torch.Generator().manual_seed(0))
    assert not torch.equal(moved, boxes)
    assert torch.equal(jitter_boxes(boxes, 0.0, (32, 32), torch.Generator().manual_seed(0)), boxes)


def test_mask_prompt_logits_invert_the_sigmoid():
    probabilities = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0])
    logits = mask_prompt_logits(probabilities, eps=1e-3)
    assert torch.allclose(torch.sigmoid(logits), probabilities.clamp(1e-3, 1 - 1e-3), atol=1e-6)
    assert logits[2] == 0
