"""The unit every dataset adapter yields: one case (a 3D volume or a 2D image) with its metadata."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Case:
    """One patient volume or one 2D image.

    ``image`` is float32 ``[D, H, W]`` in [0, 1] and ``label`` integer ``[D, H, W]`` with values in
    ``0..num_classes-1``; a 2D image is stored with ``D == 1`` so that training (on 2D slices) and
    evaluation (per case, in 3D) treat both the same way.  ``spacing`` is ``(z, y, x)`` in millimetres
    when known, else ``None`` (distances are then reported in voxels).  ``source`` says where the case
    was read from (its file, or its image file when the mask is a separate one), so a data error can
    name it; ``None`` for generated data.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    split: str
    domain: str = "default"
    spacing: tuple[float, float, float] | None = None
    extra: dict = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self) -> None:
        if self.image.ndim == 2:
            self.image = self.image[None]
        if self.label.ndim == 2:
            self.label = self.label[None]
        if self.image.shape != self.label.shape:
            raise ValueError(
                f"case {self.case_id!r}: image shape {self.image.shape} != label shape {self.label.shape}"
            )

    @property
    def num_slices(self) -> int:
        return int(self.image.shape[0])
