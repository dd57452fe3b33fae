"""A disk cache of decoded (and optionally patch-resized) training slices, as Hugging Face Arrow files.

Decoding a dataset's training slices (1312 gzip'd h5 files for ACDC, PNGs for BUSI) costs seconds
on every run; an Arrow file of the decoded arrays is memory-mapped and read back at memory speed.
Any adapter can use it through one call::

    slices = cached_training_slices(
        {"dataset": "acdc", "reader": 1},       # what, besides the files, decides the content
        source_files,                           # every file the slices are read from
        build=lambda: read_all_slices(),        # the slow path, at native size
        patch_size=(256, 256),                  # or None to cache native-size slices
    )

An entry is keyed by the caller's ``key_parts``, the patch size, :data:`CACHE_FORMAT_VERSION` and a
fingerprint of the source files (resolved path, size, modification time), so editing, replacing or
touching a source file, or moving the data, builds a new entry instead of serving stale arrays.
Entries live under ``$BENCH_CACHE_DIR`` (default ``~/.cache/bench``) as
``<dataset>/<patch>-<key hash>/`` holding ``slices.arrow`` (readable with
``datasets.Dataset.from_file``) and ``key.json`` (the key in clear, written last: its presence marks
the entry complete).  Stale entries are never served but are not deleted either: remove the
folder to reclaim the space.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch

from bench.data.adapter import TrainingSlice
from bench.data.resize import resize_slice_pair

if TYPE_CHECKING:
    from datasets import Features

__all__ = [
    "CACHE_FORMAT_VERSION",
    "cache_root",
    "cached_training_slices",
    "read_slices",
    "resized_slices",
    "slice_features",
    "source_fingerprint",
    "write_slices",
]

CACHE_FORMAT_VERSION = 2
"""Bumped when the stored columns or the resizing change, so old entries stop matching (2: ``source``)."""

CACHE_DIR_VARIABLE = "BENCH_CACHE_DIR"
ARROW_FILE = "slices.arrow"
KEY_FILE = "key.json"


def slice_features() -> Features:
    """The stored columns: images and labels flat with their shape beside them, so slices of different
    sizes (native ACDC slices, BUSI images) share one table; 64-bit offsets keep a large dataset in one
    column.  ``datasets`` is imported on use, so ``import bench`` does not pay for it."""
    from datasets import Features, LargeList, Value

    return Features({
        "case_id": Value("string"),
        "domain": Value("string"),
        "source": Value("string"),
        "height": Value("int32"),
        "width": Value("int32"),
        "image": LargeList(Value("float32")),
        "label": LargeList(Value("uint8")),
    })


# Rows per Arrow record batch: bounds the memory held while writing (64 slices at 256x256 = 21 MB).
_WRITE_BATCH_ROWS = 64


def cache_root() -> Path:
    """``$BENCH_CACHE_DIR`` if set, else ``~/.cache/bench``."""
    configured = os.environ.get(CACHE_DIR_VARIABLE)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "bench"


def source_fingerprint(source_files: Iterable[Path]) -> str:
    """Hash of (resolved path, size, mtime in ns) of every file, in the given order.

    Stat-only, so fingerprinting 1312 ACDC slices takes milliseconds; a file rewritten with the same
    size within the file system's timestamp resolution would go unnoticed, which the cache accepts.
    """
    digest = hashlib.sha256()
    resolved_folders: dict[Path, Path] = {}
    for path in map(Path, source_files):
        if path.parent not in resolved_folders:
            resolved_folders[path.parent] = path.parent.resolve()
        resolved = resolved_folders[path.parent] / path.name
        stat = resolved.stat()  # follows a symlinked file, so a changed target changes size or mtime
        digest.update(f"{resolved}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cached_training_slices(
    key_parts: Mapping[str, Any],
    source_files: Sequence[Path],
    build: Callable[[], Iterable[TrainingSlice]],
    patch_size: tuple[int, int] | None = None,
    cache_dir: Path | None = None,
) -> list[TrainingSlice]:
    """The slices ``build`` would return, resized to ``patch_size`` when given, from the cache if an
    entry with the same key exists, else built once and stored.

    ``key_parts`` must name the ``dataset`` and hold everything other than the source files that
    changes the decoded arrays (a reader version, options such as a label mapping); values must be
    JSON-serialisable.  ``build`` yields native-size slices; resizing (bilinear image, nearest
    label, :func:`bench.data.resize.resize_slice_pair`) happens here, so every adapter's cached
    slices are resized the same way the training streams would resize them.  When the cache folder
    cannot be written, a warning is issued and the built slices are returned uncached.
    """
    if "dataset" not in key_parts:
        raise ValueError(f"cached_training_slices: key_parts {dict(key_parts)} must name the 'dataset'")
    size = None if patch_size is None else (int(patch_size[0]), int(patch_size[1]))
    key = {
        **{str(name): value for name, value in key_parts.items()},
        "patch_size": list(size) if size else None,
        "cache_format": CACHE_FORMAT_VERSION,
        "sources": source_fingerprint(source_files),
        "num_sources": len(source_files),
    }
    encoded_key = json.dumps(key, sort_keys=True, default=str)
    key_hash = hashlib.sha256(encoded_key.encode()).hexdigest()[:20]
    size_tag = f"{size[0]}x{size[1]}" if size else "native"
    entry = (cache_dir or cache_root()) / _safe_name(str(key_parts["dataset"])) / f"{size_tag}-{key_hash}"
    if (entry / KEY_FILE).is_file():
        return read_slices(entry / ARROW_FILE)

    slices = [_as_stored(item) for item in resized_slices(build(), size)]
    try:
        _publish(entry, slices, encoded_key)
    except OSError as error:
        warnings.warn(f"training-slice cache not written to {entry} ({error}); the next run decodes again",
                      stacklevel=2)
    return slices


def write_slices(path: Path, slices: Iterable[TrainingSlice]) -> int:
    """Write slices to one Arrow file (the format ``datasets`` memory-maps); returns the row count."""
    from datasets.arrow_writer import ArrowWriter

    count = 0
    with ArrowWriter(features=slice_features(), path=str(path)) as writer:
        for batch in _batches(slices, _WRITE_BATCH_ROWS):
            writer.write_table(_slices_table(batch))
            count += len(batch)
        if count == 0:
            writer.write_table(_slices_table([]))
        writer.finalize()
    return count


def read_slices(path: Path) -> list[TrainingSlice]:
    """Slices from an Arrow file written by :func:`write_slices`.

    Each column is copied out of the memory map once into one contiguous array and every slice is
    a writable view of it: one copy at memory speed instead of one Python conversion per pixel row.
    """
    from datasets import Dataset

    table = Dataset.from_file(str(path)).data.table
    heights = table.column("height").to_numpy()
    widths = table.column("width").to_numpy()
    images = _flat_values(table.column("image"), np.float32)
    labels = _flat_values(table.column("label"), np.uint8)
    ends = np.cumsum(heights.astype(np.int64) * widths.astype(np.int64))
    if ends.size and (ends[-1] != images.size or ends[-1] != labels.size):
        raise ValueError(f"{path}: pixel count {ends[-1]} does not match the stored images/labels; "
                         f"delete the cache entry {path.parent} and run again")
    starts = ends - heights.astype(np.int64) * widths.astype(np.int64)
    case_ids = table.column("case_id").to_pylist()
    domains = table.column("domain").to_pylist()
    sources = table.column("source").to_pylist()
    return [
        TrainingSlice(case_id, images[start:end].reshape(height, width), labels[start:end].reshape(height, width),
                      domain, source)
        for case_id, domain, source, start, end, height, width
        in zip(case_ids, domains, sources, starts, ends, heights, widths)
    ]


def resized_slices(slices: Iterable[TrainingSlice], size: tuple[int, int] | None) -> Iterator[TrainingSlice]:
    """Slices resized to ``size`` (bilinear image, nearest label), lazily; ``None`` leaves them as they are."""
    for item in slices:
        if size is None or tuple(item.image.shape) == size:
            yield item
        else:
            with _one_torch_thread():
                image, label = resize_slice_pair(item.image, item.label, size)
            yield TrainingSlice(item.case_id, image, label, item.domain, item.source)


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """One slice is too small to share between threads: on a busy 2-core machine a 2-thread
    ``F.interpolate`` of a 256x256 slice took 17 ms against 0.5 ms single-threaded."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _publish(entry: Path, slices: Iterable[TrainingSlice], encoded_key: str) -> None:
    """Write into a private folder and rename it into place, so concurrent runs never read half an
    entry; when another process published the same entry first, its copy is kept."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        write_slices(staging / ARROW_FILE, slices)
        (staging / KEY_FILE).write_text(encoded_key + "\n")
        if entry.exists() and not (entry / KEY_FILE).is_file():
            shutil.rmtree(entry)  # a leftover without its key was never published: nothing reads it
        try:
            os.rename(staging, entry)
        except OSError:
            if not (entry / KEY_FILE).is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _as_stored(item: TrainingSlice) -> TrainingSlice:
    """The dtypes a cache hit returns (float32 image, uint8 label), so hit and miss give equal slices."""
    image = np.ascontiguousarray(item.image, dtype=np.float32)
    label = np.ascontiguousarray(item.label)
    if label.size and (label.min() < 0 or label.max() > np.iinfo(np.uint8).max):
        raise ValueError(f"case {item.case_id!r}: label values [{label.min()}, {label.max()}] do not fit uint8")
    return TrainingSlice(item.case_id, image, label.astype(np.uint8, copy=False), item.domain, item.source)


def _slices_table(batch: list[TrainingSlice]) -> pa.Table:
    batch = [_as_stored(item) for item in batch]
    for item in batch:
        if item.image.ndim != 2 or item.image.shape != item.label.shape:
            raise ValueError(f"case {item.case_id!r}: a training slice needs a 2D image and label of one shape, "
                             f"got image {item.image.shape} and label {item.label.shape}")
    images = [item.image for item in batch]
    labels = [item.label for item in batch]
    sizes = np.array([image.size for image in images], dtype=np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]), type=pa.int64())
    image_values = np.concatenate([image.ravel() for image in images]) if images else np.empty(0, np.float32)
    label_values = np.concatenate([label.ravel() for label in labels]) if labels else np.empty(0, np.uint8)
    return pa.table({
        "case_id": pa.array([item.case_id for item in batch], pa.string()),
        "domain": pa.array([item.domain for item in batch], pa.string()),
        "source": pa.array([item.source for item in batch], pa.string()),
        "height": pa.array([image.shape[0] for image in images], pa.int32()),
        "width": pa.array([image.shape[1] for image in images], pa.int32()),
        "image": pa.LargeListArray.from_arrays(offsets, pa.array(image_values)),
        "label": pa.LargeListArray.from_arrays(offsets, pa.array(label_values)),
    })


def _flat_values(column: pa.ChunkedArray, dtype: type) -> np.ndarray:
    parts = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in column.chunks]
    if not parts:
        return np.empty(0, dtype)
    return np.concatenate(parts).astype(dtype, copy=False)


def _batches(items: Iterable[TrainingSlice], size: int) -> Iterator[list[TrainingSlice]]:
    batch: list[TrainingSlice] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _safe_name(text: str) -> str:
    return "".join(character if character.isalnum() or character in "-_." else "_" for character in text) or "dataset"
