"""The BUSI adapter: the paper split per class, merged masks, grey conversion, clear errors; on a tiny
tree written here, and on the real data when ``BENCH_DATA_ROOT`` is set."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.data.busi import BUSIDataset, load_busi_case
from bench.data.folder import stratified_split
from bench.data.label_budget import LabelBudget, select_labeled_cases
from conftest import real_data_root

SIZE = (30, 40)  # H, W: deliberately not square and not the patch size


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def lesion_mask(top: int, left: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    mask = np.zeros(size, dtype=np.uint8)
    mask[top : top + 6, left : left + 8] = 255
    return mask


def write_busi_tree(root: Path, benign: int = 10, malignant: int = 5, normal: int = 0) -> Path:
    """``root/Dataset_BUSI_with_GT/<class>/<class> (N).png`` + ``_mask.png``, grey images with a bright lesion."""
    rng = np.random.default_rng(0)
    for category, count in (("benign", benign), ("malignant", malignant), ("normal", normal)):
        for number in range(1, count + 1):
            mask = lesion_mask(*rng.integers(2, 20, size=2)) if category != "normal" else np.zeros(SIZE, np.uint8)
            image = (rng.random(SIZE) * 60 + (mask > 0) * 150).astype(np.uint8)
            folder = root / "Dataset_BUSI_with_GT" / category
            write_png(folder / f"{category} ({number}).png", image)
            write_png(folder / f"{category} ({number})_mask.png", mask)
    return root


@pytest.fixture
def busi_root(tmp_path: Path) -> Path:
    return write_busi_tree(tmp_path / "busi")


def test_paper_proportions_give_the_documented_counts_per_class():
    groups = {"benign": [f"benign ({n})" for n in range(1, 438)], "malignant": [f"malignant ({n})" for n in range(1, 211)]}
    fractions = {"train": 431 / 647, "val": 86 / 647, "test": 130 / 647}
    split = stratified_split(groups, fractions, seed=0)
    counts = {name: {group: sum(case.startswith(group) for case in ids) for group in groups} for name, ids in split.items()}
    assert counts == {"train": {"benign": 291, "malignant": 140}, "val": {"benign": 58, "malignant": 28},
                      "test": {"benign": 88, "malignant": 42}}
    every = [case for ids in split.values() for case in ids]
    assert sorted(every) == sorted(groups["benign"] + groups["malignant"])  # a partition: nothing lost or doubled


def test_split_is_stratified_deterministic_and_seed_dependent(busi_root):
    first, again = BUSIDataset(busi_root), BUSIDataset(busi_root)
    assert first.split == again.split
    assert first.split_counts() == {"benign": {"train": 7, "val": 1, "test": 2}, "malignant": {"train": 3, "val": 1, "test": 1}}
    other = BUSIDataset(busi_root, split_seed="3")
    assert other.split != first.split
    assert set(first.case_domains().values()) == {"benign", "malignant"}
    assert all(first.case_domains()[case_id] == case_id.split(" ")[0] for case_id in first.train_case_ids())


def test_multiple_masks_are_or_merged_and_rgb_becomes_luma(tmp_path):
    root = write_busi_tree(tmp_path / "busi", benign=6, malignant=3)
    folder = root / "Dataset_BUSI_with_GT" / "malignant"
    colour = np.zeros(SIZE + (3,), dtype=np.uint8)
    colour[..., 0], colour[..., 1], colour[..., 2] = 200, 100, 50
    write_png(folder / "malignant (1).png", colour)
    second = lesion_mask(20, 30)
    write_png(folder / "malignant (1)_mask_1.png", second)
    first = np.asarray(Image.open(folder / "malignant (1)_mask.png"))
    adapter = BUSIDataset(root)
    split = next(name for name, ids in adapter.split.items() if "malignant (1)" in ids)
    if split == "train":
        case = next(s for s in adapter.train_slices() if s.case_id == "malignant (1)")
        image, label = case.image, case.label
    else:
        case = next(c for c in adapter.eval_cases(split) if c.case_id == "malignant (1)")
        image, label = case.image[0], case.label[0]
    np.testing.assert_array_equal(label, ((first > 0) | (second > 0)).astype(np.uint8))
    luma = (200 * 299 + 100 * 587 + 50 * 114) / 1000 / 255  # ITU-R 601-2
    assert image.shape == SIZE and image.dtype == np.float32
    assert np.allclose(image, luma, atol=1 / 255)


def test_eval_cases_keep_native_size_and_have_no_spacing(busi_root):
    case = next(BUSIDataset(busi_root).eval_cases("test"))
    assert case.image.shape == (1,) + SIZE and case.spacing is None
    assert set(np.unique(case.label)) <= {0, 1} and 0.0 <= case.image.min() and case.image.max() <= 1.0


def test_normal_is_excluded_unless_asked_for(tmp_path):
    root = write_busi_tree(tmp_path / "busi", benign=6, malignant=6, normal=6)
    assert not any(case_id.startswith("normal") for ids in BUSIDataset(root).split.values() for case_id in ids)
    with_normal = BUSIDataset(root, include_normal="true")
    assert set(with_normal.case_domains().values()) == {"benign", "malignant", "normal"}


def test_label_budgets_are_counts_or_fractions_of_the_training_images(busi_root):
    adapter = BUSIDataset(busi_root)
    ids = adapter.train_case_ids()
    assert adapter.default_labels == ("10", "20") and adapter.default_label_selection == "random"
    two = select_labeled_cases(ids, LabelBudget.parse("2"), seed=0, selection="random")
    assert len(two) == 2 and two == select_labeled_cases(ids, LabelBudget.parse("2"), seed=0, selection="random")
    assert len(select_labeled_cases(ids, LabelBudget.parse("1/4"), seed=0, selection="random")) == round(len(ids) / 4)


def test_missing_root_says_where_it_looked(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        BUSIDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="Dataset_BUSI_with_GT"):
        BUSIDataset(tmp_path / "empty")
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="BENCH_DATA_ROOT"):
        BUSIDataset(None)


def test_image_without_mask_and_mask_without_image_are_named(busi_root):
    folder = busi_root / "Dataset_BUSI_with_GT" / "benign"
    (folder / "benign (2)_mask.png").unlink()
    with pytest.raises(ValueError, match=r"benign \(2\)\.png: image without a mask"):
        BUSIDataset(busi_root)
    write_png(folder / "benign (2)_mask.png", lesion_mask(3, 3))
    write_png(folder / "benign (99)_mask.png", lesion_mask(3, 3))
    with pytest.raises(ValueError, match=r"benign \(99\)_mask\.png: mask without an image"):
        BUSIDataset(busi_root)


def test_mask_of_another_size_is_named(busi_root):
    folder = busi_root / "Dataset_BUSI_with_GT" / "benign"
    write_png(folder / "benign (1)_mask.png", lesion_mask(2, 2, size=(31, 40)))
    adapter = BUSIDataset(busi_root)
    split = next(name for name, ids in adapter.split.items() if "benign (1)" in ids)
    with pytest.raises(ValueError, match=r"benign \(1\)_mask\.png is 40x31 but its image .*benign \(1\)\.png is 40x30"):
        adapter.train_slices() if split == "train" else list(adapter.eval_cases(split))


def test_unknown_option_is_refused(busi_root):
    with pytest.raises(ValueError, match="include_norml"):
        BUSIDataset(busi_root, include_norml="true")


def test_smoke_run_on_a_tiny_tree(busi_root, tmp_path, smoke_args):
    out = tmp_path / "runs"
    assert main(["run", "--methods", "supervised", "--dataset", "busi", "--data-root", str(busi_root), "--labels", "2",
                 "--seeds", "1", "--out", str(out), *smoke_args]) == 0
    summary_path = next(out.rglob("summary.json"))
    summary = json.loads(summary_path.read_text())
    # smoke scores the first 2 of the 3 test images
    assert math.isfinite(summary["metrics"]["dice"]) and summary["num_test_cases"] == 2
    assert summary["distance_unit"] == ["voxel"] and summary["dataset_protocol"]["split_counts"]["malignant"]["test"] == 1
    first_two = [case.case_id for case in BUSIDataset(busi_root).eval_cases("test")][:2]
    scored = [line.split(",")[0] for line in (summary_path.parent / "per_case.csv").read_text().splitlines()[1:]]
    assert scored == first_two


def test_real_busi_split_counts_and_merged_masks():
    root = real_data_root("busi")
    adapter = BUSIDataset(root)
    assert adapter.split_counts() == {"benign": {"train": 291, "val": 58, "test": 88},
                                      "malignant": {"train": 140, "val": 28, "test": 42}}
    assert len(adapter.train_case_ids()) == 431
    multi = sorted((entry for entry in adapter.entries.values() if len(entry.masks) > 1), key=lambda e: e.case_id)
    assert multi, "the README lists multi-lesion images with _mask_1.png files"
    entry = multi[0]
    case = load_busi_case(entry, "test")
    union = np.zeros(case.label.shape[1:], dtype=bool)
    for path in entry.masks:
        union |= np.asarray(Image.open(path).convert("L")) > 0
    np.testing.assert_array_equal(case.label[0], union.astype(np.uint8))
    rgb = next(entry for entry in adapter.entries.values() if Image.open(entry.image).mode == "RGB")
    assert load_busi_case(rgb, "test").image.ndim == 3
