import time

import numpy as np
import pytest
from scipy import ndimage

from bench.data.synthetic_phantoms import (
    CLASS_NAMES,
    DOMAIN_STYLES,
    PhantomConfig,
    generate_case,
    generate_cases,
)

SMALL = PhantomConfig(num_train=9, num_val=3, num_test=6, slices=5, size=32, seed=3)
CROSS = ndimage.generate_binary_structure(2, 1)


@pytest.fixture(scope="module")
def small_cases():
    return generate_cases(SMALL)


@pytest.fixture(scope="module")
def default_cases():
    start = time.perf_counter()
    cases = generate_cases(PhantomConfig())
    return cases, time.perf_counter() - start


def test_class_names_follow_acdc():
    assert CLASS_NAMES == ("RV", "MYO", "LV")


def test_deterministic_and_seed_dependent():
    a = generate_case(4, "train", SMALL)
    b = generate_case(4, "train", SMALL)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert a.image.tobytes() == b.image.tobytes()
    other_seed = generate_case(4, "train", PhantomConfig(size=32, slices=5, seed=4))
    assert not np.array_equal(a.image, other_seed.image)
    assert not np.array_equal(a.label, other_seed.label)
    other_case = generate_case(5, "train", SMALL)
    assert not np.array_equal(a.label, other_case.label)
    other_split = generate_case(4, "test", SMALL)
    assert not np.array_equal(a.label, other_split.label)


def test_generation_does_not_touch_global_rng():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    generate_case(0, "train", SMALL)
    assert np.random.random() == expected


def test_shapes_dtypes_range_and_spacing(small_cases):
    for case in small_cases:
        assert case.image.shape == (SMALL.slices, SMALL.size, SMALL.size)
        assert case.label.shape == case.image.shape
        assert case.image.dtype == np.float32
        assert np.issubdtype(case.label.dtype, np.integer)
        assert np.isfinite(case.image).all()
        assert case.image.min() >= 0.0 and case.image.max() <= 1.0
        assert case.image.max() - case.image.min() > 0.5
        assert len(case.spacing) == 3 and all(v > 0 for v in case.spacing)
    assert small_cases[0].spacing[1] == pytest.approx(1.5 * 96 / 32)


def test_label_values_and_middle_slice_has_all_classes(small_cases, default_cases):
    for case in small_cases + default_cases[0]:
        assert set(np.unique(case.label)) <= {0, 1, 2, 3}
        middle = case.label[case.num_slices // 2]
        assert {1, 2, 3} <= set(np.unique(middle)), case.case_id


def test_myocardium_surrounds_lv_and_rv_touches_myo_not_lv(small_cases, default_cases):
    for case in small_cases + default_cases[0]:
        for z, sl in enumerate(case.label):
            lv, myo, rv = sl == 3, sl == 2, sl == 1
            if lv.any():
                grown = ndimage.binary_dilation(lv, CROSS)
                assert not (grown & ~(lv | myo)).any(), (case.case_id, z)
                assert not lv[0].any() and not lv[-1].any() and not lv[:, 0].any() and not lv[:, -1].any()
            if rv.any():
                grown = ndimage.binary_dilation(rv, CROSS)
                assert (grown & myo).any(), (case.case_id, z)
                assert not (grown & lv).any(), (case.case_id, z)


def test_heart_shrinks_towards_apex(default_cases):
    cases, _ = default_cases
    shrinking = [(c.label[0] > 0).sum() > (c.label[-1] > 0).sum() for c in cases]
    assert all(shrinking)
    lv_areas = np.array([(c.label[0] == 3).sum() for c in cases])
    assert lv_areas.max() > 2.5 * lv_areas.min()


def test_split_sizes_ids_and_domains(small_cases):
    by_split = {s: [c for c in small_cases if c.split == s] for s in ("train", "val", "test")}
    assert [len(by_split[s]) for s in ("train", "val", "test")] == [9, 3, 6]
    ids = [c.case_id for c in small_cases]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("phantom_") for i in ids)
    for split_cases in by_split.values():
        assert {c.domain for c in split_cases} == set(SMALL.domains)


def test_custom_domains_and_validation():
    cfg = PhantomConfig(num_train=2, num_val=0, num_test=1, size=32, slices=2, domains=("vendor_c",))
    cases = generate_cases(cfg)
    assert len(cases) == 3 and {c.domain for c in cases} == {"vendor_c"}
    with pytest.raises(ValueError):
        PhantomConfig(domains=("no_such_vendor",))
    with pytest.raises(ValueError):
        PhantomConfig(domains=())
    assert set(PhantomConfig().domains) <= set(DOMAIN_STYLES)


def test_domains_differ_in_blood_myocardium_contrast(default_cases):
    cases, _ = default_cases
    contrast = {}
    for domain in PhantomConfig().domains:
        values = [c.image[c.label == 3].mean() - c.image[c.label == 2].mean() for c in cases if c.domain == domain]
        assert values
        contrast[domain] = float(np.mean(values))
    assert all(v > 0 for v in contrast.values()), contrast
    assert max(contrast.values()) > 2.0 * min(contrast.values()), contrast
    assert max(contrast.values()) - min(contrast.values()) > 0.15, contrast


def test_not_solvable_by_thresholding(default_cases):
    cases, _ = default_cases
    best_dice = []
    for case in cases[:12]:
        blood = np.isin(case.label, (1, 3))
        best = 0.0
        for threshold in np.linspace(0.0, 1.0, 51):
            pred = case.image > threshold
            best = max(best, 2.0 * (pred & blood).sum() / (pred.sum() + blood.sum()))
        best_dice.append(best)
    assert max(best_dice) < 0.92, best_dice
    assert np.median(best_dice) < 0.75, best_dice


def test_default_generation_is_fast(default_cases):
    cases, seconds = default_cases
    assert len(cases) == 64
    assert cases[0].image.shape == (6, 96, 96)
    assert seconds < 5.0


def test_single_slice_config():
    case = generate_case(0, "train", PhantomConfig(slices=1, size=48))
    assert case.image.shape == (1, 48, 48)
    assert {1, 2, 3} <= set(np.unique(case.label[0]))
