"""The two training streams (labeled, unlabeled) as endless, seeded, full batches."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bench.data.adapter import TrainingSlice
from bench.data.augment import StrongAugmentation, weak_augmentation
from bench.data.resize import resize_slice_pair


class SliceViews(Dataset):
    """Patch-sized slices with the views a method asked for.

    Slices are resized to the patch once, at construction; augmentation then runs at patch size.
    Labels are returned only when ``with_labels`` is set: the unlabeled stream has none to give.
    """

    def __init__(
        self,
        slices: Sequence[TrainingSlice],
        patch_size: tuple[int, int],
        views: Sequence[str],
        with_labels: bool,
        seed: int,
    ) -> None:
        self.images: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        for item in slices:
            image, label = resize_slice_pair(item.image, item.label, patch_size)
            self.images.append(image)
            self.labels.append(label)
        self.views = tuple(views)
        self.with_labels = with_labels
        self.strong = StrongAugmentation()
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        label = self.labels[index] if self.with_labels else None
        weak, label = weak_augmentation(self.images[index], label, self.rng)
        sample = {"weak": torch.from_numpy(weak)[None]}
        for view in self.views:
            if view != "weak":
                sample[view] = torch.from_numpy(self.strong(weak, self.rng))[None]
        if label is not None:
            sample["label"] = torch.from_numpy(label.astype(np.int64))
        return sample


class EndlessShuffle(Sampler[int]):
    """Concatenated seeded permutations, so every batch is full even when the labeled set is smaller
    than a batch (one labeled synthetic case has fewer slices than a batch)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[int]:
        while True:
            yield from torch.randperm(self.size, generator=self.generator).tolist()


def _reseed_worker(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    info.dataset.rng = np.random.default_rng(torch.initial_seed() % 2**32)


def endless_batches(dataset: SliceViews, batch_size: int, seed: int, workers: int = 0) -> Iterator[dict]:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EndlessShuffle(len(dataset), seed),
        num_workers=workers,
        worker_init_fn=_reseed_worker if workers else None,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=bool(workers),
    )
    return iter(loader)
