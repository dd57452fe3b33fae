"""SAM prompts from label maps: the shared "prompt generation from masks" of every SAM method.

Every SAM-based method turns a (predicted or ground-truth) label map into prompts the same way, so
the way lives here once:

* the **largest connected component** of each class (8-connectivity, CPC-SAM
  ``prompt_generate_random_fast``: ``skimage.measure.label(..., connectivity=2)``) is the region of
  interest, which drops the small noisy islands of a coarse prediction (CPC-SAM §2.2, InteractMatch
  §3.2 "determined prompting");
* its **centre point**: the interior pixel farthest from the component's boundary, by a Euclidean
  distance transform of the component padded with one background pixel (so the image border counts
  as boundary, as CPC-SAM pads before ``cv2.distanceTransform``).  Unlike the centroid it always
  lies inside the component, also for rings (the myocardium) and concave shapes.  Ties (the whole
  middle line of an elongated shape) go to the tied pixel nearest the tied pixels' mean, then to the
  first in row-major order: CPC-SAM samples among ties at random, but a deterministic middle keeps
  ground-truth prompted evaluation reproducible and central;
* a **random interior point** of the component (CPC-SAM's random prompt, InteractMatch's ambiguous
  point), drawn with a seedable ``torch.Generator``;
* the **tight box** of the component and a **jittered box** that is enlarged and shifted at random
  but always encloses the component (InteractMatch §3.2 "ambiguous prompting", §4.5 "size and offset
  of the box");
* **mask prompts**: probabilities turned into the logits SAM's mask input expects.

Coordinate convention (SAM's): a point is ``(x, y)`` = ``(column, row)`` in pixels of the label map
it came from, a box is ``(x0, y0, x1, y1)`` with inclusive pixel coordinates of the top-left and
bottom-right pixels.  The label map's ``(H, W)`` travels with the prompts as ``frame_size``;
``bench.sam.AdaptedSAM`` maps them into its own input frame.

A class with no foreground pixel in an image gets no prompt: its entry in ``valid`` is ``False`` and
its coordinates are zeros that no consumer may read as a location.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

EIGHT_CONNECTIVITY = np.ones((3, 3), dtype=bool)


@dataclass
class ClassPrompts:
    """Prompts for every image and class of a batch of label maps ``[B, H, W]``.

    ``center_points`` and ``random_points`` are ``[B, C, 2]`` ``(x, y)``, ``boxes`` ``[B, C, 4]``
    ``(x0, y0, x1, y1)``, ``valid`` ``[B, C]`` (False where the class is absent), all on the label
    map's device; ``frame_size`` is the label map's ``(H, W)``.  Class 0 (background) is included:
    CPC-SAM prompts the background too; methods that do not simply slice it off.
    """

    center_points: torch.Tensor
    random_points: torch.Tensor
    boxes: torch.Tensor
    valid: torch.Tensor
    frame_size: tuple[int, int]

    def point_labels(self) -> torch.Tensor:
        """``[B, C]`` labels for a class-aware prompt encoder: the class id where the class is present,
        ``-1`` (SAM's "not a point") where it is absent."""
        class_ids = torch.arange(self.valid.shape[1], device=self.valid.device).expand_as(self.valid)
        return torch.where(self.valid, class_ids, torch.full_like(class_ids, -1))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean ``[H, W]`` mask (all False if the mask is empty);
    among equally large components, the one whose first pixel comes first in row-major order."""
    components, count = ndimage.label(mask, structure=EIGHT_CONNECTIVITY)
    if count == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(components.ravel())[1:]
    return components == (int(np.argmax(sizes)) + 1)


def center_point(component: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` of the pixel farthest from the component's boundary (image border included)."""
    padded = np.pad(component, 1, mode="constant", constant_values=False)
    distance = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    farthest = np.argwhere(distance == distance.max())
    closest_to_middle = np.argmin(((farthest - farthest.mean(axis=0)) ** 2).sum(axis=1))
    row, column = farthest[closest_to_middle]
    return int(column), int(row)


def random_point(component: np.ndarray, generator: torch.Generator | None = None) -> tuple[int, int]:
    """``(x, y)`` of a pixel drawn uniformly from the component."""
    rows, columns = np.nonzero(component)
    index = int(torch.randint(len(rows), (1,), generator=generator))
    return int(columns[index]), int(rows[index])


def tight_box(component: np.ndarray) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: inclusive pixel bounds of the component."""
    rows, columns = np.nonzero(component)
    return int(columns.min()), int(rows.min()), int(columns.max()), int(rows.max())


def prompts_from_labels(
    labels: torch.Tensor, num_classes: int, generator: torch.Generator | None = None
) -> ClassPrompts:
    """Centre point, random point and tight box of the largest component of every class in every
    label map ``[B, H, W]`` (class 0 included).  Runs on the CPU (connected components and distance
    transforms), as the official CPC-SAM code does; the results come back on ``labels.device``."""
    if labels.dim() != 3:
        raise ValueError(f"labels: expected [B, H, W] class indices, got shape {tuple(labels.shape)}")
    label_maps = labels.detach().cpu().numpy()
    batch = label_maps.shape[0]
    center_points = np.zeros((batch, num_classes, 2), dtype=np.float32)
    random_points = np.zeros((batch, num_classes, 2), dtype=np.float32)
    boxes = np.zeros((batch, num_classes, 4), dtype=np.float32)
    valid = np.zeros((batch, num_classes), dtype=bool)
    for image_index in range(batch):
        for class_id in range(num_classes):
            component = largest_component(label_maps[image_index] == class_id)
            if not component.any():
                continue
            valid[image_index, class_id] = True
            center_points[image_index, class_id] = center_point(component)
            random_points[image_index, class_id] = random_point(component, generator)
            boxes[image_index, class_id] = tight_box(component)
    device = labels.device
    return ClassPrompts(
        center_points=torch.from_numpy(center_points).to(device),
        random_points=torch.from_numpy(random_points).to(device),
        boxes=torch.from_numpy(boxes).to(device),
        valid=torch.from_numpy(valid).to(device),
        frame_size=(int(labels.shape[-2]), int(labels.shape[-1])),
    )


def jitter_boxes(
    boxes: torch.Tensor, offset: float, frame_size: tuple[int, int], generator: torch.Generator | None = None
) -> torch.Tensor:
    """InteractMatch's "enlarged offset box" (§3.2, §4.5): each side moves outward by ``offset`` times
    the box's extent along that axis (an offset of 0.05 scales the box by 1.1), then the whole box is
    shifted by a uniform draw in ``[-offset, offset]`` times the extent.  The shift never exceeds the
    margin, so the box always encloses the original one; it is finally clipped to the frame, which
    the component lies in anyway.  ``boxes`` ``[..., 4]`` ``(x0, y0, x1, y1)`` inclusive pixels."""
    if offset < 0:
        raise ValueError(f"jitter_boxes: offset must be >= 0, got {offset}")
    x0, y0, x1, y1 = boxes.float().unbind(-1)
    margin_x = offset * (x1 - x0 + 1)
    margin_y = offset * (y1 - y0 + 1)
    uniform = torch.rand((*boxes.shape[:-1], 2), generator=generator).to(boxes.device) * 2 - 1
    shift_x, shift_y = uniform[..., 0] * margin_x, uniform[..., 1] * margin_y
    height, width = frame_size
    jittered = torch.stack([
        (x0 - margin_x + shift_x).clamp(0, width - 1),
        (y0 - margin_y + shift_y).clamp(0, height - 1),
        (x1 + margin_x + shift_x).clamp(0, width - 1),
        (y1 + margin_y + shift_y).clamp(0, height - 1),
    ], dim=-1)
    return jittered


def mask_prompt_logits(probabilities: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """SAM's mask prompt is a low-resolution *logit* map (its own previous output); probabilities (or a
    binary mask) become ``logit(clamp(p, eps, 1 - eps))``.  With ``eps = 1e-4`` a hard mask maps to
    about ±9.2, the magnitude of a confident SAM output; ``bench.sam.AdaptedSAM`` resizes the map to its
    mask-input size."""
    clamped = probabilities.float().clamp(eps, 1.0 - eps)
    return torch.log(clamped) - torch.log1p(-clamped)
