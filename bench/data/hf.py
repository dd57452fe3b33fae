"""The ``hf`` dataset adapter: a Hugging Face ``datasets`` dataset of 2D images and masks.

``source`` (``--dataset hf:<source>``, the option ``source=``, else the data root) is a folder written
by ``save_to_disk`` (read with ``datasets.load_from_disk``) or a hub name (``datasets.load_dataset``,
which needs the network or a warm local cache).  Columns are configurable (``image_column="image"``,
``mask_column="mask"``, optional ``id_column`` and ``domain_column``); cells may be PIL images (the
``Image`` feature) or arrays/nested lists.  Splits: ``train_split`` / ``val_split`` / ``test_split``
(defaults ``train``, the first of ``validation``/``val``/``valid``, ``test``); a dataset with a single
split is split here 70/10/20 per domain, seeded, as the ``folder`` adapter does.  Classes and pixels
follow the ``folder`` adapter's rules (mask values read or declared with ``classes=``; colour -> luma;
8-bit /255, else min-max).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from bench.data.adapter import DatasetAdapter, TrainingSlice
from bench.data.case import Case
from bench.data.folder import (
    POOL_SPLIT_FRACTIONS,
    SPLITS,
    ClassValues,
    grey_pixels,
    integer_mask,
    mask_values,
    natural_key,
    require_nonempty,
    split_digest,
    stratified_split,
    unit_range,
)
from bench.data.options import check_options, option_int

VALIDATION_SPLIT_NAMES = ("validation", "val", "valid")


@dataclass(frozen=True)
class Row:
    """Where one case lives: split name and row index in the loaded dataset."""

    case_id: str
    source_split: str
    index: int
    domain: str


def load_source(source: str) -> dict[str, Any]:
    """Split name -> ``datasets.Dataset``.  A local folder is read with ``load_from_disk``; anything else is
    a hub name.  Imported here: ``datasets`` takes seconds to import and most runs never need it."""
    import datasets

    path = Path(source).expanduser()
    if path.exists():
        try:
            loaded = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as error:
            raise ValueError(f"{path}: not a dataset written by save_to_disk ({error})") from error
    else:
        try:
            loaded = datasets.load_dataset(source)
        except Exception as error:  # offline, unknown name, gated: all reach the user the same way
            raise ValueError(f"hf source {source!r}: neither a local folder nor a loadable hub dataset ({error})") from error
    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded}
    return dict(loaded)


def cell_pixels(cell: Any, where: str) -> np.ndarray:
    """A 2D grey array from a PIL image, an array or nested lists."""
    if isinstance(cell, Image.Image):
        return grey_pixels(cell)
    pixels = np.asarray(cell)
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        return grey_pixels(Image.fromarray(pixels[..., :3].astype(np.uint8)))
    if pixels.ndim != 2:
        raise ValueError(f"{where}: array of shape {pixels.shape}; expected a 2D image (H, W) or colour (H, W, 3)")
    return pixels


def cell_mask(cell: Any, where: str) -> np.ndarray:
    if isinstance(cell, Image.Image):
        return mask_values(cell, where)
    values = np.asarray(cell)
    if values.ndim != 2:
        raise ValueError(f"{where}: mask of shape {values.shape}; expected a 2D array (H, W)")
    return integer_mask(values, where)


class HuggingFaceDataset(DatasetAdapter):
    """A ``datasets`` dataset; see the module docstring for the options."""

    name = "hf"
    description = ("a Hugging Face datasets dataset (save_to_disk folder or hub name, option source=...) with image "
                   "and mask columns; classes read from the masks")
    class_names: tuple[str, ...] = ()  # read from the masks per dataset
    default_labels = ("1/8", "1/4")
    default_label_selection = "random"
    OPTIONS = ("source", "image_column", "mask_column", "id_column", "domain_column", "train_split", "val_split",
               "test_split", "classes", "class_names", "split_seed")

    def __init__(self, data_root: Path | None = None, **options: Any) -> None:
        super().__init__(data_root, **options)
        check_options(self.name, options, self.OPTIONS)
        source = options.get("source")
        if not source:
            if data_root is None:
                raise ValueError("dataset 'hf': name the dataset: --dataset hf:<save_to_disk folder or hub name>, "
                                 "the option source=..., or --data-root <save_to_disk folder>")
            if not Path(data_root).exists():
                raise FileNotFoundError(f"dataset 'hf': data root {data_root} does not exist (give a save_to_disk "
                                        "folder, or a hub name with --dataset hf:<name>)")
            source = str(data_root)
        self.source = str(source)
        self.image_column = str(options.get("image_column", "image"))
        self.mask_column = str(options.get("mask_column", "mask"))
        self.id_column = options.get("id_column")
        self.domain_column = options.get("domain_column")
        self.split_seed = option_int("split_seed", options.get("split_seed", 0))
        self.tables = load_source(self.source)
        self.rows = self._split_rows(options)
        require_nonempty(self.name, self.rows, f"source {self.source}")
        self.classes = ClassValues.resolve(
            self.name, options.get("classes"), options.get("class_names"),
            self._all_masks(),
        )
        self.class_names = self.classes.names

    def _check_columns(self, split_name: str) -> None:
        table = self.tables[split_name]
        wanted = [self.image_column, self.mask_column] + [column for column in (self.id_column, self.domain_column) if column]
        missing = [column for column in wanted if column not in table.column_names]
        if missing:
            raise ValueError(f"hf source {self.source!r}, split {split_name!r}: no column(s) {missing}; "
                             f"columns are {table.column_names} (options image_column=, mask_column=, ...)")

    def _split_rows(self, options: dict[str, Any]) -> dict[str, list[Row]]:
        available = list(self.tables)
        if len(available) == 1 and not any(options.get(f"{split}_split") for split in SPLITS):
            rows = self._rows(available[0])
            by_id = {row.case_id: row for row in rows}
            by_domain: dict[str, list[str]] = {}
            for row in rows:
                by_domain.setdefault(row.domain, []).append(row.case_id)
            split = stratified_split(by_domain, POOL_SPLIT_FRACTIONS, self.split_seed)
            self.split_rule = f"single split {available[0]!r} split {POOL_SPLIT_FRACTIONS} per domain, seed {self.split_seed}"
            return {name: [by_id[case_id] for case_id in ids] for name, ids in split.items()}
        names = {
            "train": options.get("train_split", "train"),
            "val": options.get("val_split") or next((n for n in VALIDATION_SPLIT_NAMES if n in self.tables), "validation"),
            "test": options.get("test_split", "test"),
        }
        for split, name in names.items():
            if name not in self.tables:
                raise ValueError(f"hf source {self.source!r}: no split {name!r} for {split}; available: {available} "
                                 f"(option {split}_split=...)")
        self.split_rule = f"dataset splits {names}"
        return {split: self._rows(name) for split, name in names.items()}

    def _rows(self, split_name: str) -> list[Row]:
        self._check_columns(split_name)
        table = self.tables[split_name]
        ids = ([str(value) for value in table[self.id_column]] if self.id_column
               else [f"{split_name}-{index:05d}" for index in range(len(table))])
        if len(set(ids)) != len(ids):
            raise ValueError(f"hf source {self.source!r}, split {split_name!r}: column {self.id_column!r} has repeated ids")
        domains = ([str(value) for value in table[self.domain_column]] if self.domain_column
                   else ["default"] * len(table))
        rows = [Row(case_id, split_name, index, domain) for index, (case_id, domain) in enumerate(zip(ids, domains))]
        return sorted(rows, key=lambda row: natural_key(row.case_id))

    def _where(self, row: Row, column: str) -> str:
        return f"hf source {self.source!r}, split {row.source_split!r}, row {row.index} ({row.case_id}), column {column!r}"

    def _all_masks(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every mask once, decoding the mask column only."""
        mask_tables = {}
        for rows in self.rows.values():
            for row in rows:
                if row.source_split not in mask_tables:
                    mask_tables[row.source_split] = self.tables[row.source_split].select_columns([self.mask_column])
                where = self._where(row, self.mask_column)
                yield where, cell_mask(mask_tables[row.source_split][row.index][self.mask_column], where)

    def _case(self, row: Row, split: str) -> Case:
        record = self.tables[row.source_split][row.index]
        image = unit_range(cell_pixels(record[self.image_column], self._where(row, self.image_column)))
        mask_where = self._where(row, self.mask_column)
        label = self.classes.encode(cell_mask(record[self.mask_column], mask_where), mask_where)
        if image.shape != label.shape:
            raise ValueError(f"{self._where(row, self.image_column)} is {image.shape[1]}x{image.shape[0]} but its mask "
                             f"(column {self.mask_column!r}) is {label.shape[1]}x{label.shape[0]}")
        return Case(row.case_id, image, label, split, row.domain, None,
                    {"source": self.source, "source_split": row.source_split, "row": row.index},
                    source=f"hf source {self.source!r}, split {row.source_split!r}, row {row.index}")

    def train_case_ids(self) -> list[str]:
        return [row.case_id for row in self.rows["train"]]

    def train_slices(self, patch_size: tuple[int, int] | None = None) -> list[TrainingSlice]:
        slices = []
        for row in self.rows["train"]:
            case = self._case(row, "train")
            slices.append(TrainingSlice(case.case_id, case.image[0], case.label[0], case.domain, case.source))
        return slices

    def eval_cases(self, split: str) -> Iterator[Case]:
        if split not in ("val", "test"):
            raise ValueError(f"split {split!r}: expected 'val' or 'test'")
        return (self._case(row, split) for row in self.rows[split])

    def case_domains(self) -> dict[str, str]:
        return {row.case_id: row.domain for row in self.rows["train"]}

    def protocol(self) -> dict[str, Any]:
        split = {name: [row.case_id for row in rows] for name, rows in self.rows.items()}
        return {
            "dataset": self.name,
            "source": self.source,
            "columns": {"image": self.image_column, "mask": self.mask_column, "id": self.id_column,
                        "domain": self.domain_column},
            "split": self.split_rule,
            "split_counts": {name: len(ids) for name, ids in split.items()},
            "split_digest": split_digest(split),
            **self.classes.protocol(),
        }
