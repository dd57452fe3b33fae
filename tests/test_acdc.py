"""The ``acdc`` adapter (SSL4MIS layout, patients as cases, clear errors) and the ACDC evaluation
protocol checked on the real data: ground truth against itself, a known perturbation against an
independent computation, and the ground truth sent through the patch-size round trip."""
from __future__ import annotations

import json
import math
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from bench.cli import main
from bench.data.acdc import SSL4MIS_PATIENTS_TO_SLICES, ACDCDataset
from bench.data.label_budget import LabelBudget, select_labeled_cases
from bench.evaluation import predict_case, score_cases
from bench.metrics import score_binary, score_case
from conftest import real_data_root

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------------- fake layouts

def write_pair(path: Path, image: np.ndarray, label: np.ndarray, **attrs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("image", data=image)
        handle.create_dataset("label", data=label)
        for key, value in attrs.items():
            handle.attrs[key] = value


def phantom(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An image with the three classes as nested discs, so every class is present."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(shape[-2:])
    radius = np.hypot(rows - shape[-2] / 2, cols - shape[-1] / 2)
    label2d = np.select([radius < 4, radius < 6, radius < 9], [3, 2, 1], 0).astype(np.uint8)
    label = np.broadcast_to(label2d, shape).copy()
    image = (label / 3.0 + 0.1 * rng.random(shape)).astype(np.float32)
    return image, label


def write_layout(root: Path, train: dict[str, int], val: list[str], test: list[str], flat: bool = False,
                 size: tuple[int, int] = (24, 20)) -> Path:
    """An SSL4MIS folder: ``train`` maps patient -> slices per frame (frames 01 and 02)."""
    slice_dir = root / "data" if flat else root / "data" / "slices"
    slice_stems = []
    for seed, (patient, per_frame) in enumerate(train.items()):
        for frame in ("frame01", "frame02"):
            for index in range(1, per_frame + 1):
                stem = f"{patient}_{frame}_slice_{index}"
                write_pair(slice_dir / f"{stem}.h5", *phantom(size, seed * 100 + index))
                slice_stems.append(stem)
    (root / "train_slices.list").write_text("\n".join(slice_stems) + "\n")
    for split, patients in (("val", val), ("test", test)):
        stems = [f"{patient}_{frame}" for patient in patients for frame in ("frame01", "frame02")]
        for seed, stem in enumerate(stems):
            write_pair(root / "data" / f"{stem}.h5", *phantom((3, *size), seed))
        (root / f"{split}.list").write_text("\n".join(stems) + "\n")
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    return write_layout(tmp_path / "acdc", {"patient009": 2, "patient003": 3, "patient005": 1},
                        val=["patient002"], test=["patient001", "patient004"])


# ------------------------------------------------------------------------------ adapter contract

@pytest.mark.parametrize("flat", [False, True], ids=["data/slices", "flat data/"])
def test_cases_are_patients_in_list_order(tmp_path: Path, flat: bool) -> None:
    root = write_layout(tmp_path / "acdc", {"patient009": 2, "patient003": 3, "patient005": 1},
                        val=["patient002"], test=["patient001"], flat=flat)
    adapter = ACDCDataset(root)
    assert adapter.train_case_ids() == ["patient009", "patient003", "patient005"]
    slices = adapter.train_slices()
    assert [s.case_id for s in slices] == ["patient009"] * 4 + ["patient003"] * 6 + ["patient005"] * 2
    assert [adapter.labeled_slice_count(n) for n in (1, 2, 3)] == [4, 10, 12]
    assert slices[0].image.shape == (24, 20) and slices[0].label.dtype == np.uint8
    # Both frames of a labeled patient are labeled: the selection is by patient, never by slice.
    labeled = select_labeled_cases(adapter.train_case_ids(), LabelBudget.parse("1"), seed=0, selection="first")
    assert labeled == ["patient009"]


def test_slices_match_the_h5_files_and_patch_size_resizes(fake_root: Path) -> None:
    adapter = ACDCDataset(fake_root)
    with h5py.File(fake_root / "data" / "slices" / "patient003_frame02_slice_2.h5") as handle:
        image, label = handle["image"][()], handle["label"][()]
    native = adapter.train_slices()
    np.testing.assert_array_equal(native[8].image, image)
    np.testing.assert_array_equal(native[8].label, label)
    resized = adapter.train_slices(patch_size=16)
    assert {s.image.shape for s in resized} == {(16, 16)} and len(resized) == len(native)
    assert set(np.unique(resized[8].label)) <= set(np.unique(label))
    # A second adapter (a second run) reads the cache: same arrays.
    again = ACDCDataset(fake_root).train_slices(patch_size=16)
    for first, second in zip(resized, again):
        np.testing.assert_array_equal(first.image, second.image)
        np.testing.assert_array_equal(first.label, second.label)


def test_dataset_options_from_the_command_line(fake_root: Path, tmp_path: Path) -> None:
    resized = ACDCDataset(fake_root, patch_size="16x12", cache="false").train_slices()
    assert {s.image.shape for s in resized} == {(16, 12)}
    assert not (tmp_path / "cache").exists()  # cache=false writes nothing
    with pytest.raises(ValueError, match=r"unknown dataset option\(s\) \['patchsize'\]"):
        ACDCDataset(fake_root, patchsize=16)
    with pytest.raises(ValueError, match="cache='maybe'"):
        ACDCDataset(fake_root, cache="maybe")


def test_eval_cases_are_volumes_read_lazily_with_spacing_when_stored(fake_root: Path) -> None:
    with h5py.File(fake_root / "data" / "patient004_frame01.h5", "a") as handle:
        handle.attrs["spacing"] = [10.0, 1.5, 1.25]
    adapter = ACDCDataset(fake_root)
    cases = adapter.eval_cases("test")
    assert isinstance(cases, types.GeneratorType)
    cases = list(cases)
    assert [c.case_id for c in cases] == ["patient001_frame01", "patient001_frame02",
                                          "patient004_frame01", "patient004_frame02"]
    assert cases[0].image.shape == (3, 24, 20) and cases[0].split == "test"
    assert cases[2].spacing == (10.0, 1.5, 1.25) and cases[0].spacing is None
    assert [c.case_id for c in adapter.eval_cases("val")] == ["patient002_frame01", "patient002_frame02"]
    with pytest.raises(ValueError, match="split 'train'"):
        adapter.eval_cases("train")


def test_protocol_and_defaults() -> None:
    assert ACDCDataset.class_names == ("RV", "MYO", "LV")
    assert ACDCDataset.default_labels == ("1", "3", "7")
    assert ACDCDataset.default_label_selection == "first"


# ---------------------------------------------------------------------------------- bad inputs

def test_no_data_root_says_where_it_looked_and_how_to_get_acdc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="BENCH_DATA_ROOT is not set") as error:
        ACDCDataset(None)
    assert "bench data prepare acdc --raw" in str(error.value) and "SSL4MIS" in str(error.value)


def test_missing_data_root_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        ACDCDataset(tmp_path / "nowhere")


def test_missing_list_names_the_list(fake_root: Path) -> None:
    (fake_root / "test.list").unlink()
    with pytest.raises(FileNotFoundError, match=str(fake_root / "test.list")):
        ACDCDataset(fake_root)


def test_list_naming_a_missing_file_names_both(fake_root: Path) -> None:
    (fake_root / "data" / "patient004_frame02.h5").unlink()
    with pytest.raises(FileNotFoundError) as error:
        ACDCDataset(fake_root)
    assert str(fake_root / "test.list") in str(error.value)
    assert str(fake_root / "data" / "patient004_frame02.h5") in str(error.value)


def test_malformed_list_line_names_the_line(fake_root: Path) -> None:
    (fake_root / "val.list").write_text("patient002_frame01\nnot a stem\n")
    with pytest.raises(ValueError, match=r"val.list line 2: 'not a stem'"):
        ACDCDataset(fake_root)


@pytest.mark.parametrize(
    "corruption, message",
    [
        ("no_label", "has no 'label' dataset"),
        ("no_image", "has no 'image' dataset"),
        ("shape_mismatch", r"'image' shape \(24, 20\) != 'label' shape \(24, 19\)"),
        ("label_out_of_range", r"'label' has values \[0, 1, 2, 3, 4\]"),
        ("not_hdf5", "is not a readable HDF5 file"),
    ],
)
def test_bad_training_slice_names_the_file(fake_root: Path, corruption: str, message: str) -> None:
    path = fake_root / "data" / "slices" / "patient003_frame01_slice_2.h5"
    image, label = phantom((24, 20), 0)
    if corruption == "no_label":
        path.unlink()
        with h5py.File(path, "w") as handle:
            handle["image"] = image
    elif corruption == "no_image":
        path.unlink()
        with h5py.File(path, "w") as handle:
            handle["label"] = label
    elif corruption == "shape_mismatch":
        write_pair(path, image, label[:, :19])
    elif corruption == "label_out_of_range":
        label[0, 0] = 4
        write_pair(path, image, label)
    else:
        path.write_bytes(b"not hdf5")
    adapter = ACDCDataset(fake_root)
    with pytest.raises(ValueError, match=message) as error:
        adapter.train_slices()
    assert str(path) in str(error.value)


def test_bad_volume_names_the_file(fake_root: Path) -> None:
    path = fake_root / "data" / "patient001_frame02.h5"
    image, label = phantom((3, 24, 20), 0)
    write_pair(path, image, label[:2])
    cases = ACDCDataset(fake_root).eval_cases("test")
    next(cases)
    with pytest.raises(ValueError, match=r"\(3, 24, 20\) != 'label' shape \(2, 24, 20\)") as error:
        next(cases)
    assert str(path) in str(error.value)


def test_bad_spacing_names_the_file(fake_root: Path) -> None:
    path = fake_root / "data" / "patient001_frame01.h5"
    with h5py.File(path, "a") as handle:
        handle.attrs["spacing"] = [1.0, -1.0]
    with pytest.raises(ValueError, match="three positive values") as error:
        next(ACDCDataset(fake_root).eval_cases("test"))
    assert str(path) in str(error.value)


def test_a_smoke_run_on_a_fake_acdc_folder(fake_root: Path, tmp_path: Path, smoke_args: list[str]) -> None:
    out = tmp_path / "runs"
    code = main(["run", "--methods", "supervised", "--dataset", "acdc", "--data-root", str(fake_root),
                 "--labels", "1", "--seeds", "1", "--out", str(out), *smoke_args])
    assert code == 0
    (summary_path,) = out.rglob("summary.json")
    summary = json.loads(summary_path.read_text())
    # smoke scores the first 2 test volumes (of 4), 2 middle slices each
    assert summary["labeled_case_ids"] == ["patient009"] and summary["num_test_cases"] == 2
    assert summary["budget"]["eval_cases"] == 2 and summary["budget"]["eval_slices"] == 2
    assert math.isfinite(summary["metrics"]["dice"])


# ------------------------------------------------------------------------------- the real data

@pytest.fixture(scope="module")
def real_acdc() -> ACDCDataset:
    return ACDCDataset(real_data_root("acdc"))


@pytest.fixture(scope="module")
def real_test_cases(real_acdc: ACDCDataset) -> list:
    wanted = {"patient011_frame01", "patient022_frame02", "patient080_frame01"}
    return [case for case in real_acdc.eval_cases("test") if case.case_id in wanted]


def test_real_split_and_ssl4mis_labeled_slices(real_acdc: ACDCDataset) -> None:
    ids = real_acdc.train_case_ids()
    assert len(ids) == 70 and len(real_acdc.slice_stems) == 1312
    assert len(real_acdc.volume_stems["val"]) == 20 and len(real_acdc.volume_stems["test"]) == 40
    # SSL4MIS labels the first patients_to_slices[N] lines; the first N patients are exactly those lines.
    for patients, slices in SSL4MIS_PATIENTS_TO_SLICES.items():
        assert real_acdc.labeled_slice_count(patients) == slices
        chosen = set(select_labeled_cases(ids, LabelBudget.parse(str(patients)), 0, "first"))
        assert chosen == {real_acdc.patient_of(stem) for stem in real_acdc.slice_stems[:slices]}


def one_hot_oracle(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A perfect model: the ground truth at the patch size, as logits."""
    return torch.nn.functional.one_hot(labels.long(), 4).permute(0, 3, 1, 2).float()


def test_real_ground_truth_against_itself_scores_perfectly(real_test_cases: list) -> None:
    for case in real_test_cases:
        # At the case's own in-plane size no resize happens: the pipeline must give a perfect score.
        (row,) = score_cases(one_hot_oracle, [case], ("RV", "MYO", "LV"), case.image.shape[1:], 16, CPU, "ssl4mis")
        for name in ("RV", "MYO", "LV"):
            assert row[f"dice_{name}"] == 1.0 and row[f"jaccard_{name}"] == 1.0
            assert row[f"hd95_{name}"] == 0.0 and row[f"asd_{name}"] == 0.0


def surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, ndimage.generate_binary_structure(3, 1), border_value=0)


def independent_scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float, float]:
    """Dice, Jaccard, HD95 and ASD from voxel counts and nearest-neighbour queries (no distance transform)."""
    overlap = np.logical_and(pred, truth).sum()
    dice = 2 * overlap / (pred.sum() + truth.sum())
    jaccard = overlap / np.logical_or(pred, truth).sum()
    pred_points, truth_points = np.argwhere(surface(pred)), np.argwhere(surface(truth))
    pred_to_truth = cKDTree(truth_points).query(pred_points)[0]
    truth_to_pred = cKDTree(pred_points).query(truth_points)[0]
    hd95 = np.percentile(np.concatenate([pred_to_truth, truth_to_pred]), 95)
    return float(dice), float(jaccard), float(hd95), float(pred_to_truth.mean())


@pytest.mark.parametrize("perturbation", ["erode_in_plane", "shift_one_column"])
def test_real_perturbed_lv_matches_an_independent_computation(real_test_cases: list, perturbation: str) -> None:
    case = real_test_cases[0]
    truth = case.label == 3
    if perturbation == "erode_in_plane":
        in_plane_cross = np.zeros((3, 3, 3), bool)
        in_plane_cross[1] = ndimage.generate_binary_structure(2, 1)
        pred = ndimage.binary_erosion(truth, in_plane_cross)
    else:
        pred = np.roll(truth, 1, axis=2)
    scores = score_binary(pred, truth, None, "ssl4mis")
    dice, jaccard, hd95, asd = independent_scores(pred, truth)
    assert 0.5 < dice < 0.99
    assert scores.dice == pytest.approx(dice, abs=1e-12)
    assert scores.jaccard == pytest.approx(jaccard, abs=1e-12)
    assert scores.hd95 == pytest.approx(hd95, abs=1e-9)
    assert scores.asd == pytest.approx(asd, abs=1e-9)


def nearest_exact_indices(source: int, target: int) -> np.ndarray:
    """Source index of each target pixel under torch's ``nearest-exact``: floor((i + 0.5) * source / target)."""
    return np.minimum(np.floor((np.arange(target) + 0.5) * source / target).astype(int), source - 1)


@pytest.mark.parametrize("patch", [256, 128])
def test_real_oracle_through_the_patch_round_trip(real_test_cases: list, patch: int) -> None:
    for case in real_test_cases:
        prediction = predict_case(one_hot_oracle, case, (patch, patch), 16, CPU)
        height, width = case.label.shape[1:]
        down_rows, down_cols = nearest_exact_indices(height, patch), nearest_exact_indices(width, patch)
        up_rows, up_cols = nearest_exact_indices(patch, height), nearest_exact_indices(patch, width)
        expected = case.label[:, down_rows[up_rows]][:, :, down_cols[up_cols]]
        np.testing.assert_array_equal(prediction, expected)
        dice = [score.dice for score in score_case(prediction, case.label, 4, None, "ssl4mis").values()]
        if patch >= max(height, width):
            assert dice == [1.0, 1.0, 1.0]  # nearest up then down is the identity
        else:
            assert all(0.8 < value < 1.0 for value in dice)
