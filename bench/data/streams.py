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
    Items are addressed by ``draw * len + index`` (see ``EndlessShuffle``): the augmentation of the
    ``draw``-th sample is a pure function of ``(seed, draw)``, so a resumed run or a different number
    of loader workers sees exactly the same batches.

    Every sample also carries ``index`` (its slice's position in this set, the same under every
    augmentation) and ``geometry`` (what the weak augmentation did, ``bench.geometry``); the ``plain``
    view is the un-augmented patch.  None of them draws from the generator, so asking for them does
    not change the other views.
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
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, code: int) -> dict[str, torch.Tensor]:
        draw, index = divmod(int(code), len(self.images))
        rng = np.random.default_rng((self.seed, draw))
        label = self.labels[index] if self.with_labels else None
        weak, label, geometry = weak_augmentation(self.images[index], label, rng)
        sample = {"weak": torch.from_numpy(weak)[None], "index": torch.tensor(index), "geometry": geometry.as_tensor()}
        for view in self.views:
            if view == "plain":
                sample[view] = torch.from_numpy(np.ascontiguousarray(self.images[index], dtype=np.float32))[None]
            elif view != "weak":
                sample[view] = torch.from_numpy(self.strong(weak, rng))[None]
        if label is not None:
            sample["label"] = torch.from_numpy(label.astype(np.int64))
        return sample


class EndlessShuffle(Sampler[int]):
    """Concatenated seeded permutations, so every batch is full even when the labeled set is smaller
    than a batch.  Permutation ``k`` depends only on ``(seed, k)``, so the stream can start at any
    sample number (resume) without replaying the ones before."""

    def __init__(self, size: int, seed: int, start_sample: int = 0) -> None:
        if size == 0:
            raise ValueError("no training slices in this stream (empty labeled or unlabeled set)")
        self.size = size
        self.seed = seed
        self.start_sample = start_sample

    def __iter__(self) -> Iterator[int]:
        sample = self.start_sample
        while True:
            epoch, position = divmod(sample, self.size)
            order = np.random.default_rng((self.seed, epoch)).permutation(self.size)
            for index in order[position:]:
                yield sample * self.size + int(index)
                sample += 1


def endless_batches(
    dataset: SliceViews, batch_size: int, seed: int, start_step: int = 0, workers: int = 0
) -> Iterator[dict]:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EndlessShuffle(len(dataset), seed, start_sample=start_step * batch_size),
        num_workers=workers,
        persistent_workers=bool(workers),
    )
    return iter(loader)
