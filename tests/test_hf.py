"""The Hugging Face ``datasets`` adapter on tiny datasets written with ``save_to_disk`` (no network)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.data.hf import HuggingFaceDataset

datasets = pytest.importorskip("datasets")

SIZE = (10, 14)  # H, W


def rows(count: int, prefix: str, offset: int = 0) -> dict[str, list]:
    """PIL images (one of them RGB) and 0/1 array masks, with ids and two domains."""
    images, masks = [], []
    for number in range(count):
        mask = np.zeros(SIZE, np.uint8)
        mask[2 + number % 3 : 6 + number % 3, 3:9] = 1
        grey = (mask * 150 + 40 + number).astype(np.uint8)
        images.append(Image.fromarray(np.stack([grey] * 3, -1)) if number == 0 else Image.fromarray(grey))
        masks.append(mask)
    return {"picture": images, "segmentation": masks, "name": [f"{prefix}{offset + n}" for n in range(count)],
            "site": ["north" if n % 2 else "south" for n in range(count)]}


def features() -> "datasets.Features":
    return datasets.Features({"picture": datasets.Image(), "segmentation": datasets.Array2D(SIZE, "uint8"),
                              "name": datasets.Value("string"), "site": datasets.Value("string")})


def save_dict(path: Path, splits: dict[str, int]) -> Path:
    datasets.DatasetDict({
        split: datasets.Dataset.from_dict(rows(count, split), features=features()) for split, count in splits.items()
    }).save_to_disk(str(path))
    return path


COLUMNS = {"image_column": "picture", "mask_column": "segmentation"}


@pytest.fixture(scope="module")
def split_source(tmp_path_factory) -> Path:
    return save_dict(tmp_path_factory.mktemp("hf") / "tiny", {"train": 6, "validation": 2, "test": 3})


def test_named_splits_columns_ids_and_domains(split_source):
    adapter = HuggingFaceDataset(None, source=str(split_source), id_column="name", domain_column="site", **COLUMNS)
    assert adapter.train_case_ids() == [f"train{n}" for n in range(6)]
    assert [case.case_id for case in adapter.eval_cases("val")] == ["validation0", "validation1"]
    assert adapter.class_names == ("value1",) and adapter.num_classes == 2
    assert set(adapter.case_domains().values()) == {"north", "south"}
    case = next(adapter.eval_cases("test"))
    expected_mask = rows(3, "test")["segmentation"][0]
    np.testing.assert_array_equal(case.label[0], expected_mask)
    # Row 0 is RGB with equal channels: luma of a grey triple is that grey, then /255.
    expected_image = (expected_mask * 150 + 40).astype(np.float32) / 255
    np.testing.assert_allclose(case.image[0], expected_image, atol=1e-6)
    assert case.domain == "south" and case.spacing is None


def test_data_root_serves_as_source_and_default_ids(split_source):
    adapter = HuggingFaceDataset(split_source, **COLUMNS)
    assert adapter.train_case_ids()[0] == "train-00000"
    assert adapter.protocol()["source"] == str(split_source)


def test_single_split_is_split_70_10_20_per_domain(tmp_path):
    source = tmp_path / "single"
    datasets.Dataset.from_dict(rows(20, "row"), features=features()).save_to_disk(str(source))
    adapter = HuggingFaceDataset(None, source=str(source), id_column="name", domain_column="site", **COLUMNS)
    assert {name: len(items) for name, items in adapter.rows.items()} == {"train": 14, "val": 2, "test": 4}
    assert HuggingFaceDataset(None, source=str(source), id_column="name", domain_column="site", **COLUMNS).rows == adapter.rows
    ids = [row.case_id for items in adapter.rows.values() for row in items]
    assert sorted(ids) == sorted(f"row{n}" for n in range(20))


def test_nested_list_cells_are_read_as_arrays(tmp_path):
    source = tmp_path / "lists"
    mask = np.zeros(SIZE, np.uint8)
    mask[1:4, 1:4] = 2
    table = {"image": [np.full(SIZE, 0.5).tolist()] * 10, "mask": [mask.tolist()] * 10}
    datasets.Dataset.from_dict(table).save_to_disk(str(source))
    adapter = HuggingFaceDataset(None, source=str(source), classes="0,2", class_names="lesion")
    case = next(adapter.eval_cases("test"))
    assert case.label.sum() == 9 and adapter.class_names == ("lesion",)


def test_missing_columns_and_splits_are_named(split_source):
    with pytest.raises(ValueError, match=r"no column\(s\) \['image'\]; columns are"):
        HuggingFaceDataset(None, source=str(split_source), mask_column="segmentation")
    with pytest.raises(ValueError, match=r"no split 'holdout' for test; available: \['train', 'validation', 'test'\]"):
        HuggingFaceDataset(None, source=str(split_source), test_split="holdout", **COLUMNS)
    with pytest.raises(ValueError, match="source="):
        HuggingFaceDataset(None, **COLUMNS)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HuggingFaceDataset(split_source.parent / "nowhere", **COLUMNS)


def test_label_outside_declared_classes_names_the_row(split_source):
    with pytest.raises(ValueError, match=r"split 'train', row 0 .*column 'segmentation'.*mask values \[1\] are outside"):
        HuggingFaceDataset(None, source=str(split_source), classes="0,2", **COLUMNS)


def test_image_mask_size_mismatch_names_the_row(tmp_path):
    source = tmp_path / "mismatch"
    table = {"image": [np.zeros((8, 8), np.uint8).tolist()] * 10, "mask": [np.eye(9, dtype=np.uint8).tolist()] * 10}
    datasets.Dataset.from_dict(table).save_to_disk(str(source))
    adapter = HuggingFaceDataset(None, source=str(source))
    with pytest.raises(ValueError, match=r"row \d+ .*column 'image'.* is 8x8 but its mask .* is 9x9"):
        adapter.train_slices()


def test_smoke_run_through_the_cli(split_source, tmp_path, smoke_args):
    out = tmp_path / "runs"
    options = [item for key, value in {**COLUMNS, "domain_column": "site"}.items()
               for item in ("--dataset-option", f"{key}={value}")]
    assert main(["run", "--methods", "supervised", "--dataset", f"hf:{split_source}", *options,
                 "--labels", "2", "--seeds", "1", "--out", str(out), *smoke_args]) == 0
    summary = json.loads(next(out.rglob("summary.json")).read_text())
    assert math.isfinite(summary["metrics"]["dice"]) and summary["num_test_cases"] == 2  # smoke: 2 of 3 test images
    assert summary["dataset_protocol"]["source"] == str(split_source)
