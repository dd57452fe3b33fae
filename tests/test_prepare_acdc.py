"""``prepare_acdc``: a tiny synthetic copy of the official ACDC release -> the SSL4MIS layout."""
from __future__ import annotations

from pathlib import Path

import h5py
import nibabel
import numpy as np
import pytest

from bench.cli import main
from bench.data.acdc import ACDCDataset
from bench.data.prepare_acdc import (
    TEST_PATIENTS,
    TRAIN_PATIENTS,
    VAL_PATIENTS,
    patient_name,
    prepare_acdc,
    read_patient,
)

# NIfTI voxel axes (x, y, z) and spacing of the fake frames; ACDC's are ~(216, 256, 10) at (1.56, 1.56, 10) mm.
SHAPE_XYZ = (5, 4, 2)
ZOOMS_XYZ = (1.25, 1.5, 10.0)
ED_FRAME, ES_FRAME = 1, 7


def frame_arrays(number: int, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct intensities per patient and frame (int16, as the release stores them) and labels 0..3."""
    x, y, z = np.indices(SHAPE_XYZ)
    image = (100 * number + 10 * frame + x + 7 * y + 31 * z).astype(np.int16)
    label = ((x + y + z + frame) % 4).astype(np.uint8)
    return image, label


def write_nifti(path: Path, data: np.ndarray) -> None:
    volume = nibabel.Nifti1Image(data, np.diag([*ZOOMS_XYZ, 1.0]))
    nibabel.save(volume, str(path))


def write_patient(folder: Path, number: int) -> Path:
    patient_dir = folder / patient_name(number)
    patient_dir.mkdir(parents=True)
    (patient_dir / "Info.cfg").write_text(f"ED: {ED_FRAME}\nES: {ES_FRAME}\nGroup: NOR\nHeight: 180.0\nNbFrame: 30\n")
    for frame in (ED_FRAME, ES_FRAME):
        image, label = frame_arrays(number, frame)
        write_nifti(patient_dir / f"{patient_dir.name}_frame{frame:02d}.nii.gz", image)
        write_nifti(patient_dir / f"{patient_dir.name}_frame{frame:02d}_gt.nii.gz", label)
    return patient_dir


@pytest.fixture(scope="module")
def raw_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 100 training patients, under ``database/training`` as the release unpacks."""
    raw = tmp_path_factory.mktemp("release")
    for number in range(1, 101):
        write_patient(raw / "database" / "training", number)
    return raw


@pytest.fixture(scope="module")
def prepared(raw_release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Through the command line the user types (``bench data prepare acdc``)."""
    out = tmp_path_factory.mktemp("prepared") / "acdc"
    assert main(["data", "prepare", "acdc", "--raw", str(raw_release), "--out", str(out)]) == 0
    return out


def test_split_and_list_order_are_ssl4mis(prepared: Path) -> None:
    def patients(list_name: str) -> list[int]:
        stems = (prepared / list_name).read_text().split()
        return list(dict.fromkeys(int(stem[7:10]) for stem in stems))

    assert patients("train_slices.list") == list(TRAIN_PATIENTS)
    assert patients("val.list") == list(VAL_PATIENTS) and patients("test.list") == list(TEST_PATIENTS)
    assert (prepared / "train_slices.list").read_text().split()[:4] == [
        "patient099_frame01_slice_1", "patient099_frame01_slice_2", "patient099_frame02_slice_1",
        "patient099_frame02_slice_2"]
    assert set(TRAIN_PATIENTS) | set(VAL_PATIENTS) | set(TEST_PATIENTS) == set(range(1, 101))


def test_volume_is_reordered_normalised_and_carries_spacing(prepared: Path) -> None:
    number = TEST_PATIENTS[0]
    for frame_name, frame in (("frame01", ED_FRAME), ("frame02", ES_FRAME)):
        with h5py.File(prepared / "data" / f"{patient_name(number)}_{frame_name}.h5") as handle:
            image, label, spacing = handle["image"][()], handle["label"][()], handle.attrs["spacing"]
        raw_image, raw_label = frame_arrays(number, frame)
        expected = raw_image.transpose(2, 1, 0).astype(np.float64)
        expected = (expected - expected.min()) / (expected.max() - expected.min())
        assert image.dtype == np.float32 and image.shape == (2, 4, 5)
        np.testing.assert_allclose(image, expected, rtol=0, atol=1e-7)
        assert label.dtype == np.uint8
        np.testing.assert_array_equal(label, raw_label.transpose(2, 1, 0))
        np.testing.assert_allclose(spacing, ZOOMS_XYZ[::-1])


def test_training_slices_are_the_volume_slices_numbered_from_one(prepared: Path) -> None:
    number = TRAIN_PATIENTS[0]
    raw_image, raw_label = frame_arrays(number, ES_FRAME)
    volume = raw_image.transpose(2, 1, 0).astype(np.float64)
    volume = (volume - volume.min()) / (volume.max() - volume.min())
    for index in range(SHAPE_XYZ[2]):
        with h5py.File(prepared / "data" / "slices" / f"{patient_name(number)}_frame02_slice_{index + 1}.h5") as handle:
            np.testing.assert_allclose(handle["image"][()], volume[index], atol=1e-7)
            np.testing.assert_array_equal(handle["label"][()], raw_label.transpose(2, 1, 0)[index])


def test_the_adapter_reads_the_prepared_folder(prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    adapter = ACDCDataset(prepared)
    assert adapter.train_case_ids() == [patient_name(number) for number in TRAIN_PATIENTS]
    assert adapter.labeled_slice_count(3) == 3 * 2 * SHAPE_XYZ[2]
    case = next(adapter.eval_cases("test"))
    assert case.case_id == "patient011_frame01" and case.spacing == (10.0, 1.5, 1.25)


def test_spacing_none_writes_no_spacing(raw_release: Path, tmp_path: Path) -> None:
    counts = prepare_acdc(raw_release, tmp_path / "acdc", spacing="none")
    assert counts == {"train_slices": 70 * 2 * SHAPE_XYZ[2], "train_volumes": 140, "val_volumes": 20, "test_volumes": 40}
    with h5py.File(tmp_path / "acdc" / "data" / "patient011_frame01.h5") as handle:
        assert "spacing" not in handle.attrs
    with pytest.raises(ValueError, match="spacing='inch'"):
        prepare_acdc(raw_release, tmp_path / "other", spacing="inch")


def test_missing_patients_are_named(tmp_path: Path) -> None:
    for number in (1, 2):
        write_patient(tmp_path / "raw", number)
    with pytest.raises(FileNotFoundError, match=r"98 of the 100 .*first missing: patient003"):
        prepare_acdc(tmp_path / "raw", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        prepare_acdc(tmp_path / "absent", tmp_path / "out")


def test_bad_patient_files_are_named(tmp_path: Path) -> None:
    patient_dir = write_patient(tmp_path, 5)
    (patient_dir / "Info.cfg").write_text("ED: 1\nGroup: NOR\n")
    with pytest.raises(ValueError, match=f"{patient_dir / 'Info.cfg'} has no integer 'ES:'"):
        list(read_patient(patient_dir))
    (patient_dir / "Info.cfg").write_text(f"ED: {ED_FRAME}\nES: {ES_FRAME}\n")
    truth = patient_dir / f"patient005_frame{ES_FRAME:02d}_gt.nii.gz"
    write_nifti(truth, np.full(SHAPE_XYZ, 5, np.uint8))
    with pytest.raises(ValueError, match=rf"{truth} has label values \[5\]"):
        list(read_patient(patient_dir))
    write_nifti(truth, np.zeros((5, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"has shape \(2, 4, 5\) but .* has \(3, 4, 5\)"):
        list(read_patient(patient_dir))
    truth.unlink()
    with pytest.raises(FileNotFoundError, match=str(truth)):
        list(read_patient(patient_dir))
