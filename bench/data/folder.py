"""The ``folder`` dataset adapter: any folder of 2D images (PNG, JPEG, TIFF, BMP) or 3D NIfTI volumes with
masks beside them, plus the reading helpers the ``busi`` and ``hf`` adapters share.

Two layouts are accepted::

    <root>/images/<name>.png   <root>/masks/<name>.png              one pool, split here 70/10/20
    <root>/{train,val,test}/images/...   <root>/{train,val,test}/masks/...   the user's own split

An image and its mask share their path relative to ``images/`` and ``masks/`` (the extensions may differ;
option ``mask_suffix`` strips e.g. ``_mask`` from mask names).  Files may sit in sub-folders: the first
sub-folder names the case's ``domain`` (a site, a scanner), which per-case results carry and the
mixed-domain setting draws labeled cases from.

Class values are read from the masks (sorted unique values -> classes 0..K-1, the smallest being
background) unless option ``classes="0,128,255"`` declares them (first = background); ``class_names``
names the foreground classes.  Every mask is read once at construction, so a bad file stops the run
before training rather than at test time.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from bench.data.adapter import DatasetAdapter, TrainingSlice
from bench.data.cache import cached_training_slices
from bench.data.case import Case
from bench.data.options import check_options, option_int, option_list

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
SPLITS = ("train", "val", "test")
# The pool split when the folder has no train/val/test sub-folders: the ACDC proportions (70/10/20
# patients, SSL4MIS), so a folder dataset is evaluated the way the ACDC tables are.
POOL_SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


def resolve_root(data_root: Path | None, dataset: str) -> Path:
    """The folder given, else ``$BENCH_DATA_ROOT/<dataset>``; a missing folder says where it looked."""
    if data_root is None:
        environment_root = os.environ.get("BENCH_DATA_ROOT")
        if not environment_root:
            raise FileNotFoundError(
                f"dataset {dataset!r} is read from disk: pass --data-root or set BENCH_DATA_ROOT "
                f"(the folder holding {dataset}/)"
            )
        data_root = Path(environment_root) / dataset
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset {dataset!r}: data root {root} does not exist or is not a folder")
    return root


def natural_key(text: str) -> list:
    """``case 2`` before ``case 10``: the order a person reads, and the order ``first`` selection uses."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


# -- pixels --------------------------------------------------------------------------------------------

def grey_pixels(picture: Image.Image) -> np.ndarray:
    """Single-channel pixels of an image.  Colour becomes luma (ITU-R 601-2, PIL's ``convert("L")``):
    the networks take one input channel, and most medical PNGs that are RGB are grey stored thrice."""
    if picture.mode not in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
        picture = picture.convert("L")
    return np.asarray(picture)


def unit_range(pixels: np.ndarray) -> np.ndarray:
    """Float32 in [0, 1]: 8-bit images by /255 (their absolute grey levels mean something), anything
    else (16-bit, float, CT/MR volumes) min-max per case, as SSL4MIS normalises each ACDC volume."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255.0
    pixels = np.asarray(pixels, dtype=np.float32)
    low, high = float(pixels.min()), float(pixels.max())
    if high <= low:
        return np.zeros_like(pixels)
    return (pixels - low) / (high - low)


def mask_values(picture: Image.Image, source: str) -> np.ndarray:
    """Integer mask values as stored.  Palette masks give their indices (the VOC convention); 1-bit
    masks give 0/255 (what ``convert("L")`` and every viewer show); a colour mask is refused, since
    its colours would have to be mapped to classes by hand."""
    if picture.mode == "P":
        return np.asarray(picture).astype(np.int64)
    if picture.mode in ("RGB", "RGBA"):
        channels = np.asarray(picture)
        if not (np.array_equal(channels[..., 0], channels[..., 1]) and np.array_equal(channels[..., 0], channels[..., 2])):
            raise ValueError(f"{source}: colour mask; store class values as a single-channel (grey or palette) image")
        return channels[..., 0].astype(np.int64)
    return integer_mask(grey_pixels(picture), source)


def integer_mask(values: np.ndarray, source: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind == "f":
        rounded = np.rint(values)
        if not np.array_equal(rounded, values):
            raise ValueError(f"{source}: mask holds non-integer values; a mask stores one class value per pixel")
        values = rounded
    if values.dtype.kind not in "biuf":
        raise ValueError(f"{source}: mask of type {values.dtype} is not numeric")
    return values.astype(np.int64)


def open_picture(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except OSError as error:
        raise ValueError(f"{path}: not a readable image ({error})") from error


def decoded(picture: Image.Image, path: Path) -> Image.Image:
    """``picture`` with its pixels read.  A file cut short opens (only its header is read then) and
    fails here, with a PIL message that names no file."""
    try:
        picture.load()
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{path}: not a readable image, truncated or corrupt ({error})") from error
    return picture


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def stem_of(path: Path) -> str:
    """File name without its (possibly double, ``.nii.gz``) extension."""
    name = path.name
    for suffix in NIFTI_SUFFIXES + PICTURE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def header_shape(path: Path) -> tuple[int, int, int]:
    """``(D, H, W)`` from the file header alone, so sizes are checked without decoding pixels."""
    if is_nifti(path):
        return _nifti_grid(_load_nifti(path).shape, path)
    with open_picture(path) as picture:
        return (1, picture.height, picture.width)


def _load_nifti(path: Path) -> Any:
    import nibabel  # imported here: only NIfTI datasets pay for it

    try:
        return nibabel.load(str(path))
    except Exception as error:  # nibabel raises several unrelated types for a bad file
        raise ValueError(f"{path}: not a readable NIfTI file ({error})") from error


def _nifti_grid(shape: Sequence[int], path: Path) -> tuple[int, int, int]:
    shape = tuple(int(size) for size in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 2:
        return (1, shape[1], shape[0])
    if len(shape) != 3:
        raise ValueError(f"{path}: NIfTI of shape {shape}; expected a 2D image or a 3D volume")
    return (shape[2], shape[1], shape[0])


def _nifti_array(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``[D, H, W]`` (z, y, x: the SimpleITK order the SSL4MIS h5 files use) and spacing ``(z, y, x)`` in mm."""
    volume = _load_nifti(path)
    depth, height, width = _nifti_grid(volume.shape, path)
    try:
        data = np.asanyarray(volume.dataobj).reshape(width, height, depth)
    except Exception as error:  # a cut .nii.gz fails in gzip, zlib or nibabel, each with its own type
        raise ValueError(f"{path}: NIfTI voxel data not readable, truncated or corrupt ({error})") from error
    zooms = tuple(float(size) for size in volume.header.get_zooms()[:3]) + (1.0,) * 3
    return data.transpose(2, 1, 0), (zooms[2], zooms[1], zooms[0])


def read_image(path: Path) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """Image ``[D, H, W]`` float32 in [0, 1] and its spacing (NIfTI header; ``None`` for 2D pictures,
    whose pixel sizes are rarely trustworthy, so distances are reported in pixels)."""
    if is_nifti(path):
        data, spacing = _nifti_array(path)
        return unit_range(data), spacing
    with open_picture(path) as picture:
        return unit_range(grey_pixels(decoded(picture, path)))[None], None


def read_mask(path: Path) -> np.ndarray:
    """Mask ``[D, H, W]`` of integer values as stored in the file."""
    if is_nifti(path):
        data, _ = _nifti_array(path)
        return integer_mask(data, str(path))
    with open_picture(path) as picture:
        return mask_values(decoded(picture, path), str(path))[None]


# -- classes -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassValues:
    """Mask value -> class index: ``values[0]`` is background, ``values[k]`` is class ``k``."""

    values: tuple[int, ...]
    names: tuple[str, ...]
    declared: bool

    @classmethod
    def resolve(
        cls,
        dataset: str,
        classes: str | Sequence[Any] | None,
        class_names: str | Sequence[Any] | None,
        masks: Iterable[tuple[str, np.ndarray]],
    ) -> "ClassValues":
        """Declared values (checked against every mask) or the sorted union of the masks' values."""
        declared = option_list(classes)
        if declared is not None:
            try:
                values = tuple(int(value) for value in declared)
            except ValueError:
                raise ValueError(f"dataset {dataset!r}: option classes={classes!r}: expected integers like 0,128,255") from None
            if len(set(values)) != len(values) or len(values) < 2:
                raise ValueError(f"dataset {dataset!r}: option classes={classes!r}: need at least two distinct values "
                                 "(background first)")
            for source, mask in masks:
                outside = sorted(set(np.unique(mask).tolist()) - set(values))
                if outside:
                    raise ValueError(f"{source}: mask values {outside} are outside the declared classes {list(values)}")
        else:
            found: set[int] = set()
            for _, mask in masks:
                found.update(np.unique(mask).tolist())
            values = tuple(sorted(found))
            if len(values) < 2:
                raise ValueError(f"dataset {dataset!r}: every mask holds only the value {values}; no foreground class "
                                 "to learn (declare the values with the option classes=...)")
        names = option_list(class_names)
        if names is None:
            names = [f"value{value}" for value in values[1:]]
        if len(names) != len(values) - 1:
            raise ValueError(f"dataset {dataset!r}: option class_names={class_names!r} names {len(names)} classes, "
                             f"but the mask values {list(values)} give {len(values) - 1} foreground classes")
        if len(values) > 256:
            raise ValueError(f"dataset {dataset!r}: {len(values)} distinct mask values; is this an image folder rather than masks?")
        return cls(values, tuple(names), declared is not None)

    def encode(self, mask: np.ndarray, source: str) -> np.ndarray:
        """Class indices (uint8) of a mask; values outside the classes are an error naming ``source``."""
        present, inverse = np.unique(mask, return_inverse=True)
        index_of = {value: index for index, value in enumerate(self.values)}
        outside = [value for value in present.tolist() if value not in index_of]
        if outside:
            raise ValueError(f"{source}: mask values {outside} are outside the classes {list(self.values)}")
        lookup = np.array([index_of[value] for value in present.tolist()], dtype=np.uint8)
        return lookup[inverse].reshape(mask.shape)

    def protocol(self) -> dict[str, Any]:
        return {"mask_values": list(self.values), "class_names": list(self.names),
                "classes_from": "option classes" if self.declared else "the masks' sorted unique values"}


# -- splits --------------------------------------------------------------------------------------------

def stratified_split(
    groups: Mapping[str, Sequence[str]], fractions: Mapping[str, float], seed: int
) -> dict[str, list[str]]:
    """Split each group (a class, a domain) by the same fractions with a seeded shuffle, so every split
    holds every group in proportion.  Per group: ``train = round(f_train n)``, ``val = round(f_val n)``,
    ``test`` the rest.  Ids come back naturally sorted within each split."""
    rng = np.random.default_rng(seed)
    split: dict[str, list[str]] = {name: [] for name in fractions}
    names = list(fractions)
    for group in sorted(groups):
        ids = sorted(groups[group], key=natural_key)
        order = [ids[index] for index in rng.permutation(len(ids))]
        start = 0
        for position, name in enumerate(names):
            count = len(order) - start if position == len(names) - 1 else round(fractions[name] * len(order))
            split[name].extend(order[start : start + count])
            start += count
    return {name: sorted(ids, key=natural_key) for name, ids in split.items()}


def split_digest(split: Mapping[str, Sequence[str]]) -> str:
    """A short fingerprint of a split, recorded with results so two runs can be checked for equal splits."""
    text = "\n".join(f"{name}:{case_id}" for name in sorted(split) for case_id in split[name])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def require_nonempty(dataset: str, split: Mapping[str, Sequence[Any]], where: str) -> None:
    for name in SPLITS:
        if not split.get(name):
            raise ValueError(f"dataset {dataset!r}: the {name} split is empty ({where}); every split needs at least one case")


# -- the adapter ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FilePair:
    case_id: str
    image: Path
    mask: Path
    domain: str


def _listed_files(folder: Path) -> dict[str, Path]:
    """Relative stem (``site/name``) -> file, for every supported file under ``folder``."""
    files: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_dir() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if not path.name.lower().endswith(PICTURE_SUFFIXES + NIFTI_SUFFIXES):
            raise ValueError(f"{path}: unsupported file type; expected one of {', '.join(PICTURE_SUFFIXES + NIFTI_SUFFIXES)}")
        key = path.relative_to(folder).with_name(stem_of(path)).as_posix()
        if key in files:
            raise ValueError(f"{files[key]} and {path} have the same name; each case needs exactly one file")
        files[key] = path
    return files


def pair_files(images_dir: Path, masks_dir: Path, mask_suffix: str = "") -> list[FilePair]:
    """Images matched to masks by relative path; an image without a mask (or the reverse) is an error."""
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: folder not found (a folder dataset holds images/ and masks/)")
    images = _listed_files(images_dir)
    masks: dict[str, Path] = {}
    for key, path in _listed_files(masks_dir).items():
        if mask_suffix:
            if not key.endswith(mask_suffix):
                raise ValueError(f"{path}: mask name does not end with mask_suffix={mask_suffix!r}")
            key = key[: -len(mask_suffix)]
        masks[key] = path
    if not images:
        raise ValueError(f"{images_dir}: no images found")
    for missing, present, kind in ((set(images) - set(masks), images, "mask"), (set(masks) - set(images), masks, "image")):
        if missing:
            listed = ", ".join(str(present[key]) for key in sorted(missing, key=natural_key)[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            where = masks_dir if kind == "mask" else images_dir
            raise ValueError(f"no matching {kind} in {where} for: {listed}{more}")
    pairs = []
    for key in sorted(images, key=natural_key):
        parts = key.split("/")
        pairs.append(FilePair(key, images[key], masks[key], parts[0] if len(parts) > 1 else "default"))
    return pairs


class FolderDataset(DatasetAdapter):
    """Images and masks from a folder; see the module docstring for the layout and options."""

    name = "folder"
    description = ("2D images (PNG/JPEG/TIFF/BMP) or 3D NIfTI with masks in images/ + masks/ (optionally under "
                   "train/ val/ test/); classes read from the masks; option classes=0,128,255")
    class_names: tuple[str, ...] = ()  # read from the masks per dataset
    # Counts mean nothing for an unknown folder; the fractions of the BUSI/SynFoC tables do.
    default_labels = ("1/8", "1/4")
    default_label_selection = "random"
    OPTIONS = ("classes", "class_names", "split_seed", "mask_suffix")

    def __init__(self, data_root: Path | None = None, **options: Any) -> None:
        super().__init__(data_root, **options)
        check_options(self.name, options, self.OPTIONS)
        self.root = resolve_root(data_root, self.name)
        self.split_seed = option_int("split_seed", options.get("split_seed", 0))
        self.mask_suffix = str(options.get("mask_suffix", ""))
        self.presplit = (self.root / "train").is_dir()
        self.pairs = self._index()
        for pairs in self.pairs.values():
            for pair in pairs:
                image_shape, mask_shape = header_shape(pair.image), header_shape(pair.mask)
                if image_shape != mask_shape:
                    raise ValueError(f"{pair.image} is {_size_text(image_shape)} but its mask {pair.mask} is "
                                     f"{_size_text(mask_shape)}")
        all_pairs = [pair for pairs in self.pairs.values() for pair in pairs]
        self.classes = ClassValues.resolve(
            self.name, options.get("classes"), options.get("class_names"),
            ((str(pair.mask), read_mask(pair.mask)) for pair in all_pairs),
        )
        self.class_names = self.classes.names

    def _index(self) -> dict[str, list[FilePair]]:
        if self.presplit:
            pairs = {}
            for split in SPLITS:
                folder = self.root / split
                if not folder.is_dir():
                    raise FileNotFoundError(f"{folder}: missing; a pre-split folder dataset holds train/, val/ and test/")
                pairs[split] = pair_files(folder / "images", folder / "masks", self.mask_suffix)
            require_nonempty(self.name, pairs, f"{self.root}/<split>/images")
            return pairs
        pool = {pair.case_id: pair for pair in pair_files(self.root / "images", self.root / "masks", self.mask_suffix)}
        by_domain: dict[str, list[str]] = {}
        for pair in pool.values():
            by_domain.setdefault(pair.domain, []).append(pair.case_id)
        split = stratified_split(by_domain, POOL_SPLIT_FRACTIONS, self.split_seed)
        require_nonempty(self.name, split, f"{len(pool)} images in {self.root / 'images'} split 70/10/20")
        return {name: [pool[case_id] for case_id in ids] for name, ids in split.items()}

    def _case(self, pair: FilePair, split: str) -> Case:
        image, spacing = read_image(pair.image)
        label = self.classes.encode(read_mask(pair.mask), str(pair.mask))
        if image.shape != label.shape:
            raise ValueError(f"{pair.image} is {_size_text(image.shape)} but its mask {pair.mask} is {_size_text(label.shape)}")
        return Case(pair.case_id, image, label, split, pair.domain, spacing, {"image_file": str(pair.image)},
                    source=str(pair.image))

    def train_case_ids(self) -> list[str]:
        return [pair.case_id for pair in self.pairs["train"]]

    def train_slices(self, patch_size: tuple[int, int] | None = None) -> list[TrainingSlice]:
        """Decoded once into the Arrow cache (keyed by the files and the class mapping), resized to the
        patch when given."""
        pairs = self.pairs["train"]

        def decode() -> list[TrainingSlice]:
            slices = []
            for pair in pairs:
                case = self._case(pair, "train")
                slices.extend(TrainingSlice(case.case_id, case.image[index], case.label[index], case.domain,
                                            case.source)
                              for index in range(case.num_slices))
            return slices

        key = {"dataset": self.name, "reader": "folder-1", "root": str(self.data_root),
               "pairs": [pair.case_id for pair in pairs], "protocol": self.protocol()}
        sources = [path for pair in pairs for path in (pair.image, pair.mask)]
        return cached_training_slices(key, sources, decode, patch_size)

    def eval_cases(self, split: str) -> Iterator[Case]:
        if split not in ("val", "test"):
            raise ValueError(f"split {split!r}: expected 'val' or 'test'")
        return (self._case(pair, split) for pair in self.pairs[split])

    def case_domains(self) -> dict[str, str]:
        return {pair.case_id: pair.domain for pair in self.pairs["train"]}

    def protocol(self) -> dict[str, Any]:
        split = {name: [pair.case_id for pair in pairs] for name, pairs in self.pairs.items()}
        return {
            "dataset": self.name,
            "data_root": str(self.root),
            "split": "train/ val/ test/ sub-folders" if self.presplit
                     else f"pool split {POOL_SPLIT_FRACTIONS} per domain, seed {self.split_seed}",
            "split_counts": {name: len(ids) for name, ids in split.items()},
            "split_digest": split_digest(split),
            "domains": sorted({pair.domain for pairs in self.pairs.values() for pair in pairs}),
            "mask_suffix": self.mask_suffix,
            **self.classes.protocol(),
        }


def _size_text(shape: Sequence[int]) -> str:
    depth, height, width = shape
    return f"{width}x{height}" if depth == 1 else f"{width}x{height}x{depth}"

