"""Training-time augmentations: the SSL4MIS geometric one (weak) and UniMatch's photometric one (strong).

The strong view is the weak view plus photometric noise, never an extra geometric change, so a
pseudo-label computed on the weak view is pixel-aligned with the strong view.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bench.geometry import Geometry


@dataclass(frozen=True)
class StrongAugmentation:
    """UniMatch's medical strong view (ColorJitter 0.5/0.5 with p=0.8, Gaussian blur with p=0.5,
    sigma in [0.1, 2.0]) reduced to what a grey-level image has: brightness and contrast."""

    jitter_probability: float = 0.8
    brightness: float = 0.5
    contrast: float = 0.5
    blur_probability: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = image.astype(np.float32, copy=True)
        if rng.random() < self.jitter_probability:
            out = out * rng.uniform(1 - self.brightness, 1 + self.brightness)
            mean = out.mean()
            out = (out - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
        if rng.random() < self.blur_probability:
            out = ndimage.gaussian_filter(out, sigma=rng.uniform(*self.blur_sigma))
        return np.clip(out, 0.0, 1.0).astype(np.float32)


def weak_augmentation(
    image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None, Geometry]:
    """SSL4MIS ``RandomGenerator``: with p=0.5 a random 90-degree rotation and flip, else with p=0.5 a
    rotation in [-20, 20] degrees (order 0 for the label; bilinear for the image).

    Also returns the :class:`~bench.geometry.Geometry` it applied, so that a method can move maps
    between the un-augmented and the augmented frame (``bench.geometry``)."""
    geometry = Geometry()
    if rng.random() > 0.5:
        turns = int(rng.integers(0, 4))
        axis = int(rng.integers(0, 2))
        image = np.flip(np.rot90(image, turns), axis=axis)
        if label is not None:
            label = np.flip(np.rot90(label, turns), axis=axis)
        geometry = Geometry(quarter_turns=turns, flip_axis=axis)
    elif rng.random() > 0.5:
        angle = float(rng.uniform(-20, 20))
        image = ndimage.rotate(image, angle, order=1, reshape=False, mode="nearest")
        if label is not None:
            label = ndimage.rotate(label, angle, order=0, reshape=False, mode="nearest")
        geometry = Geometry(angle=angle)
    image = np.ascontiguousarray(image, dtype=np.float32)
    if label is not None:
        label = np.ascontiguousarray(label)
    return image, label, geometry
