"""The Arrow training-slice cache: hits return the same arrays, any source change rebuilds."""
from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
import numpy as np
import pytest

from bench.data.adapter import TrainingSlice
from bench.data.cache import (
    ARROW_FILE,
    KEY_FILE,
    cache_root,
    cached_training_slices,
    read_slices,
    source_fingerprint,
    write_slices,
)
from bench.data.resize import resize_slice_pair


def make_slices(seed: int = 0) -> list[TrainingSlice]:
    """Slices of different sizes and domains, as a real 2D dataset has."""
    rng = np.random.default_rng(seed)
    shapes = [(20, 17), (32, 32), (9, 40)]
    return [
        TrainingSlice(f"case{index}", rng.random(shape, dtype=np.float32),
                      rng.integers(0, 4, shape).astype(np.uint8), domain=f"site{index % 2}")
        for index, shape in enumerate(shapes)
    ]


class CountingBuild:
    def __init__(self, slices: list[TrainingSlice]) -> None:
        self.slices = slices
        self.calls = 0

    def __call__(self) -> list[TrainingSlice]:
        self.calls += 1
        return self.slices


@pytest.fixture
def sources(tmp_path: Path) -> list[Path]:
    paths = []
    for index in range(3):
        path = tmp_path / "source" / f"file{index}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(bytes([index]) * 10)
        paths.append(path)
    return paths


def assert_same_slices(actual: list[TrainingSlice], expected: list[TrainingSlice]) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert (got.case_id, got.domain) == (want.case_id, want.domain)
        assert got.image.dtype == np.float32 and got.label.dtype == np.uint8
        np.testing.assert_array_equal(got.image, want.image)
        np.testing.assert_array_equal(got.label, want.label)


def test_round_trip_keeps_every_array_and_field(tmp_path: Path) -> None:
    slices = make_slices()
    assert write_slices(tmp_path / "slices.arrow", slices) == 3
    back = read_slices(tmp_path / "slices.arrow")
    assert_same_slices(back, slices)
    assert all(item.image.flags.writeable and item.label.flags.writeable for item in back)
    # The file is an ordinary `datasets` Arrow file.
    table = datasets.Dataset.from_file(str(tmp_path / "slices.arrow"))
    assert table["case_id"] == ["case0", "case1", "case2"] and table["height"] == [20, 32, 9]


def test_cache_hit_returns_identical_arrays_without_rebuilding(tmp_path: Path, sources: list[Path]) -> None:
    build = CountingBuild(make_slices())
    first = cached_training_slices({"dataset": "toy"}, sources, build, cache_dir=tmp_path / "cache")
    second = cached_training_slices({"dataset": "toy"}, sources, build, cache_dir=tmp_path / "cache")
    assert build.calls == 1
    assert_same_slices(first, build.slices)
    assert_same_slices(second, build.slices)
    entries = list((tmp_path / "cache" / "toy").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("native-")
    key = json.loads((entries[0] / KEY_FILE).read_text())
    assert key["dataset"] == "toy" and key["sources"] == source_fingerprint(sources)


@pytest.mark.parametrize("change", ["touch", "rewrite", "remove_one", "key_parts"])
def test_any_source_change_rebuilds(tmp_path: Path, sources: list[Path], change: str) -> None:
    build = CountingBuild(make_slices())
    cache_dir = tmp_path / "cache"
    cached_training_slices({"dataset": "toy", "reader": 1}, sources, build, cache_dir=cache_dir)
    key_parts = {"dataset": "toy", "reader": 1}
    if change == "touch":
        stat = sources[1].stat()
        os.utime(sources[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    elif change == "rewrite":
        sources[1].write_bytes(b"different content, different size")
    elif change == "remove_one":
        sources = sources[:2]
    else:
        key_parts = {"dataset": "toy", "reader": 2}
    build.slices = make_slices(seed=1)
    rebuilt = cached_training_slices(key_parts, sources, build, cache_dir=cache_dir)
    assert build.calls == 2
    assert_same_slices(rebuilt, build.slices)


def test_patch_size_entries_hold_resized_slices(tmp_path: Path, sources: list[Path]) -> None:
    slices = make_slices()
    build = CountingBuild(slices)
    resized = cached_training_slices({"dataset": "toy"}, sources, build, patch_size=(16, 16), cache_dir=tmp_path)
    expected = [TrainingSlice(item.case_id, *resize_slice_pair(item.image, item.label, (16, 16)), item.domain)
                for item in slices]
    assert_same_slices(resized, expected)
    native = cached_training_slices({"dataset": "toy"}, sources, build, cache_dir=tmp_path)
    assert_same_slices(native, slices)
    again = cached_training_slices({"dataset": "toy"}, sources, build, patch_size=(16, 16), cache_dir=tmp_path)
    assert_same_slices(again, expected)
    assert build.calls == 2  # one build per patch size, none for the repeat
    assert sorted(path.name.split("-")[0] for path in (tmp_path / "toy").iterdir()) == ["16x16", "native"]


def test_incomplete_entry_is_rebuilt(tmp_path: Path, sources: list[Path]) -> None:
    build = CountingBuild(make_slices())
    cached_training_slices({"dataset": "toy"}, sources, build, cache_dir=tmp_path)
    (entry,) = (tmp_path / "toy").iterdir()
    (entry / KEY_FILE).unlink()  # as if a process died before publishing
    (entry / ARROW_FILE).write_bytes(b"truncated")
    result = cached_training_slices({"dataset": "toy"}, sources, build, cache_dir=tmp_path)
    assert build.calls == 2
    assert_same_slices(result, build.slices)


def test_unwritable_cache_warns_and_still_returns_slices(tmp_path: Path, sources: list[Path]) -> None:
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("a file where the cache folder should be")
    build = CountingBuild(make_slices())
    with pytest.warns(UserWarning, match="cache not written"):
        result = cached_training_slices({"dataset": "toy"}, sources, build, cache_dir=blocked)
    assert_same_slices(result, build.slices)


def test_key_parts_must_name_the_dataset(tmp_path: Path, sources: list[Path]) -> None:
    with pytest.raises(ValueError, match="dataset"):
        cached_training_slices({"reader": 1}, sources, CountingBuild([]), cache_dir=tmp_path)


def test_empty_build_is_cached_as_empty(tmp_path: Path, sources: list[Path]) -> None:
    assert cached_training_slices({"dataset": "toy"}, sources, CountingBuild([]), cache_dir=tmp_path) == []


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert cache_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("BENCH_CACHE_DIR")
    assert cache_root() == Path.home() / ".cache" / "bench"
