"""The ``synthetic`` dataset adapter: cardiac-like phantoms generated in seconds, the default dataset."""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from bench.data.adapter import DatasetAdapter, TrainingSlice
from bench.data.case import Case
from bench.data.synthetic_phantoms import CLASS_NAMES, PhantomConfig, generate_cases


class SyntheticDataset(DatasetAdapter):
    name = "synthetic"
    description = ("procedurally generated cardiac-like short-axis phantoms (RV, MYO, LV), 3 vendor-like domains, "
                   "40/8/16 train/val/test cases of 6 slices at 64x64; no download")
    class_names = CLASS_NAMES
    default_labels = ("1", "4")
    default_label_selection = "random"
    # The quick budget trains on 32x32 patches (the 64x64 phantoms down-sampled; evaluation stays at 64x64):
    # measured on a 2-core CPU this halves every method's step time at the same test Dice, which is what
    # keeps the README quick start (every registered method, 1 labeled case, 3 seeds) near 10 minutes.
    default_size = 64
    budget_overrides = {"quick": {"patch_size": 32, "iterations": 150, "labeled_batch": 4, "unlabeled_batch": 4,
                                  "validate_every": 50}}

    def __init__(self, data_root: Path | None = None, **options: Any) -> None:
        super().__init__(data_root, **options)
        values: dict[str, Any] = {"size": self.default_size}
        for key, value in options.items():
            default = getattr(PhantomConfig, key, None)
            if default is None:
                raise ValueError(f"synthetic dataset: unknown option {key!r}; known: num_train, num_val, num_test, slices, size, seed")
            values[key] = int(value) if isinstance(default, int) else value
        self.config = PhantomConfig(**values)

    @cached_property
    def _cases(self) -> dict[str, list[Case]]:
        by_split: dict[str, list[Case]] = {"train": [], "val": [], "test": []}
        for case in generate_cases(self.config):
            by_split[case.split].append(case)
        return by_split

    def train_case_ids(self) -> list[str]:
        return [case.case_id for case in self._cases["train"]]

    def train_slices(self, patch_size: tuple[int, int] | None = None) -> list[TrainingSlice]:
        return [
            TrainingSlice(case.case_id, case.image[index], case.label[index], case.domain)
            for case in self._cases["train"]
            for index in range(case.num_slices)
        ]

    def eval_cases(self, split: str) -> Iterator[Case]:
        if split not in ("val", "test"):
            raise ValueError(f"split {split!r}: expected 'val' or 'test'")
        return iter(self._cases[split])

    def protocol(self) -> dict[str, Any]:
        return {"dataset": self.name, "generator": "bench.data.synthetic_phantoms", "config": vars(self.config)}
