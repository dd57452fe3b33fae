"""The generic folder adapter: layouts, class values, domains, NIfTI grids, and errors naming the file."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.data.folder import FolderDataset

SIZE = (12, 16)  # H, W


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def three_class_mask(seed: int) -> np.ndarray:
    """Background 0, a 128 block and a 255 block at seed-dependent places."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(SIZE, dtype=np.uint8)
    top, left = rng.integers(0, 4, size=2)
    mask[top : top + 4, left : left + 5] = 128
    mask[top + 6 : top + 8, left + 6 : left + 10] = 255
    return mask


def write_pool(root: Path, per_domain: int = 10, domains: tuple[str, ...] = ("siteA", "siteB")) -> Path:
    for domain_index, domain in enumerate(domains):
        for number in range(per_domain):
            seed = 100 * domain_index + number
            mask = three_class_mask(seed)
            image = (np.random.default_rng(seed).random(SIZE) * 50 + mask * 0.5).astype(np.uint8)
            write_png(root / "images" / domain / f"case{number}.png", image)
            write_png(root / "masks" / domain / f"case{number}.png", mask)
    return root


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    return write_pool(tmp_path / "pool")


def first_train_case(adapter: FolderDataset):
    return next(s for s in adapter.train_slices() if s.case_id == adapter.train_case_ids()[0])


def test_pool_is_split_70_10_20_per_domain_deterministically(pool):
    adapter = FolderDataset(pool)
    assert {name: len(pairs) for name, pairs in adapter.pairs.items()} == {"train": 14, "val": 2, "test": 4}
    for split in ("train", "val", "test"):
        domains = [pair.domain for pair in adapter.pairs[split]]
        assert domains.count("siteA") == domains.count("siteB")
    assert FolderDataset(pool).pairs == adapter.pairs
    assert FolderDataset(pool, split_seed="1").pairs != adapter.pairs
    ids = [pair.case_id for pairs in adapter.pairs.values() for pair in pairs]
    assert len(set(ids)) == 20 and adapter.case_domains()[adapter.train_case_ids()[0]] in ("siteA", "siteB")


def test_classes_are_the_masks_sorted_values_mapped_to_indices(pool):
    adapter = FolderDataset(pool)
    assert adapter.classes.values == (0, 128, 255) and adapter.class_names == ("value128", "value255")
    assert adapter.num_classes == 3
    sample = first_train_case(adapter)
    stored = np.asarray(Image.open(pool / "masks" / f"{sample.case_id}.png"))
    expected = np.select([stored == 128, stored == 255], [1, 2], 0)
    np.testing.assert_array_equal(sample.label, expected)
    image = np.asarray(Image.open(pool / "images" / f"{sample.case_id}.png")) / 255.0
    np.testing.assert_allclose(sample.image, image, atol=1e-6)


def test_declared_classes_set_order_and_names(pool):
    adapter = FolderDataset(pool, classes="0,255,128", class_names="vessel,tumour")
    assert adapter.class_names == ("vessel", "tumour")
    sample = first_train_case(adapter)
    stored = np.asarray(Image.open(pool / "masks" / f"{sample.case_id}.png"))
    np.testing.assert_array_equal(sample.label, np.select([stored == 255, stored == 128], [1, 2], 0))
    with pytest.raises(ValueError, match="class_names"):
        FolderDataset(pool, class_names="only_one")


def test_values_outside_declared_classes_name_the_file(pool):
    with pytest.raises(ValueError, match=r"masks/site[AB]/case\d\.png: mask values \[128\] are outside"):
        FolderDataset(pool, classes="0,255")


def test_presplit_layout_and_mask_suffix(tmp_path):
    root = tmp_path / "presplit"
    for split, count in (("train", 3), ("val", 1), ("test", 2)):
        for number in range(count):
            write_png(root / split / "images" / f"{split}{number}.jpg", np.full(SIZE, 90, np.uint8))
            write_png(root / split / "masks" / f"{split}{number}_mask.png", three_class_mask(number))
    adapter = FolderDataset(root, mask_suffix="_mask")
    assert adapter.train_case_ids() == ["train0", "train1", "train2"]
    assert [case.case_id for case in adapter.eval_cases("test")] == ["test0", "test1"]
    assert adapter.protocol()["split"] == "train/ val/ test/ sub-folders"


def test_nifti_volume_keeps_its_grid_and_spacing(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    root = tmp_path / "volumes"
    for number in range(10):
        width, height, depth = 9, 7, 3
        data = np.zeros((width, height, depth), dtype=np.int16)
        data[:, :, :] = np.arange(width)[:, None, None] * 100 + np.arange(height)[None, :, None] * 10 + np.arange(depth)
        mask = np.zeros((width, height, depth), dtype=np.uint8)
        mask[2:5, 1:3, 1] = 1
        affine = np.diag([0.5, 0.75, 4.0, 1.0])
        for sub, array in (("images", data), ("masks", mask)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            nibabel.save(nibabel.Nifti1Image(array, affine), str(root / sub / f"vol{number}.nii.gz"))
    adapter = FolderDataset(root)
    case = next(adapter.eval_cases("test"))
    assert case.image.shape == (3, 7, 9) and case.spacing == (4.0, 0.75, 0.5)
    raw = data.astype(np.float32)
    expected = ((raw - raw.min()) / (raw.max() - raw.min())).transpose(2, 1, 0)  # [z, y, x], min-max per volume
    np.testing.assert_allclose(case.image, expected, atol=1e-6)
    assert case.label[1, 1:3, 2:5].all() and case.label.sum() == 6
    slices = adapter.train_slices()
    assert len(slices) == 3 * len(adapter.train_case_ids()) and slices[0].image.shape == (7, 9)


def test_size_mismatch_names_both_files(pool):
    write_png(pool / "masks" / "siteA" / "case3.png", np.zeros((SIZE[0] + 1, SIZE[1]), np.uint8))
    with pytest.raises(ValueError, match=r"images/siteA/case3\.png is 16x12 but its mask .*masks/siteA/case3\.png is 16x13"):
        FolderDataset(pool)


def test_orphans_are_named(pool):
    write_png(pool / "masks" / "siteA" / "stray.png", np.zeros(SIZE, np.uint8))
    with pytest.raises(ValueError, match=r"no matching image in .*pool/images for: .*masks/siteA/stray\.png"):
        FolderDataset(pool)
    (pool / "masks" / "siteA" / "stray.png").unlink()
    (pool / "masks" / "siteB" / "case4.png").unlink()
    with pytest.raises(ValueError, match=r"no matching mask in .*pool/masks for: .*images/siteB/case4\.png"):
        FolderDataset(pool)


def test_empty_split_is_named(tmp_path):
    root = tmp_path / "presplit"
    for split in ("train", "val", "test"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        if split != "val":
            write_png(root / split / "images" / "a.png", np.zeros(SIZE, np.uint8))
            write_png(root / split / "masks" / "a.png", three_class_mask(0))
    with pytest.raises(ValueError, match=r"presplit/val/images: no images found"):
        FolderDataset(root)
    small_pool = write_pool(tmp_path / "small", per_domain=3, domains=("only",))
    with pytest.raises(ValueError, match="the val split is empty"):
        FolderDataset(small_pool)


def test_colour_masks_unknown_files_and_missing_root_are_refused(pool, tmp_path):
    colour = np.zeros(SIZE + (3,), np.uint8)
    colour[..., 0] = 255
    write_png(pool / "masks" / "siteA" / "case0.png", colour)
    with pytest.raises(ValueError, match=r"masks/siteA/case0\.png: colour mask"):
        FolderDataset(pool)
    (pool / "images" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"images/notes\.txt: unsupported file type"):
        FolderDataset(pool)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FolderDataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown option"):
        FolderDataset(pool, clases="0,1")


def test_smoke_run_through_the_cli(pool, tmp_path, smoke_args):
    out = tmp_path / "runs"
    assert main(["run", "--methods", "supervised", "--dataset", "folder", "--data-root", str(pool), "--labels", "2",
                 "--dataset-option", "class_names=liver,tumour", "--seeds", "1", "--out", str(out), *smoke_args]) == 0
    summary = json.loads(next(out.rglob("summary.json")).read_text())
    assert math.isfinite(summary["metrics"]["dice"]) and "dice_tumour" in summary["metrics"]
    assert summary["dataset_protocol"]["mask_values"] == [0, 128, 255]
