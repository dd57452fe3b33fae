"""The ``acdc`` dataset adapter: ACDC cine-MRI in the SSL4MIS preprocessing and split.

Layout (SSL4MIS ``data/ACDC``; ``bench data prepare acdc --raw`` writes it from the official release)::

    <root>/train_slices.list   one slice stem per line (patientNNN_frameNN_slice_K)
    <root>/val.list            one volume stem per line (patientNNN_frameNN), 20 volumes
    <root>/test.list           40 volumes
    <root>/data/slices/<stem>.h5   'image' float32 [H, W] in [0, 1], 'label' uint8 [H, W] in 0..3
    <root>/data/<stem>.h5          'image' float32 [D, H, W], 'label' uint8 [D, H, W]

The variant with the slices flattened into ``data/`` (as some SSL4MIS forks ship it) is read too.

Protocol (SSL4MIS ``code/train_*_2D.py``, ``code/dataloaders/dataset.py``, ``code/test_2D_fully.py``):

- A case is a patient; both frames (ED = frame01, ES = frame02) go together.  Training cases are
  ordered by first appearance in ``train_slices.list``; the ``first`` label selection takes the
  first N.  SSL4MIS instead takes the first ``patients_to_slices[N]`` lines of that list
  (``{"3": 68, "7": 136, "14": 256, "21": 396, "28": 512, "35": 664, "140": 1312}``; 1 patient = 32
  slices in later forks).  The published list keeps each patient's slices together, so the first N
  patients are exactly those first 32 / 68 / 136 / ... lines; :meth:`ACDCDataset.labeled_slice_count`
  reports the count for a check.
- Unlabeled = the remaining training slices.  Validation = the 20 ``val.list`` volumes, test = the
  40 ``test.list`` volumes, each scored as one case (SSL4MIS averages over the 40 volumes).
- Spacing: the SSL4MIS files carry none, so HD95/ASD are in voxels as in the published tables; a
  volume written by ``prepare_acdc`` carries a ``spacing`` attribute (z, y, x) in mm, used when
  present (``--spacing voxel`` ignores it for table comparability).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from bench.data.adapter import DatasetAdapter, TrainingSlice
from bench.data.cache import cached_training_slices, resized_slices
from bench.data.case import Case
from bench.data.options import option_bool

CLASS_NAMES = ("RV", "MYO", "LV")
NUM_LABELS = len(CLASS_NAMES) + 1

READER_VERSION = 1
"""Part of the training-slice cache key: bump when this reader's output changes."""

LIST_FILES = {"train": "train_slices.list", "val": "val.list", "test": "test.list"}
OPTIONS = ("patch_size", "cache")

SSL4MIS_PATIENTS_TO_SLICES = {1: 32, 3: 68, 7: 136, 14: 256, 21: 396, 28: 512, 35: 664, 70: 1312}
"""SSL4MIS ``patients_to_slices`` for ACDC (the "1" entry from later forks, e.g. BCP; "140" in the
original is the 70 training patients' 1312 slices), recorded in the protocol."""

_SLICE_STEM = re.compile(r"patient\d+_frame\d+_slice_\d+")
_VOLUME_STEM = re.compile(r"patient\d+_frame\d+")

MISSING_DATA_HELP = (
    "ACDC is not distributed with the harness. Either download the SSL4MIS preprocessing "
    "(https://github.com/HiLab-git/SSL4MIS, folder data/ACDC) or convert the official release "
    "(https://www.creatis.insa-lyon.fr/Challenge/acdc/) with `bench data prepare acdc --raw <release> "
    "--out <folder>`, then pass --data-root <folder> or set BENCH_DATA_ROOT to its parent "
    "(the data is then looked for in $BENCH_DATA_ROOT/acdc)."
)


class ACDCDataset(DatasetAdapter):
    """ACDC in the SSL4MIS layout; see the module docstring for the protocol.

    Options (``--dataset-option KEY=VALUE``): ``patch_size`` (``256`` or ``256x224``) makes
    :meth:`train_slices` return slices already resized to the patch; ``cache`` (default true) set to
    false decodes the h5 files on every run instead of using the Arrow cache.
    """

    name = "acdc"
    description = ("ACDC cardiac cine-MRI (RV, MYO, LV), SSL4MIS preprocessing and split: 70 training patients "
                   "(1312 slices), 20 validation and 40 test volumes; labels = patients, first N in list order")
    class_names = CLASS_NAMES
    default_labels = ("1", "3", "7")
    default_label_selection = "first"

    def __init__(self, data_root: Path | None = None, **options: Any) -> None:
        if data_root is None:
            looked = os.environ.get("BENCH_DATA_ROOT")
            where = f"BENCH_DATA_ROOT is {looked!r}" if looked else "BENCH_DATA_ROOT is not set"
            raise FileNotFoundError(f"acdc: no data root given (no --data-root, and {where}). {MISSING_DATA_HELP}")
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(f"acdc: unknown dataset option(s) {unknown}; known: {', '.join(OPTIONS)}")
        super().__init__(Path(data_root), **options)
        self.patch_size = _as_size(options.get("patch_size"))
        self.use_cache = option_bool("cache", options.get("cache", True))
        root = self.data_root
        if not root.is_dir():
            raise FileNotFoundError(f"acdc: data root {root} does not exist or is not a folder. {MISSING_DATA_HELP}")
        self.slice_dir = root / "data" / "slices" if (root / "data" / "slices").is_dir() else root / "data"
        self.volume_dir = root / "data"
        self.slice_stems = self._read_list("train", _SLICE_STEM)
        self.volume_stems = {split: self._read_list(split, _VOLUME_STEM) for split in ("val", "test")}
        self._check_listed_files_exist()
        self._slices_by_size: dict[tuple[int, int] | None, list[TrainingSlice]] = {}

    # ----------------------------------------------------------------------------------- lists

    def _read_list(self, split: str, pattern: re.Pattern) -> list[str]:
        path = self.data_root / LIST_FILES[split]
        if not path.is_file():
            raise FileNotFoundError(f"acdc: {path} is missing; an SSL4MIS ACDC folder has "
                                    f"{', '.join(LIST_FILES.values())}. {MISSING_DATA_HELP}")
        stems = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            stem = line.strip().removesuffix(".h5")
            if not stem:
                continue
            if not pattern.fullmatch(stem):
                raise ValueError(f"acdc: {path} line {number}: {stem!r} is not a "
                                 f"{'patientNNN_frameNN_slice_K' if split == 'train' else 'patientNNN_frameNN'} stem")
            stems.append(stem)
        if not stems:
            raise ValueError(f"acdc: {path} lists no files")
        return stems

    def _slice_path(self, stem: str) -> Path:
        return self.slice_dir / f"{stem}.h5"

    def _volume_path(self, stem: str) -> Path:
        return self.volume_dir / f"{stem}.h5"

    def _check_listed_files_exist(self) -> None:
        """Every listed file, checked up front so a missing test volume fails before training."""
        listed = [(LIST_FILES["train"], stem, self._slice_path(stem)) for stem in self.slice_stems]
        listed += [(LIST_FILES[split], stem, self._volume_path(stem))
                   for split, stems in self.volume_stems.items() for stem in stems]
        for list_name, stem, path in listed:
            if not path.is_file():
                raise FileNotFoundError(f"acdc: {self.data_root / list_name} names {stem!r} but {path} does not exist")

    # ------------------------------------------------------------------------------- training

    @staticmethod
    def patient_of(stem: str) -> str:
        return stem.split("_", 1)[0]

    def train_case_ids(self) -> list[str]:
        """Patients in order of first appearance in ``train_slices.list`` (the SSL4MIS order)."""
        return list(dict.fromkeys(self.patient_of(stem) for stem in self.slice_stems))

    def labeled_slice_count(self, num_patients: int) -> int:
        """Training slices of the first ``num_patients`` patients (68 for 3 on the SSL4MIS list)."""
        chosen = set(self.train_case_ids()[:num_patients])
        return sum(self.patient_of(stem) in chosen for stem in self.slice_stems)

    def case_domains(self) -> dict[str, str]:
        return {case_id: "default" for case_id in self.train_case_ids()}

    def train_slices(self, patch_size: int | tuple[int, int] | None = None) -> list[TrainingSlice]:
        """Every training slice (patient id as ``case_id``), in list order.

        With ``patch_size`` (or the ``patch_size`` option) the slices come already resized to the
        patch, so the training streams' own resize is a no-op; otherwise at native size.  Either way
        they are decoded once per process and served from the Arrow cache on later runs.
        """
        size = _as_size(patch_size) if patch_size is not None else self.patch_size
        if size not in self._slices_by_size:
            if self.use_cache:
                self._slices_by_size[size] = cached_training_slices(
                    {"dataset": self.name, "reader": READER_VERSION, "list": LIST_FILES["train"]},
                    [self.data_root / LIST_FILES["train"]] + [self._slice_path(stem) for stem in self.slice_stems],
                    self.decode_training_slices,
                    patch_size=size,
                )
            else:
                self._slices_by_size[size] = list(resized_slices(self.decode_training_slices(), size))
        return self._slices_by_size[size]

    def decode_training_slices(self) -> Iterator[TrainingSlice]:
        """Native-size slices straight from the h5 files (the slow path the cache saves)."""
        for stem in self.slice_stems:
            path = self._slice_path(stem)
            image, label, _ = read_h5_pair(path, expected_ndim=2)
            yield TrainingSlice(self.patient_of(stem), image, label, source=str(path))

    # ----------------------------------------------------------------------------- evaluation

    def eval_cases(self, split: str) -> Iterator[Case]:
        if split not in self.volume_stems:
            raise ValueError(f"acdc: split {split!r}: expected 'val' or 'test'")
        return self._iter_volumes(split)

    def _iter_volumes(self, split: str) -> Iterator[Case]:
        for stem in self.volume_stems[split]:
            path = self._volume_path(stem)
            image, label, spacing = read_h5_pair(path, expected_ndim=3)
            yield Case(stem, image, label, split, spacing=spacing, extra={"patient": self.patient_of(stem)},
                       source=str(path))

    def protocol(self) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "data_root": str(self.data_root),
            "preprocessing": "SSL4MIS ACDC h5 (per-volume min-max intensity, native in-plane size)",
            "layout": "data/slices" if self.slice_dir != self.volume_dir else "flat data/",
            "train_patients": len(self.train_case_ids()),
            "train_slices": len(self.slice_stems),
            "val_volumes": len(self.volume_stems["val"]),
            "test_volumes": len(self.volume_stems["test"]),
            "case": "patient (ED and ES frames together) for label budgets; volume for evaluation",
            "label_selection_first": "first N patients of train_slices.list = SSL4MIS patients_to_slices",
            "ssl4mis_patients_to_slices": {str(k): v for k, v in SSL4MIS_PATIENTS_TO_SLICES.items()},
        }


def read_h5_pair(path: Path, expected_ndim: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float] | None]:
    """``image`` float32, ``label`` uint8 and the optional ``spacing`` (z, y, x) of one ACDC h5 file,
    with every inconsistency reported against the file it came from."""
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"acdc: {path} is not a readable HDF5 file ({error})") from error
    with handle:
        missing = [key for key in ("image", "label") if key not in handle]
        if missing:
            raise ValueError(f"acdc: {path} has no {' or '.join(repr(key) for key in missing)} dataset "
                             f"(found {sorted(handle.keys())}); expected 'image' and 'label'")
        try:
            image = np.asarray(handle["image"][()], dtype=np.float32)
            label = np.asarray(handle["label"][()])
        except OSError as error:  # a damaged chunk opens fine and fails here, with no file name
            raise ValueError(f"acdc: {path} has unreadable 'image'/'label' data ({error})") from error
        spacing = _read_spacing(handle, path) if expected_ndim == 3 else None
    kind = "slice [H, W]" if expected_ndim == 2 else "volume [D, H, W]"
    if image.ndim != expected_ndim:
        raise ValueError(f"acdc: {path} 'image' has shape {image.shape}; expected a {kind}")
    if image.shape != label.shape:
        raise ValueError(f"acdc: {path} 'image' shape {image.shape} != 'label' shape {label.shape}")
    if label.size:
        low, high = label.min(), label.max()
        if low < 0 or high >= NUM_LABELS or not np.array_equal(label, np.round(label)):
            found = np.unique(label)
            raise ValueError(f"acdc: {path} 'label' has values {found[:10].tolist()}; expected integers in "
                             f"0..{NUM_LABELS - 1} (0 background, 1 RV, 2 MYO, 3 LV)")
    return image, label.astype(np.uint8, copy=False), spacing


def _read_spacing(handle: h5py.File, path: Path) -> tuple[float, float, float] | None:
    if "spacing" in handle.attrs:
        raw = handle.attrs["spacing"]
    elif "spacing" in handle:
        raw = handle["spacing"][()]
    else:
        return None
    values = np.asarray(raw, dtype=np.float64).ravel()
    if values.size != 3 or not np.all(np.isfinite(values)) or not np.all(values > 0):
        raise ValueError(f"acdc: {path} 'spacing' is {values.tolist()}; expected three positive values (z, y, x) in mm")
    return (float(values[0]), float(values[1]), float(values[2]))


def _as_size(patch_size: int | str | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """``256``, ``"256"`` (from ``--dataset-option patch_size=256``), ``"256x224"`` or ``(256, 224)``."""
    if patch_size is None:
        return None
    if isinstance(patch_size, str):
        parts = patch_size.lower().split("x")
        if len(parts) not in (1, 2) or not all(part.strip().isdigit() for part in parts):
            raise ValueError(f"acdc: patch_size={patch_size!r}; expected N or HxW")
        patch_size = [int(part) for part in parts]
    if isinstance(patch_size, int):
        return (patch_size, patch_size)
    if len(patch_size) == 1:
        return (int(patch_size[0]), int(patch_size[0]))
    height, width = patch_size
    return (int(height), int(width))
