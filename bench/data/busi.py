"""The ``busi`` dataset adapter: Breast Ultrasound Images (Al-Dhabyani et al., Data in Brief 28, 2020).

Layout (the Kaggle ``Dataset_BUSI_with_GT`` one)::

    <root>/Dataset_BUSI_with_GT/{benign,malignant}/<class> (N).png          the image
    <root>/Dataset_BUSI_with_GT/{benign,malignant}/<class> (N)_mask.png     its lesion mask
    <root>/Dataset_BUSI_with_GT/{benign,malignant}/<class> (N)_mask_1.png   more lesions of the same image

Protocol (CPC-SAM §4 "Datasets", InteractMatch §4.1): benign and malignant images only (``normal`` has
no lesion to segment; option ``include_normal=true`` adds it as a third stratum), each image one case,
split at random per class into 431 / 86 / 130 train / val / test of 647.  The papers do not publish
their split, so ours is a seeded shuffle per class (``split_seed``, default 0) with the papers'
proportions, which on the 437 benign + 210 malignant images gives exactly

    benign     291 / 58 / 88
    malignant  140 / 28 / 42      (431 / 86 / 130 in all)

Labels: every ``_mask*.png`` of an image is OR-merged and any value > 0 is lesion (class 1).  Images:
the 15 RGB ones become grey by luma (ITU-R 601-2), all are scaled by /255; they keep their native size
(the evaluator resizes to the patch and back), and HD95/ASD are in pixels, since BUSI publishes no pixel
spacing (CPC-SAM Table 1 reports pixels too); results name that unit ``voxel``, as for every case without spacing.  The class folder is the case's ``domain``: SynFoC (§4.1)
treats benign and malignant as two domains of its mixed-domain setting.  (SynFoC itself splits each
domain 4:1 train/test with no validation split; this adapter keeps the CPC-SAM split, which has one.)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bench.data.adapter import DatasetAdapter, TrainingSlice
from bench.data.cache import cached_training_slices
from bench.data.case import Case
from bench.data.folder import (
    grey_pixels,
    natural_key,
    open_picture,
    resolve_root,
    split_digest,
    stratified_split,
    decoded,
    unit_range,
)
from bench.data.options import check_options, option_bool, option_int

TUMOUR_CLASSES = ("benign", "malignant")
# CPC-SAM §4 and InteractMatch §4.1: 431 / 86 / 130 train / val / test images of 647.
PAPER_SPLIT_COUNTS = {"train": 431, "val": 86, "test": 130}
MASK_NAME = re.compile(r"^(?P<image>.+)_mask(?:_(?P<extra>\d+))?$")


@dataclass(frozen=True)
class BUSIImage:
    case_id: str
    image: Path
    masks: tuple[Path, ...]
    category: str


def index_category(folder: Path, category: str) -> list[BUSIImage]:
    """Every image of one class folder with its masks; an image without a mask (or a mask without an
    image) is an error naming the file."""
    images: dict[str, Path] = {}
    masks: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*.png")):
        match = MASK_NAME.match(path.stem)
        if match:
            masks.setdefault(match.group("image"), []).append(path)
        else:
            images[path.stem] = path
    if not images:
        raise ValueError(f"{folder}: no BUSI images (<class> (N).png) found")
    orphan_masks = sorted(set(masks) - set(images), key=natural_key)
    if orphan_masks:
        raise ValueError(f"{masks[orphan_masks[0]][0]}: mask without an image ({folder / (orphan_masks[0] + '.png')} "
                         f"is missing); {len(orphan_masks)} such mask(s) in {folder}")
    unmasked = sorted(set(images) - set(masks), key=natural_key)
    if unmasked:
        raise ValueError(f"{images[unmasked[0]]}: image without a mask ({unmasked[0]}_mask.png is missing); "
                         f"{len(unmasked)} such image(s) in {folder}")
    return [BUSIImage(stem, images[stem], tuple(sorted(masks[stem], key=lambda p: natural_key(p.stem))), category)
            for stem in sorted(images, key=natural_key)]


def load_busi_case(entry: BUSIImage, split: str) -> Case:
    with open_picture(entry.image) as picture:
        image = unit_range(grey_pixels(decoded(picture, entry.image)))
    lesion = np.zeros(image.shape, dtype=bool)
    for mask_path in entry.masks:
        with open_picture(mask_path) as picture:
            mask = grey_pixels(decoded(picture, mask_path))
        if mask.shape != image.shape:
            raise ValueError(f"{mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {entry.image} is "
                             f"{image.shape[1]}x{image.shape[0]}")
        lesion |= mask > 0
    return Case(entry.case_id, image, lesion.astype(np.uint8), split, entry.category, None,
                {"image_file": str(entry.image), "mask_files": [str(path) for path in entry.masks]},
                source=str(entry.image))


class BUSIDataset(DatasetAdapter):
    """BUSI benign + malignant lesions; see the module docstring for the protocol."""

    name = "busi"
    description = ("BUSI breast ultrasound lesions (benign + malignant as two domains), 431/86/130 train/val/test "
                   "images split per class (CPC-SAM); native sizes, distances in voxels (one image pixel: BUSI "
                   "records no spacing)")
    class_names = ("lesion",)
    # CPC-SAM Table 1 / InteractMatch Table 2: 10 and 20 labeled images of 431.
    default_labels = ("10", "20")
    default_label_selection = "random"
    # The global quick budget (128x128 patch) already suits BUSI's ~500x450 images; nothing to override.
    budget_overrides: dict[str, dict[str, Any]] = {}
    OPTIONS = ("include_normal", "split_seed")

    def __init__(self, data_root: Path | None = None, **options: Any) -> None:
        super().__init__(data_root, **options)
        check_options(self.name, options, self.OPTIONS)
        root = resolve_root(data_root, self.name)
        self.include_normal = option_bool("include_normal", options.get("include_normal", False))
        self.split_seed = option_int("split_seed", options.get("split_seed", 0))
        self.categories = TUMOUR_CLASSES + (("normal",) if self.include_normal else ())
        self.image_root = self._find_image_root(root)
        self.data_root = root
        entries = [entry for category in self.categories
                   for entry in index_category(self.image_root / category, category)]
        self.entries = {entry.case_id: entry for entry in entries}
        by_category: dict[str, list[str]] = {}
        for entry in entries:
            by_category.setdefault(entry.category, []).append(entry.case_id)
        total = sum(PAPER_SPLIT_COUNTS.values())
        fractions = {split: count / total for split, count in PAPER_SPLIT_COUNTS.items()}
        self.split = stratified_split(by_category, fractions, self.split_seed)

    def _find_image_root(self, root: Path) -> Path:
        """``root`` may be the download folder or ``Dataset_BUSI_with_GT`` itself."""
        for candidate in (root / "Dataset_BUSI_with_GT", root):
            if all((candidate / category).is_dir() for category in self.categories):
                return candidate
        wanted = "{" + ",".join(self.categories) + "}"
        raise FileNotFoundError(f"dataset 'busi': class folders not found; looked for {root / 'Dataset_BUSI_with_GT'}/"
                                f"{wanted} and {root}/{wanted}")

    def train_case_ids(self) -> list[str]:
        return list(self.split["train"])

    def train_slices(self, patch_size: tuple[int, int] | None = None) -> list[TrainingSlice]:
        """Decoded once into the Arrow cache, resized to the patch when given (431 native-size float
        images are ~0.5 GB; at 128x128 they are 28 MB)."""
        entries = [self.entries[case_id] for case_id in self.split["train"]]

        def decode() -> list[TrainingSlice]:
            slices = []
            for entry in entries:
                case = load_busi_case(entry, "train")
                slices.append(TrainingSlice(case.case_id, case.image[0], case.label[0], case.domain, case.source))
            return slices

        sources = [path for entry in entries for path in (entry.image, *entry.masks)]
        key = {"dataset": self.name, "reader": "busi-1", "split_digest": split_digest(self.split)}
        return cached_training_slices(key, sources, decode, patch_size)

    def eval_cases(self, split: str) -> Iterator[Case]:
        if split not in ("val", "test"):
            raise ValueError(f"split {split!r}: expected 'val' or 'test'")
        return (load_busi_case(self.entries[case_id], split) for case_id in self.split[split])

    def case_domains(self) -> dict[str, str]:
        return {case_id: self.entries[case_id].category for case_id in self.split["train"]}

    def split_counts(self) -> dict[str, dict[str, int]]:
        """Cases per (class, split): the numbers the module docstring promises."""
        return {category: {split: sum(self.entries[case_id].category == category for case_id in ids)
                           for split, ids in self.split.items()}
                for category in self.categories}

    def protocol(self) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "data_root": str(self.data_root),
            "classes": list(self.categories),
            "split": f"seeded shuffle per class (seed {self.split_seed}) in the CPC-SAM proportions 431/86/130",
            "split_counts": self.split_counts(),
            "split_digest": split_digest(self.split),
            "labels": "all _mask*.png OR-merged, > 0 = lesion",
            "image": "grey (RGB by ITU-R 601-2 luma) / 255, native size",
            "distance_unit": "pixel",
        }
