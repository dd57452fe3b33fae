"""Resizing between a case's grid and the network's patch: bilinear for images, nearest for labels."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[N, C, H, W]`` float -> ``[N, C, *size]`` bilinear (no corner alignment, as ``scipy.zoom`` order 1 is close to)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[N, H, W]`` integer -> ``[N, *size]`` nearest neighbour, so no label value is invented."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    resized = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")
    return resized[:, 0].to(labels.dtype)


def resize_slice_pair(
    image: np.ndarray, label: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """One 2D training slice to the patch size, as stored in the training cache."""
    if tuple(image.shape) == tuple(size) and tuple(label.shape) == tuple(size):
        return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(label, dtype=np.uint8)
    image_t = resize_image(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None], size)
    label_t = resize_labels(torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))[None], size)
    return image_t[0, 0].numpy(), label_t[0].numpy().astype(np.uint8)
