"""The geometric part of the weak augmentation, as a record and as differentiable-free tensor maps.

``bench.data.augment.weak_augmentation`` (SSL4MIS ``RandomGenerator``) changes a slice's geometry in
one of three ways: a quarter-turn rotation followed by a flip, a rotation by a small angle, or nothing.
It returns what it did as a :class:`Geometry`; the unlabeled stream passes it to methods as a
``[B, 3]`` tensor (``Batch.unlabeled_geometry``).  With it, a method can move maps between the
un-augmented frame (the ``plain`` view) and the augmented frame the student sees (the ``weak`` view):

* :func:`apply_geometry` -- plain -> weak, the same transform the loader applied (bilinear for
  images and probabilities, nearest for label maps, as ``weak_augmentation`` uses order 1 / order 0);
* :func:`invert_geometry` -- weak -> plain.

SemiSAM uses the pair to compute SAM's image embedding once per un-augmented slice and reuse it
under every later augmentation of that slice.

The tensor maps reproduce ``numpy.rot90``/``numpy.flip`` exactly and ``scipy.ndimage.rotate(...,
reshape=False, mode="nearest")`` up to floating-point rounding (bilinear) or ties (nearest): a
rotation samples the input at ``c + R (p - c)`` around the centre ``c = ((H - 1) / 2, (W - 1) / 2)``
with scipy's ``R = [[cos a, sin a], [-sin a, cos a]]`` in (row, column) coordinates, and clamps
coordinates outside the image to its border (scipy's ``nearest`` mode).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

NO_FLIP = -1
GEOMETRY_FIELDS = ("quarter_turns", "flip_axis", "angle")
"""Columns of a geometry tensor ``[B, 3]``."""
INTERPOLATIONS = ("bilinear", "nearest")


@dataclass(frozen=True)
class Geometry:
    """What the weak augmentation did to one slice, in the order it did it.

    ``quarter_turns`` -- ``numpy.rot90(image, quarter_turns)``; ``flip_axis`` -- then
    ``numpy.flip(image, axis=flip_axis)`` (``-1``: no flip); ``angle`` -- or instead
    ``scipy.ndimage.rotate(image, angle, reshape=False)`` in degrees (``0``: no rotation).  The
    augmentation never combines a quarter turn with an angle.
    """

    quarter_turns: int = 0
    flip_axis: int = NO_FLIP
    angle: float = 0.0

    def __post_init__(self) -> None:
        if self.angle and (self.quarter_turns or self.flip_axis != NO_FLIP):
            raise ValueError(f"Geometry {self}: a rotation by an angle never follows a quarter turn or flip")
        if self.flip_axis not in (NO_FLIP, 0, 1):
            raise ValueError(f"Geometry.flip_axis must be -1, 0 or 1, got {self.flip_axis}")

    def as_tensor(self) -> torch.Tensor:
        """``[3]`` float32 in the order of ``GEOMETRY_FIELDS``; a batch of them collates to ``[B, 3]``."""
        return torch.tensor([self.quarter_turns, self.flip_axis, self.angle], dtype=torch.float32)

    @classmethod
    def from_tensor(cls, values: torch.Tensor) -> "Geometry":
        quarter_turns, flip_axis, angle = values.tolist()
        return cls(int(quarter_turns), int(flip_axis), float(angle))


def rotate(maps: torch.Tensor, angle: float, interpolation: str = "bilinear") -> torch.Tensor:
    """``scipy.ndimage.rotate(map, angle, reshape=False, mode="nearest")`` of every ``[..., H, W]`` map:
    each output pixel ``p`` takes the input at ``c + R (p - c)`` (module docstring)."""
    height, width = maps.shape[-2:]
    radians = math.radians(angle)
    cosine, sine = math.cos(radians), math.sin(radians)
    rows = torch.arange(height, dtype=torch.float32, device=maps.device)[:, None] - (height - 1) / 2
    columns = torch.arange(width, dtype=torch.float32, device=maps.device)[None, :] - (width - 1) / 2
    source_rows = (height - 1) / 2 + cosine * rows + sine * columns
    source_columns = (width - 1) / 2 - sine * rows + cosine * columns
    # grid_sample's (x, y) in [-1, 1], pixel centres at the ends (align_corners=True).
    grid = torch.stack([2 * source_columns / max(width - 1, 1) - 1, 2 * source_rows / max(height - 1, 1) - 1], dim=-1)
    flat = maps.reshape(1, -1, height, width).float()
    rotated = F.grid_sample(flat, grid[None], mode=interpolation, padding_mode="border", align_corners=True)
    return rotated.reshape(maps.shape).to(maps.dtype)


def _check(maps: torch.Tensor, geometry: torch.Tensor, interpolation: str) -> None:
    if maps.dim() != 4 or geometry.shape != (maps.shape[0], len(GEOMETRY_FIELDS)):
        raise ValueError(
            f"geometry: expected maps [B, C, H, W] and geometry [B, {len(GEOMETRY_FIELDS)}], got "
            f"{tuple(maps.shape)} and {tuple(geometry.shape)}"
        )
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"geometry: interpolation {interpolation!r}, expected one of {INTERPOLATIONS}")
    if maps.shape[-2] != maps.shape[-1] and bool((geometry[:, 0] % 2 == 1).any()):
        raise ValueError(f"geometry: an odd quarter turn changes the shape of non-square maps {tuple(maps.shape[-2:])}")


def apply_geometry(maps: torch.Tensor, geometry: torch.Tensor, interpolation: str = "bilinear") -> torch.Tensor:
    """Maps ``[B, C, H, W]`` in the un-augmented frame -> the augmented frame of each sample's
    ``geometry`` row; ``interpolation`` ``bilinear`` (images, probabilities) or ``nearest`` (labels)."""
    _check(maps, geometry, interpolation)
    transformed = []
    for sample, (quarter_turns, flip_axis, angle) in zip(maps, geometry.tolist()):
        if angle:
            sample = rotate(sample, angle, interpolation)
        else:
            sample = torch.rot90(sample, int(quarter_turns), dims=(-2, -1))
            if int(flip_axis) != NO_FLIP:
                sample = torch.flip(sample, dims=(-2 + int(flip_axis),))
        transformed.append(sample)
    return torch.stack(transformed)


def invert_geometry(maps: torch.Tensor, geometry: torch.Tensor, interpolation: str = "bilinear") -> torch.Tensor:
    """The inverse of :func:`apply_geometry`: augmented frame -> un-augmented frame.  Exact for quarter
    turns and flips; a rotation is undone by the opposite rotation, which cannot restore the corners
    the forward rotation pushed out of the image (they come back as border values)."""
    _check(maps, geometry, interpolation)
    restored = []
    for sample, (quarter_turns, flip_axis, angle) in zip(maps, geometry.tolist()):
        if angle:
            sample = rotate(sample, -angle, interpolation)
        else:
            if int(flip_axis) != NO_FLIP:
                sample = torch.flip(sample, dims=(-2 + int(flip_axis),))
            sample = torch.rot90(sample, -int(quarter_turns), dims=(-2, -1))
        restored.append(sample)
    return torch.stack(restored)
