"""Every case a run will read, opened and checked before the first training step.

A NaN block in a training slice otherwise surfaces as a "non-finite loss" blamed on the method, one
in a test volume as a silently low Dice, and a truncated validation or test file only after training.
:func:`check_dataset` reads what training and evaluation will read (the training slices through the
adapter, hence through its Arrow cache; the validation and test cases one at a time) and checks that

- every case can be read (a truncated or corrupt file is a :class:`DataError` naming it),
- image and label have one shape, with at least one voxel,
- every image voxel is finite (the count of NaN and Inf voxels and the slices holding them are named),
- every label value is an integer in ``0..num_classes-1`` (the values outside are named),
- every split is non-empty and every training case has at least one slice.

Errors name the file (``Case.source`` / ``TrainingSlice.source``; dataset and case id when an adapter
knows no file), the field and what was expected.  A split that passed is remembered per adapter
instance for the rest of the process, so a sweep of many runs on one dataset checks it once.
Measured on the SSL4MIS ACDC folder (1312 training slices, 60 volumes, 2-core CPU, patch 128 / 256):
1.4 / 2.0 s with a warm slice cache, 4.2 / 7.1 s with a cold one; all but ~0.7 s of that (reading the
60 volumes, checking every array) is the cache read or decode that training then gets for free from the
same adapter; a repeated check of the same adapter costs nothing.
"""
from __future__ import annotations

import sys
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from bench.data.adapter import DatasetAdapter, TrainingSlice
from bench.data.case import Case

SPLITS = ("train", "val", "test")
# How many bad values or slice indices a message lists before saying "and N more".
LISTED = 8


class DataError(ValueError):
    """A case that training or evaluation cannot use; the message names the file (or dataset and case
    id), the field and what was expected."""


@dataclass(frozen=True)
class SplitCheck:
    """One split that passed: ``cases`` (patients for ``train``, volumes or images otherwise) and the
    2D ``slices`` they hold, and the seconds the check took when it was made."""

    split: str
    cases: int
    slices: int
    seconds: float


@dataclass
class DataCheckReport:
    dataset: str
    splits: dict[str, SplitCheck] = field(default_factory=dict)
    seconds: float = 0.0

    def table(self, failed_split: str | None = None) -> str:
        """A short table per split (cases, slices, status); ``failed_split`` adds its row as failed."""
        rows = [(check.split, str(check.cases), str(check.slices), "ok") for check in self.splits.values()]
        if failed_split is not None:
            rows.append((failed_split, "-", "-", "FAILED"))
        header = ("split", "cases", "slices", "status")
        widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
        return "\n".join("  ".join(cell.ljust(width) if column in (0, 3) else cell.rjust(width)
                                   for column, (cell, width) in enumerate(zip(row, widths))).rstrip()
                         for row in [header, *rows])


# Per adapter instance: (split, training patch size) -> the check that passed.  Weak keys, so an adapter
# dropped from ``bench.execute.load_dataset``'s cache takes its entries with it.
_passed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_dataset(
    adapter: DatasetAdapter,
    splits: Sequence[str] = SPLITS,
    show_progress: bool = False,
    *,
    patch_size: tuple[int, int] | None = None,
) -> DataCheckReport:
    """Read and check every case of ``splits``; raise :class:`DataError` at the first bad one.

    ``patch_size`` is passed to ``adapter.train_slices`` as training passes it, so the check reads the
    very slices (and cache entry) training will read; voxel counts in a message about a training slice
    then refer to the slice at that size.
    """
    unknown = [split for split in splits if split not in SPLITS]
    if unknown:
        raise ValueError(f"data check: split(s) {unknown}; expected some of {', '.join(SPLITS)}")
    start = time.perf_counter()
    checks = {split: check_split(adapter, split, show_progress, patch_size) for split in splits}
    return DataCheckReport(adapter.name, checks, time.perf_counter() - start)


def check_split(
    adapter: DatasetAdapter, split: str, show_progress: bool = False, patch_size: tuple[int, int] | None = None
) -> SplitCheck:
    """One split, or the remembered result of an earlier pass on the same adapter instance."""
    key = (split, tuple(patch_size) if patch_size is not None and split == "train" else None)
    remembered = _remembered(adapter)
    if remembered is not None and key in remembered:
        return remembered[key]
    start = time.perf_counter()
    if split == "train":
        cases, slices = check_training_slices(adapter, patch_size, show_progress)
    else:
        cases, slices = check_eval_cases(adapter, split, show_progress)
    check = SplitCheck(split, cases, slices, time.perf_counter() - start)
    if remembered is not None:
        remembered[key] = check
    return check


def _remembered(adapter: DatasetAdapter) -> dict | None:
    """The adapter's passed checks; ``None`` when it cannot be a weak key (a plug-in defining ``__eq__``
    without ``__hash__``), which only costs re-checking."""
    try:
        return _passed.setdefault(adapter, {})
    except TypeError:
        return None


# -- training ------------------------------------------------------------------------------------------

def check_training_slices(
    adapter: DatasetAdapter, patch_size: tuple[int, int] | None, show_progress: bool
) -> tuple[int, int]:
    """(training cases, training slices) after checking every slice training will draw from."""
    try:
        slices = adapter.train_slices(patch_size=patch_size)
    except Exception as error:  # any failure to read is the data's, named with the file by the adapter
        raise DataError(f"{adapter.name} train split: a training slice could not be read: {error}") from error
    if not slices:
        raise DataError(f"{adapter.name} train split: no training slices; expected at least one")
    per_origin = Counter(_origin(item) for item in slices)
    position_in_origin: Counter = Counter()
    for item in _progress(slices, show_progress, f"checking {adapter.name} train"):
        origin = _origin(item)
        where = _training_slice_place(adapter, item, position_in_origin[origin], per_origin[origin], patch_size)
        position_in_origin[origin] += 1
        check_arrays(item.image, item.label, where, adapter, expected_ndim=2)
    case_ids = adapter.train_case_ids()
    without_slices = sorted(set(case_ids) - {item.case_id for item in slices})
    if without_slices:
        raise DataError(f"{adapter.name} train split: training case(s) {_listed(without_slices)} have no slice; "
                        "expected every case of train_case_ids() to have at least one")
    return len(case_ids), len(slices)


def _origin(item: TrainingSlice) -> tuple[str, str]:
    """What a slice's position is counted within: its file, else its case."""
    return ("source", item.source) if item.source else ("case", item.case_id)


def _training_slice_place(
    adapter: DatasetAdapter, item: TrainingSlice, position: int, count: int, patch_size: tuple[int, int] | None
) -> str:
    place = item.source or f"{adapter.name} training case {item.case_id!r}"
    if count > 1:
        place += f" (training slice {position} of {count})"
    if patch_size is not None:
        place += f" (as read for training at {patch_size[0]}x{patch_size[1]})"
    return place


# -- validation and test -------------------------------------------------------------------------------

def check_eval_cases(adapter: DatasetAdapter, split: str, show_progress: bool) -> tuple[int, int]:
    """(cases, slices) of ``val`` or ``test`` after reading and checking each case."""
    cases = slices = 0
    for case in _progress(_read_cases(adapter, split), show_progress, f"checking {adapter.name} {split}"):
        where = case.source or f"{adapter.name} {split} case {case.case_id!r}"
        check_arrays(case.image, case.label, where, adapter, expected_ndim=3)
        cases += 1
        slices += case.num_slices
    if cases == 0:
        raise DataError(f"{adapter.name} {split} split: no cases; expected at least one")
    return cases, slices


def _read_cases(adapter: DatasetAdapter, split: str) -> Iterator[Case]:
    """The adapter's cases, with a failure to read one turned into a :class:`DataError` saying which
    split and where in it (the adapter's own message names the file)."""
    previous: str | None = None
    try:
        for case in adapter.eval_cases(split):
            yield case
            previous = case.case_id
    except DataError:
        raise
    except Exception as error:  # any failure to read is the data's; the chain keeps the original
        after = f"the case after {previous!r}" if previous else "its first case"
        raise DataError(f"{adapter.name} {split} split, {after}: could not be read: {error}") from error


# -- one image and its label ---------------------------------------------------------------------------

def check_arrays(image: np.ndarray, label: np.ndarray, where: str, adapter: DatasetAdapter, expected_ndim: int) -> None:
    """Shapes, finite image, label values in range; ``where`` names the file or case in the message."""
    image, label = np.asarray(image), np.asarray(label)
    kind = "[H, W] slice" if expected_ndim == 2 else "[D, H, W] volume"
    if image.ndim != expected_ndim:
        raise DataError(f"{where}: field 'image' has shape {image.shape}; expected a {kind}")
    if image.shape != label.shape:
        raise DataError(f"{where}: field 'label' has shape {label.shape}; expected the 'image' shape {image.shape}")
    if image.size == 0:
        raise DataError(f"{where}: field 'image' has shape {image.shape}; expected at least one voxel")
    check_finite(image, where)
    check_label_values(label, where, adapter.num_classes, adapter.class_names)


def check_finite(image: np.ndarray, where: str) -> None:
    if image.dtype.kind not in "fc":
        return  # integer pixels are finite by construction
    not_finite = ~np.isfinite(image)
    if not not_finite.any():
        return
    count = int(not_finite.sum())
    nan_count = int(np.isnan(image).sum())
    first = tuple(int(index) for index in np.argwhere(not_finite)[0])
    axes = "(z, y, x)" if image.ndim == 3 else "(y, x)"
    raise DataError(f"{where}: field 'image' has {count} non-finite voxel(s) ({nan_count} NaN, {count - nan_count} "
                    f"Inf){_slices_holding(not_finite)}, first at {axes} = {first}; expected finite intensities")


def check_label_values(label: np.ndarray, where: str, num_classes: int, class_names: Sequence[str]) -> None:
    highest = num_classes - 1
    expected = (f"expected integers in 0..{highest} (0 background"
                + "".join(f", {index} {name}" for index, name in enumerate(class_names, start=1)) + ")")
    if label.dtype.kind == "f" and not np.array_equal(label, np.round(label)):
        raise DataError(f"{where}: field 'label' holds non-integer values; {expected}")
    if label.dtype.kind not in "biuf":
        raise DataError(f"{where}: field 'label' has type {label.dtype}; {expected}")
    if label.min() >= 0 and label.max() <= highest:
        return
    outside = (label < 0) | (label > highest)
    bad_values = np.unique(label[outside])
    raise DataError(f"{where}: field 'label' has value(s) {_listed(bad_values.tolist())} in {int(outside.sum())} "
                    f"voxel(s){_slices_holding(outside)}; {expected}")


def _slices_holding(mask: np.ndarray) -> str:
    """`` in slice(s) 2, 3 of 10`` for a volume; nothing for a 2D slice."""
    if mask.ndim != 3:
        return ""
    indices = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)).tolist()
    return f" in slice(s) {_listed(indices)} of {mask.shape[0]}"


def _listed(values: Sequence[Any]) -> str:
    shown = ", ".join(str(value) for value in values[:LISTED])
    return shown + (f" and {len(values) - LISTED} more" if len(values) > LISTED else "")


def _progress(items: Iterable, show: bool, description: str) -> Iterable:
    if not show:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, leave=False, dynamic_ncols=True)


# -- the `bench data check` command --------------------------------------------------------------------

def parse_splits(text: str) -> list[str]:
    splits = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in splits if name not in SPLITS]
    if not splits or unknown:
        raise ValueError(f"--splits {text!r}: expected a comma-separated subset of {','.join(SPLITS)}")
    return splits


def data_check_command(dataset: str, data_root: Path | None, options: Mapping[str, str], splits_text: str) -> int:
    """``bench data check``: the same checks a run makes before training, alone, with a table per split.
    Returns 0 when clean; a bad case raises :class:`DataError` (the CLI prints it and exits 2) after
    the table of the splits checked so far."""
    from bench.registry import DATASETS

    splits = parse_splits(splits_text)
    adapter = DATASETS.get(dataset)(data_root, **dict(options))
    print(f"{dataset}: {data_root}" if data_root else dataset)
    report = DataCheckReport(dataset)
    for split in splits:
        try:
            report.splits[split] = check_split(adapter, split, show_progress=sys.stderr.isatty())
        except DataError:
            print(report.table(failed_split=split))
            raise
    print(report.table())
    return 0
