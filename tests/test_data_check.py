"""The data check run before training (``bench.data.check``) and ``bench data check``: every bad case is a
``DataError`` naming the file, the field and the expectation, and a clean dataset is counted right.

Datasets are built here, small: an SSL4MIS-layout ACDC folder (h5), a pre-split ``folder`` dataset
(PNG), and an in-memory adapter for what the file readers would refuse before the check sees it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.data.acdc import ACDCDataset
from bench.data.adapter import DatasetAdapter, TrainingSlice
from bench.data.case import Case
from bench.data.check import DataError, check_dataset
from bench.data.folder import FolderDataset
from bench.data.synthetic import SyntheticDataset
from conftest import real_data_root

SIZE = (16, 16)
DEPTH = 3


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------- ACDC layout

def nested_discs(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels 1..3 as nested discs (every class present), image = label / 3 plus noise."""
    rows, cols = np.indices(shape[-2:])
    radius = np.hypot(rows - shape[-2] / 2, cols - shape[-1] / 2)
    label = np.broadcast_to(np.select([radius < 3, radius < 5, radius < 7], [3, 2, 1], 0), shape).astype(np.uint8)
    image = (label / 3.0 + 0.1 * np.random.default_rng(seed).random(shape)).astype(np.float32)
    return image, label


def write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("image", data=image, compression="gzip")
        handle.create_dataset("label", data=label, compression="gzip")


def edit_h5(path: Path, field: str, change) -> None:
    """Rewrite one dataset of an h5 file with ``change(array)`` applied."""
    with h5py.File(path, "a") as handle:
        values = handle[field][()]
        change(values)
        del handle[field]
        handle.create_dataset(field, data=values)


def write_acdc(root: Path) -> Path:
    """Train: patient001 with 2 slices per frame, patient002 with 1 (6 slices); val: patient003 (2
    volumes); test: patient004, patient005 (4 volumes); every volume DEPTH slices."""
    slice_stems = [f"{patient}_{frame}_slice_{index}"
                   for patient, per_frame in (("patient001", 2), ("patient002", 1))
                   for frame in ("frame01", "frame02") for index in range(1, per_frame + 1)]
    for seed, stem in enumerate(slice_stems):
        write_h5(root / "data" / "slices" / f"{stem}.h5", *nested_discs(SIZE, seed))
    (root / "train_slices.list").write_text("\n".join(slice_stems) + "\n")
    for split, patients in (("val", ["patient003"]), ("test", ["patient004", "patient005"])):
        stems = [f"{patient}_{frame}" for patient in patients for frame in ("frame01", "frame02")]
        for seed, stem in enumerate(stems):
            write_h5(root / "data" / f"{stem}.h5", *nested_discs((DEPTH, *SIZE), seed))
        (root / f"{split}.list").write_text("\n".join(stems) + "\n")
    return root


@pytest.fixture
def acdc_root(tmp_path: Path) -> Path:
    return write_acdc(tmp_path / "acdc")


def counts(report) -> dict[str, tuple[int, int]]:
    return {split: (check.cases, check.slices) for split, check in report.splits.items()}


def test_clean_acdc_folder_passes_and_is_counted(acdc_root: Path) -> None:
    report = check_dataset(ACDCDataset(acdc_root))
    # 2 patients / 2*2 + 2*1 slices; 2 volumes x 3; 4 volumes x 3
    assert counts(report) == {"train": (2, 6), "val": (2, 6), "test": (4, 12)}
    assert report.dataset == "acdc"
    table = report.table().splitlines()
    assert table[0].split() == ["split", "cases", "slices", "status"]
    assert [line.split() for line in table[1:]] == [["train", "2", "6", "ok"], ["val", "2", "6", "ok"],
                                                    ["test", "4", "12", "ok"]]


def test_clean_synthetic_passes_and_is_counted() -> None:
    adapter = SyntheticDataset(num_train=3, num_val=2, num_test=1, slices=4, size=32)
    assert counts(check_dataset(adapter)) == {"train": (3, 12), "val": (2, 8), "test": (1, 4)}


def test_nan_in_a_test_volume_names_the_file_the_count_and_the_slices(acdc_root: Path) -> None:
    bad = acdc_root / "data" / "patient005_frame01.h5"

    def nan_block(image: np.ndarray) -> None:
        image[1:3, 4:7, 5:9] = np.nan  # 2 slices x 3 x 4 = 24 voxels

    edit_h5(bad, "image", nan_block)
    adapter = ACDCDataset(acdc_root)
    assert counts(check_dataset(adapter, ("train", "val"))) == {"train": (2, 6), "val": (2, 6)}
    with pytest.raises(DataError) as caught:
        check_dataset(adapter)
    message = str(caught.value)
    assert message.startswith(f"{bad}: field 'image'")
    assert "24 non-finite voxel(s) (24 NaN, 0 Inf) in slice(s) 1, 2 of 3" in message
    assert "first at (z, y, x) = (1, 4, 5)" in message and "expected finite" in message
    assert isinstance(caught.value, ValueError)


def test_inf_in_a_training_slice_names_the_file_also_when_served_from_the_cache(
    acdc_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = acdc_root / "data" / "slices" / "patient002_frame02_slice_1.h5"

    def inf_pixels(image: np.ndarray) -> None:
        image[2, 3:8] = np.inf  # 5 pixels

    edit_h5(bad, "image", inf_pixels)
    with pytest.raises(DataError) as caught:
        check_dataset(ACDCDataset(acdc_root), ("train",))
    assert str(caught.value).startswith(f"{bad}: field 'image' has 5 non-finite voxel(s) (0 NaN, 5 Inf)")
    assert "first at (y, x) = (2, 3)" in str(caught.value)

    def no_decoding(self):
        raise AssertionError("the second check should read the Arrow cache, not the h5 files")

    monkeypatch.setattr(ACDCDataset, "decode_training_slices", no_decoding)
    with pytest.raises(DataError, match=f"^{bad}: field 'image' has 5 non-finite"):
        check_dataset(ACDCDataset(acdc_root), ("train",))


def test_patch_size_checks_the_slices_training_reads(acdc_root: Path) -> None:
    bad = acdc_root / "data" / "slices" / "patient001_frame01_slice_2.h5"
    edit_h5(bad, "image", lambda image: image.__setitem__((0, 0), np.nan))
    with pytest.raises(DataError, match=r"\(as read for training at 8x8\): field 'image' has \d+ non-finite"):
        check_dataset(ACDCDataset(acdc_root), ("train",), patch_size=(8, 8))


def test_label_out_of_range_in_an_acdc_val_volume_names_the_file_and_values(acdc_root: Path) -> None:
    bad = acdc_root / "data" / "patient003_frame02.h5"
    edit_h5(bad, "label", lambda label: label.__setitem__((2, 0, 0), 7))
    with pytest.raises(DataError) as caught:
        check_dataset(ACDCDataset(acdc_root), ("val",))
    message = str(caught.value)
    assert str(bad) in message and "'label'" in message and "7" in message and "0..3" in message
    assert "val split, the case after 'patient003_frame01'" in message


def test_truncated_val_volume_is_named_before_training(acdc_root: Path) -> None:
    bad = acdc_root / "data" / "patient003_frame01.h5"
    content = bad.read_bytes()
    bad.write_bytes(content[: len(content) // 2])
    adapter = ACDCDataset(acdc_root)  # only checks that listed files exist
    with pytest.raises(DataError) as caught:
        check_dataset(adapter)
    assert str(bad) in str(caught.value) and "val split, its first case" in str(caught.value)


def test_damaged_compressed_data_in_an_h5_file_is_named(tmp_path: Path) -> None:
    """A file of full length whose compressed chunk is overwritten opens fine and fails on reading."""
    root = write_acdc(tmp_path / "acdc")
    bad = root / "data" / "patient004_frame02.h5"
    noise = np.random.default_rng(0).random((DEPTH, 64, 64)).astype(np.float32)  # incompressible: chunks fill the file
    write_h5(bad, noise, np.zeros(noise.shape, np.uint8))
    content = bytearray(bad.read_bytes())
    middle = len(content) // 2
    content[middle : middle + 4096] = bytes(4096)
    bad.write_bytes(bytes(content))
    with pytest.raises(DataError, match=f"{bad}.*unreadable 'image'/'label' data"):
        check_dataset(ACDCDataset(root), ("test",))


# --------------------------------------------------------------------------------- folder layout

def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_folder(root: Path, per_split: dict[str, int]) -> Path:
    """A pre-split folder dataset of 32x32 grey PNGs with 0/255 masks."""
    for split_index, (split, count) in enumerate(per_split.items()):
        for number in range(count):
            rng = np.random.default_rng(100 * split_index + number)
            mask = np.zeros((32, 32), np.uint8)
            mask[8:20, 10:24] = 255
            write_png(root / split / "images" / f"case{number}.png", (rng.random((32, 32)) * 200).astype(np.uint8))
            write_png(root / split / "masks" / f"case{number}.png", mask)
    return root


def truncate(path: Path) -> None:
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "folder", {"train": 3, "val": 1, "test": 2})


def test_clean_folder_dataset_passes_and_is_counted(folder_root: Path) -> None:
    assert counts(check_dataset(FolderDataset(folder_root))) == {"train": (3, 3), "val": (1, 1), "test": (2, 2)}


def test_truncated_test_png_is_a_data_error_naming_it(folder_root: Path) -> None:
    bad = folder_root / "test" / "images" / "case1.png"
    truncate(bad)
    adapter = FolderDataset(folder_root)  # reads only the image header at construction
    with pytest.raises(DataError) as caught:
        check_dataset(adapter)
    assert f"{bad}: not a readable image, truncated or corrupt" in str(caught.value)
    assert "test split, the case after 'case0'" in str(caught.value)


# ------------------------------------------------------------------------- in-memory adapter

class MemoryAdapter(DatasetAdapter):
    """Slices and cases handed in as arrays, the way a plug-in adapter could yield them."""

    name = "memory"
    class_names = ("liver", "tumour")

    def __init__(self, train: list[TrainingSlice], cases: dict[str, list[Case]]) -> None:
        super().__init__(None)
        self.train = train
        self.cases = cases
        self.reads = {"train": 0, "val": 0, "test": 0}

    def train_case_ids(self) -> list[str]:
        return list(dict.fromkeys(item.case_id for item in self.train))

    def train_slices(self, patch_size=None) -> list[TrainingSlice]:
        self.reads["train"] += 1
        return self.train

    def eval_cases(self, split: str) -> Iterator[Case]:
        self.reads[split] += 1
        return iter(self.cases[split])


def clean_memory_adapter() -> MemoryAdapter:
    label = np.zeros((2, 6, 6), np.uint8)
    label[:, 1:3, 1:3], label[:, 3:5, 3:5] = 1, 2
    image = np.linspace(0, 1, label.size, dtype=np.float32).reshape(label.shape)
    train = [TrainingSlice(f"train{number}", image[0].copy(), label[0].copy(), source=f"/data/train{number}.h5")
             for number in range(3)]
    cases = {split: [Case(f"{split}{number}", image.copy(), label.copy(), split, source=f"/data/{split}{number}.h5")
                     for number in range(2)] for split in ("val", "test")}
    return MemoryAdapter(train, cases)


def test_label_values_outside_the_classes_in_a_val_case_are_named() -> None:
    adapter = clean_memory_adapter()
    case = adapter.cases["val"][1]
    case.label[1, 0, 0:3] = 5  # 3 voxels
    case.label[1, 5, 5] = 9  # 1 voxel
    with pytest.raises(DataError) as caught:
        check_dataset(adapter)
    assert str(caught.value) == ("/data/val1.h5: field 'label' has value(s) 5, 9 in 4 voxel(s) in slice(s) 1 of 2; "
                                 "expected integers in 0..2 (0 background, 1 liver, 2 tumour)")


def test_image_and_label_shapes_must_agree() -> None:
    adapter = clean_memory_adapter()
    adapter.train[1] = TrainingSlice("train1", np.zeros((6, 6), np.float32), np.zeros((6, 5), np.uint8),
                                     source="/data/train1.h5")
    with pytest.raises(DataError, match=r"^/data/train1.h5: field 'label' has shape \(6, 5\); expected the 'image' "
                                        r"shape \(6, 6\)$"):
        check_dataset(adapter)


def test_nan_in_a_case_without_a_file_names_dataset_and_case() -> None:
    adapter = clean_memory_adapter()
    adapter.cases["test"][0].source = None
    adapter.cases["test"][0].image[0, 2, 3] = np.nan
    with pytest.raises(DataError, match=r"^memory test case 'test0': field 'image' has 1 non-finite voxel\(s\) "
                                        r"\(1 NaN, 0 Inf\) in slice\(s\) 0 of 2"):
        check_dataset(adapter)


def test_an_empty_split_is_refused() -> None:
    adapter = clean_memory_adapter()
    adapter.cases["test"] = []
    with pytest.raises(DataError, match="^memory test split: no cases; expected at least one$"):
        check_dataset(adapter)
    adapter = clean_memory_adapter()  # the first one remembers that its train split passed
    adapter.train = []
    with pytest.raises(DataError, match="^memory train split: no training slices"):
        check_dataset(adapter, ("train",))


def test_a_training_case_without_slices_is_refused() -> None:
    adapter = clean_memory_adapter()
    adapter.train_case_ids = lambda: ["train0", "train1", "train2", "train7"]
    with pytest.raises(DataError, match=r"^memory train split: training case\(s\) train7 have no slice"):
        check_dataset(adapter, ("train",))


def test_a_split_that_passed_is_not_read_again_for_the_same_adapter() -> None:
    adapter = clean_memory_adapter()
    first = check_dataset(adapter)
    second = check_dataset(adapter)
    assert counts(second) == counts(first) == {"train": (3, 3), "val": (2, 4), "test": (2, 4)}
    assert adapter.reads == {"train": 1, "val": 1, "test": 1}
    other = clean_memory_adapter()
    other.cases["val"][0].image[0, 0, 0] = np.inf
    with pytest.raises(DataError):
        check_dataset(other)  # a new adapter is checked afresh


def test_unknown_split_is_refused() -> None:
    with pytest.raises(ValueError, match="split"):
        check_dataset(clean_memory_adapter(), ("train", "validation"))


# ------------------------------------------------------------------------------ the command

def test_command_prints_a_table_and_exits_0_when_clean(folder_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "check", "--dataset", "folder", "--data-root", str(folder_root)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows == [["split", "cases", "slices", "status"], ["train", "3", "3", "ok"], ["val", "1", "1", "ok"],
                    ["test", "2", "2", "ok"]]


def test_command_exits_2_naming_the_bad_file(folder_root: Path, capsys: pytest.CaptureFixture) -> None:
    bad = folder_root / "test" / "images" / "case0.png"
    truncate(bad)
    assert main(["data", "check", "--dataset", "folder", "--data-root", str(folder_root)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("bench: error: folder test split, its first case: could not be read: "
                                   f"{bad}: not a readable image")
    assert [line.split() for line in captured.out.splitlines()[-2:]] == [["val", "1", "1", "ok"],
                                                                         ["test", "-", "-", "FAILED"]]


def test_command_names_a_truncated_mask_read_when_the_adapter_is_built(
    folder_root: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = folder_root / "val" / "masks" / "case0.png"
    truncate(bad)
    assert main(["data", "check", "--dataset", "folder", "--data-root", str(folder_root)]) == 2
    assert f"bench: error: {bad}: not a readable image" in capsys.readouterr().err


def test_command_splits_options_and_data_root_from_the_environment(
    acdc_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("BENCH_DATA_ROOT", str(acdc_root.parent))
    assert main(["data", "check", "--dataset", "acdc", "--dataset-option", "cache=false", "--splits", "test,val"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"acdc: {acdc_root}"
    assert [line.split() for line in out[2:]] == [["test", "4", "12", "ok"], ["val", "2", "6", "ok"]]
    assert main(["data", "check", "--dataset", "acdc", "--splits", "val,valid"]) == 2
    assert "--splits 'val,valid'" in capsys.readouterr().err
    assert main(["data", "check", "--dataset", "acdc", "--dataset-option", "colour=red"]) == 2
    assert "unknown dataset option(s) ['colour']" in capsys.readouterr().err


# ------------------------------------------------------------------------------- real ACDC

def test_real_acdc_val_and_test_pass_with_the_listed_volumes() -> None:
    root = real_data_root("acdc")
    expected = {}
    for split in ("val", "test"):
        stems = [line.strip() for line in (root / f"{split}.list").read_text().splitlines() if line.strip()]
        depths = []
        for stem in stems:
            with h5py.File(root / "data" / f"{stem}.h5", "r") as handle:
                depths.append(handle["image"].shape[0])
        expected[split] = (len(stems), sum(depths))
    assert expected["val"][0] == 20 and expected["test"][0] == 40  # the SSL4MIS split (README)
    assert counts(check_dataset(ACDCDataset(root), ("val", "test"))) == expected
