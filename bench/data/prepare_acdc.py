"""``bench data prepare acdc``: the official ACDC release -> the SSL4MIS layout the ``acdc`` adapter reads.

The official release (https://www.creatis.insa-lyon.fr/Challenge/acdc/) holds, per training patient,
``patientNNN/Info.cfg`` (``ED: <frame>``, ``ES: <frame>``, ...), ``patientNNN_frameFF.nii.gz`` and
``patientNNN_frameFF_gt.nii.gz`` for the ED and ES frames.  This converter reproduces the SSL4MIS
preprocessing (``code/dataloaders/acdc_data_processing.py``) and its published split:

- image: min-max normalised per volume to [0, 1], float32; label: uint8 in 0..3 (RV, MYO, LV);
- arrays in [D, H, W] order, the axis order SimpleITK's ``GetArrayFromImage`` gives (the NIfTI voxel
  axes reversed), so patient001 (NIfTI 216x256x10) becomes [10, 256, 216] as in the SSL4MIS files;
- ED is stored as ``frame01`` and ES as ``frame02`` (the SSL4MIS names; in the published files the
  LV is larger in ``frame01`` for every validation and test patient, i.e. frame01 = end-diastole);
- training patients as 2D slices ``data/slices/<stem>_slice_<k>.h5`` (k = 1..D, the numbering of the
  published ``train_slices.list``), validation and test patients as volumes ``data/<stem>.h5``;
- the split and the order of ``train_slices.list`` are SSL4MIS's (embedded below, since a user
  converting the release has no lists): the ``first`` label selection then labels the same patients;
- with ``spacing="mm"`` each volume carries a ``spacing`` attribute (z, y, x) in mm from the NIfTI
  header, which the adapter uses for HD95/ASD in mm; SSL4MIS's files have none (voxels) and
  ``spacing="none"`` reproduces that.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

__all__ = ["SPACING_MODES", "TEST_PATIENTS", "TRAIN_PATIENTS", "VAL_PATIENTS", "prepare_acdc"]

# SSL4MIS data/ACDC lists: patients in order of first appearance (train_slices.list, val.list, test.list).
TRAIN_PATIENTS = (
    99, 38, 50, 100, 58, 21, 49, 20, 72, 40, 60, 89, 4, 56, 98, 96, 31, 18, 94, 47, 48, 55, 97, 74, 43, 41, 63,
    37, 95, 54, 26, 88, 32, 69, 6, 71, 12, 73, 61, 17, 25, 10, 57, 29, 51, 5, 36, 46, 62, 34, 76, 92, 70, 77, 67,
    3, 91, 16, 14, 44, 42, 90, 53, 27, 35, 86, 23, 9, 79, 15,
)
VAL_PATIENTS = (28, 85, 82, 87, 19, 30, 78, 45, 2, 39)
TEST_PATIENTS = (11, 13, 84, 33, 93, 22, 68, 24, 83, 81, 80, 1, 7, 66, 8, 65, 75, 64, 59, 52)

SPACING_MODES = ("mm", "none")
NUM_LABELS = 4
_PATIENT_DIR = re.compile(r"patient\d{3}")
# SSL4MIS names the two annotated frames by phase, not by their frame number in the cine sequence.
_PHASE_NAMES = (("ED", "frame01"), ("ES", "frame02"))


def patient_name(number: int) -> str:
    return f"patient{number:03d}"


def prepare_acdc(raw: Path, out: Path, spacing: str = "mm") -> dict[str, int]:
    """Convert the release under ``raw`` into ``out``; returns counts of what was written.

    ``raw`` may be the release's top folder or its ``training`` folder: patient folders are found
    anywhere below it.  Files already in ``out`` with the same names are overwritten.
    """
    if spacing not in SPACING_MODES:
        raise ValueError(f"prepare_acdc: spacing={spacing!r}; expected one of {SPACING_MODES}")
    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise FileNotFoundError(f"prepare_acdc: {raw} is not a folder; give the folder of the official ACDC "
                                "release (the one holding patient001 ... patient100, or its parent)")
    patient_dirs = find_patient_dirs(raw)
    needed = [patient_name(number) for number in TRAIN_PATIENTS + VAL_PATIENTS + TEST_PATIENTS]
    missing = sorted(name for name in needed if name not in patient_dirs)
    if missing:
        raise FileNotFoundError(f"prepare_acdc: {len(missing)} of the 100 ACDC training patients are not under {raw} "
                                f"(first missing: {', '.join(missing[:5])}); each needs a folder patientNNN with "
                                "Info.cfg and the ED/ES frames with their _gt files")

    slice_dir = out / "data" / "slices"
    slice_dir.mkdir(parents=True, exist_ok=True)
    train_slices: list[str] = []
    train_volumes: list[str] = []
    for number in TRAIN_PATIENTS:
        for stem, image, label, _ in read_patient(patient_dirs[patient_name(number)]):
            train_volumes.append(stem)
            for index in range(image.shape[0]):
                slice_stem = f"{stem}_slice_{index + 1}"
                _write_h5(slice_dir / f"{slice_stem}.h5", image[index], label[index], None)
                train_slices.append(slice_stem)
    eval_volumes: dict[str, list[str]] = {"val": [], "test": []}
    for split, numbers in (("val", VAL_PATIENTS), ("test", TEST_PATIENTS)):
        for number in numbers:
            for stem, image, label, voxel_spacing in read_patient(patient_dirs[patient_name(number)]):
                _write_h5(out / "data" / f"{stem}.h5", image, label, voxel_spacing if spacing == "mm" else None)
                eval_volumes[split].append(stem)

    _write_list(out / "train_slices.list", train_slices)
    _write_list(out / "train.list", train_volumes)
    _write_list(out / "val.list", eval_volumes["val"])
    _write_list(out / "test.list", eval_volumes["test"])
    return {"train_slices": len(train_slices), "train_volumes": len(train_volumes),
            "val_volumes": len(eval_volumes["val"]), "test_volumes": len(eval_volumes["test"])}


def find_patient_dirs(raw: Path) -> dict[str, Path]:
    """``patientNNN`` -> its folder, wherever below ``raw`` it sits (``training/``, ``database/training/``)."""
    found: dict[str, Path] = {}
    candidates = [raw] if _PATIENT_DIR.fullmatch(raw.name) else []
    candidates += sorted(path for path in raw.rglob("patient*") if path.is_dir() and _PATIENT_DIR.fullmatch(path.name))
    for path in candidates:
        if path.name in found and found[path.name] != path:
            raise ValueError(f"prepare_acdc: {path.name} is both {found[path.name]} and {path}; point --raw at one release")
        found[path.name] = path
    return found


def read_patient(patient_dir: Path) -> Iterator[tuple[str, np.ndarray, np.ndarray, tuple[float, float, float]]]:
    """(stem, image [D,H,W] in [0,1], label [D,H,W] uint8, spacing (z,y,x) mm) for ED, then ES."""
    phases = read_info(patient_dir / "Info.cfg")
    for phase, frame_name in _PHASE_NAMES:
        frame_file = patient_dir / f"{patient_dir.name}_frame{phases[phase]:02d}.nii.gz"
        truth_file = patient_dir / f"{patient_dir.name}_frame{phases[phase]:02d}_gt.nii.gz"
        image, voxel_spacing = _read_nifti(frame_file)
        label, _ = _read_nifti(truth_file)
        if image.shape != label.shape:
            raise ValueError(f"prepare_acdc: {frame_file} has shape {image.shape} but {truth_file} has {label.shape}")
        yield f"{patient_dir.name}_{frame_name}", _min_max(image, frame_file), _labels(label, truth_file), voxel_spacing


def read_info(path: Path) -> dict[str, int]:
    """The ``ED`` and ``ES`` frame numbers of one patient's ``Info.cfg`` (``key: value`` lines)."""
    if not path.is_file():
        raise FileNotFoundError(f"prepare_acdc: {path} is missing; it names the patient's ED and ES frames")
    entries = {}
    for line in path.read_text().splitlines():
        key, separator, value = line.partition(":")
        if separator:
            entries[key.strip()] = value.strip()
    phases = {}
    for phase, _ in _PHASE_NAMES:
        try:
            phases[phase] = int(float(entries[phase]))
        except (KeyError, ValueError):
            raise ValueError(f"prepare_acdc: {path} has no integer '{phase}:' line (found {entries.get(phase)!r})") from None
    return phases


def _read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    import nibabel  # only this command needs it

    if not path.is_file():
        raise FileNotFoundError(f"prepare_acdc: {path} is missing")
    volume = nibabel.load(str(path))
    data = np.asarray(volume.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"prepare_acdc: {path} has shape {data.shape}; expected one 3D frame")
    zooms = [float(value) for value in volume.header.get_zooms()[:3]]
    # NIfTI voxel axes are (x, y, z); SimpleITK's array order, which SSL4MIS stored, is (z, y, x).
    return np.ascontiguousarray(data.transpose(2, 1, 0)), (zooms[2], zooms[1], zooms[0])


def _min_max(image: np.ndarray, path: Path) -> np.ndarray:
    image = image.astype(np.float64)
    low, high = float(image.min()), float(image.max())
    if not high > low:
        raise ValueError(f"prepare_acdc: {path} is constant ({low}); min-max normalisation needs contrast")
    return ((image - low) / (high - low)).astype(np.float32)


def _labels(label: np.ndarray, path: Path) -> np.ndarray:
    rounded = np.rint(label)
    if not np.array_equal(rounded, label) or rounded.min() < 0 or rounded.max() >= NUM_LABELS:
        raise ValueError(f"prepare_acdc: {path} has label values {np.unique(label)[:10].tolist()}; "
                         f"expected integers 0..{NUM_LABELS - 1}")
    return rounded.astype(np.uint8)


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray, spacing: tuple[float, float, float] | None) -> None:
    with h5py.File(path, "w") as handle:
        handle.create_dataset("image", data=image, compression="gzip")
        handle.create_dataset("label", data=label, compression="gzip")
        if spacing is not None:
            handle.attrs["spacing"] = np.asarray(spacing, dtype=np.float64)


def _write_list(path: Path, stems: list[str]) -> None:
    path.write_text("".join(f"{stem}\n" for stem in stems))
