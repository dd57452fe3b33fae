"""The weak augmentation's geometry as tensor maps: ``apply_geometry`` reproduces the numpy/scipy
augmentation, ``invert_geometry`` undoes it, and the unlabeled stream hands both the geometry and the
un-augmented ``plain`` view to methods without changing any other view."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from bench import Geometry, apply_geometry, invert_geometry
from bench.data.adapter import TrainingSlice
from bench.data.augment import weak_augmentation
from bench.data.streams import SliceViews
from bench.geometry import rotate

SIZE = 24


def smooth_image(size: int = SIZE, seed: int = 0) -> np.ndarray:
    """Low-frequency content, so that bilinear resampling twice stays close to the original."""
    noise = np.random.default_rng(seed).random((size, size))
    return ndimage.gaussian_filter(noise, sigma=3).astype(np.float32)


def label_map(size: int = SIZE, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, (size, size))


def test_apply_reproduces_the_numpy_augmentation_in_all_three_branches():
    image, label = smooth_image(), label_map()
    branches = set()
    for draw in range(40):
        weak, weak_label, geometry = weak_augmentation(image, label, np.random.default_rng((7, draw)))
        branches.add("angle" if geometry.angle else ("turn" if geometry.flip_axis >= 0 else "none"))
        row = geometry.as_tensor()[None]
        applied = apply_geometry(torch.from_numpy(image)[None, None], row, "bilinear")[0, 0].numpy()
        np.testing.assert_allclose(applied, weak, atol=1e-5)
        applied_label = apply_geometry(torch.from_numpy(label)[None, None], row, "nearest")[0, 0].numpy()
        np.testing.assert_array_equal(applied_label, weak_label)
    assert branches == {"angle", "turn", "none"}


def test_rotation_matches_scipy_on_a_non_square_map():
    image = np.random.default_rng(3).random((20, 28)).astype(np.float32)
    expected = ndimage.rotate(image, -13.0, order=1, reshape=False, mode="nearest")
    np.testing.assert_allclose(rotate(torch.from_numpy(image)[None], -13.0)[0].numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("quarter_turns", range(4))
@pytest.mark.parametrize("flip_axis", [-1, 0, 1])
def test_quarter_turns_and_flips_round_trip_exactly(quarter_turns, flip_axis):
    maps = torch.rand(1, 3, SIZE, SIZE)
    geometry = Geometry(quarter_turns=quarter_turns, flip_axis=flip_axis).as_tensor()[None]
    assert torch.equal(invert_geometry(apply_geometry(maps, geometry), geometry), maps)
    assert torch.equal(apply_geometry(invert_geometry(maps, geometry), geometry), maps)
    expected = np.rot90(maps[0].numpy(), quarter_turns, axes=(1, 2))
    if flip_axis >= 0:
        expected = np.flip(expected, axis=1 + flip_axis)
    np.testing.assert_array_equal(apply_geometry(maps, geometry)[0].numpy(), expected)


def test_a_rotation_round_trips_inside_the_disc_it_keeps():
    image = torch.from_numpy(smooth_image(size=48))[None, None]
    geometry = torch.tensor([[0.0, -1.0, 17.5], [0.0, -1.0, -20.0]])
    images = image.expand(2, -1, -1, -1)
    restored = invert_geometry(apply_geometry(images, geometry), geometry)
    rows, columns = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    inside = ((rows - 23.5) ** 2 + (columns - 23.5) ** 2).sqrt() < 20
    error = (restored - images).abs()[..., inside]
    assert error.max() < 0.02 * (image.max() - image.min())
    assert not torch.allclose(apply_geometry(images, geometry)[0], images[0], atol=1e-3)  # it did rotate


def test_per_sample_geometry_in_one_batch():
    maps = torch.rand(3, 2, SIZE, SIZE)
    geometry = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 9.0], [0.0, -1.0, 0.0]])
    applied = apply_geometry(maps, geometry)
    assert torch.equal(applied[0], torch.flip(torch.rot90(maps[0], 1, dims=(-2, -1)), dims=(-2,)))
    assert torch.allclose(applied[1], rotate(maps[1], 9.0))
    assert torch.equal(applied[2], maps[2])


def test_geometry_record_round_trips_and_rejects_what_the_augmentation_never_does():
    geometry = Geometry(quarter_turns=3, flip_axis=1)
    assert Geometry.from_tensor(geometry.as_tensor()) == geometry
    with pytest.raises(ValueError, match="never follows"):
        Geometry(quarter_turns=1, flip_axis=0, angle=5.0)
    with pytest.raises(ValueError, match="non-square"):
        apply_geometry(torch.rand(1, 1, 8, 12), Geometry(quarter_turns=1, flip_axis=0).as_tensor()[None])


def test_stream_carries_index_geometry_and_plain_without_changing_the_other_views():
    slices = [TrainingSlice(case_id=f"case{i}", image=smooth_image(seed=i), label=label_map(seed=i))
              for i in range(3)]
    with_plain = SliceViews(slices, (SIZE, SIZE), ("weak", "strong", "plain"), with_labels=False, seed=5)
    without_plain = SliceViews(slices, (SIZE, SIZE), ("weak", "strong"), with_labels=False, seed=5)
    for code in range(9):
        sample, reference = with_plain[code], without_plain[code]
        assert torch.equal(sample["weak"], reference["weak"]) and torch.equal(sample["strong"], reference["strong"])
        assert "label" not in sample and int(sample["index"]) == code % 3
        assert torch.equal(sample["plain"][0], torch.from_numpy(with_plain.images[code % 3]))
        weak = apply_geometry(sample["plain"][None], sample["geometry"][None])[0]
        assert torch.allclose(weak, sample["weak"], atol=1e-5)
