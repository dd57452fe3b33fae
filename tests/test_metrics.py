from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from medpy.metric import binary as mb
from scipy import ndimage as ndi
from scipy.spatial.distance import cdist

import bench.metrics as metrics
from bench.metrics import EMPTY_POLICIES, ClassScores, score_binary, score_case, summarize_case

TOL = 1e-6
ANISO = (5.0, 1.2, 0.8)


def blob(rng: np.random.Generator, shape: tuple[int, ...], sigma: float = 1.5, thr: float = 0.05,
         pad: int = 0) -> np.ndarray:
    """Thresholded smoothed noise; ``pad`` leaves a background frame so the crop margin is exercised."""
    inner = tuple(n - 2 * pad for n in shape)
    noise = ndi.gaussian_filter(rng.standard_normal(inner), sigma)
    out = np.zeros(shape, dtype=bool)
    out[tuple(slice(pad, pad + n) for n in inner)] = noise > thr
    assert out.any()
    return out


def surface_coords(mask: np.ndarray, spacing) -> np.ndarray:
    """Foreground voxels with a face neighbour in the background (outside the array counts as background)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = np.ones_like(mask)
    core = tuple(slice(1, -1) for _ in range(mask.ndim))
    for axis in range(mask.ndim):
        for shift in (-1, 1):
            interior &= np.roll(padded, shift, axis=axis)[core]
    surface = mask & ~interior
    ref = mask ^ ndi.binary_erosion(mask, structure=ndi.generate_binary_structure(mask.ndim, 1))
    assert np.array_equal(surface, ref)
    steps = np.ones(mask.ndim) if spacing is None else np.asarray(spacing, dtype=float)
    return np.argwhere(surface) * steps


def reference_scores(pred: np.ndarray, truth: np.ndarray, spacing) -> tuple[float, float, float, float]:
    inter = np.count_nonzero(pred & truth)
    dice = 2.0 * inter / (np.count_nonzero(pred) + np.count_nonzero(truth))
    jaccard = inter / np.count_nonzero(pred | truth)
    d = cdist(surface_coords(pred, spacing), surface_coords(truth, spacing))
    pred_to_truth = d.min(axis=1)
    truth_to_pred = d.min(axis=0)
    hd95 = float(np.percentile(np.concatenate([pred_to_truth, truth_to_pred]), 95))
    return dice, jaccard, hd95, float(pred_to_truth.mean())


def assert_scores(s: ClassScores, expected) -> None:
    got = (s.dice, s.jaccard, s.hd95, s.asd)
    assert got == pytest.approx(expected, abs=TOL, rel=0), (got, expected)


CASES_3D = [(seed, pad) for seed in range(4) for pad in (0, 3)]


@pytest.mark.parametrize("spacing", [ANISO, None])
@pytest.mark.parametrize("seed,pad", CASES_3D)
def test_3d_matches_independent_computation(seed, pad, spacing):
    rng = np.random.default_rng(seed)
    shape = (8, 22, 18)
    pred = blob(rng, shape, pad=pad)
    truth = blob(rng, shape, pad=pad)
    s = score_binary(pred.astype(np.int64), truth.astype(np.int64), spacing)
    assert not s.pred_empty and not s.truth_empty
    assert_scores(s, reference_scores(pred, truth, spacing))


@pytest.mark.parametrize("spacing", [(1.3, 0.7), None])
@pytest.mark.parametrize("seed,pad", [(10, 0), (11, 4), (12, 2)])
def test_2d_matches_independent_computation(seed, pad, spacing):
    rng = np.random.default_rng(seed)
    shape = (40, 34)
    pred = blob(rng, shape, sigma=2.5, pad=pad)
    truth = blob(rng, shape, sigma=2.5, pad=pad)
    assert_scores(score_binary(pred, truth, spacing), reference_scores(pred, truth, spacing))


@pytest.mark.parametrize("use_private", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_fast_path_equals_public_medpy(seed, use_private, monkeypatch):
    """Cropping and the shared distance transforms must reproduce medpy's public functions on full arrays."""
    if not use_private:
        monkeypatch.setattr(metrics, "_medpy_surface_distances", None)
    rng = np.random.default_rng(100 + seed)
    shape = (9, 30, 26)
    pred = blob(rng, shape, pad=seed)
    truth = blob(rng, shape, pad=2 * seed)
    s = score_binary(pred, truth, ANISO)
    expected = (mb.dc(pred, truth), mb.jc(pred, truth), mb.hd95(pred, truth, voxelspacing=ANISO),
                mb.asd(pred, truth, voxelspacing=ANISO))
    assert_scores(s, expected)


def test_asd_is_one_directional():
    truth = np.zeros((20, 20), dtype=bool)
    truth[5:15, 5:15] = True
    pred = np.zeros_like(truth)
    pred[5:15, 5:15] = True
    pred[0, 0] = True
    forward = score_binary(pred, truth, None).asd
    backward = score_binary(truth, pred, None).asd
    assert forward > backward == 0.0
    assert forward == pytest.approx(math.hypot(5, 5) / 37, abs=TOL)


def test_nonzero_labels_are_foreground():
    rng = np.random.default_rng(7)
    pred = blob(rng, (6, 16, 16))
    truth = blob(rng, (6, 16, 16))
    a = score_binary(pred.astype(np.uint8) * 3, truth.astype(np.int32) * 255, ANISO)
    b = score_binary(pred, truth, ANISO)
    assert a == b


SHAPE = (4, 5, 6)
DIAG_ANISO = math.sqrt((4 * 5.0) ** 2 + (5 * 1.2) ** 2 + (6 * 0.8) ** 2)
DIAG_VOX = math.sqrt(4 ** 2 + 5 ** 2 + 6 ** 2)
NAN4 = (math.nan,) * 4

# policy -> {situation: expected (dice, jaccard, hd95, asd)} with spacing ANISO
EXPECTED = {
    "ssl4mis": {"both": (0, 0, 0, 0), "pred": (0, 0, 0, 0), "truth": (0, 0, 0, 0)},
    "zero": {"both": (0, 0, 0, 0), "pred": (0, 0, 0, 0), "truth": (0, 0, 0, 0)},
    "strict": {"both": (1, 1, 0, 0), "pred": (0, 0, DIAG_ANISO, DIAG_ANISO),
               "truth": (0, 0, DIAG_ANISO, DIAG_ANISO)},
    "synfoc": {"both": (1, 1, 0, 0), "pred": (0, 0, 100, 100), "truth": (0, 0, 100, 100)},
    "nan": {"both": NAN4, "pred": NAN4, "truth": NAN4},
}


def test_every_policy_has_expectations_and_description():
    assert set(EXPECTED) == set(EMPTY_POLICIES)
    assert all(isinstance(v, str) and v for v in EMPTY_POLICIES.values())


def _masks(situation: str) -> tuple[np.ndarray, np.ndarray]:
    full = np.zeros(SHAPE, dtype=np.int64)
    full[1:3, 1:4, 2:5] = 1
    empty = np.zeros(SHAPE, dtype=np.int64)
    return {"both": (empty, empty), "pred": (empty, full), "truth": (full, empty)}[situation]


@pytest.mark.parametrize("policy", sorted(EXPECTED))
@pytest.mark.parametrize("situation", ["both", "pred", "truth"])
def test_empty_policies(policy, situation):
    pred, truth = _masks(situation)
    s = score_binary(pred, truth, ANISO, policy=policy)
    assert s.pred_empty == (situation in ("both", "pred"))
    assert s.truth_empty == (situation in ("both", "truth"))
    got = np.array([s.dice, s.jaccard, s.hd95, s.asd])
    np.testing.assert_allclose(got, np.array(EXPECTED[policy][situation], dtype=float), atol=1e-12, rtol=0)


def test_strict_diagonal_in_voxels_and_2d():
    pred, truth = _masks("pred")
    s = score_binary(pred, truth, None, policy="strict")
    assert s.hd95 == s.asd == pytest.approx(DIAG_VOX, abs=1e-12)
    p2 = np.zeros((7, 9), dtype=int)
    t2 = p2.copy()
    t2[3, 3] = 1
    s2 = score_binary(p2, t2, (2.0, 0.5), policy="strict")
    assert s2.hd95 == s2.asd == pytest.approx(math.hypot(14.0, 4.5), abs=1e-12)


def test_policies_agree_when_both_present():
    rng = np.random.default_rng(3)
    pred = blob(rng, (6, 14, 12))
    truth = blob(rng, (6, 14, 12))
    results = {p: score_binary(pred, truth, ANISO, policy=p) for p in EMPTY_POLICIES}
    assert len(set(results.values())) == 1


def _four_class_case():
    rng = np.random.default_rng(42)
    shape = (6, 24, 20)
    truth = np.zeros(shape, dtype=np.int64)
    pred = np.zeros(shape, dtype=np.int64)
    for c in (1, 2, 3):
        truth[blob(rng, shape, thr=0.25) & (truth == 0)] = c
    for c in (1, 3):
        pred[blob(rng, shape, thr=0.25) & (pred == 0)] = c
    assert set(np.unique(truth)) == {0, 1, 2, 3} and set(np.unique(pred)) == {0, 1, 3}
    return pred, truth


def test_score_case_and_summary_ssl4mis():
    pred, truth = _four_class_case()
    scores = score_case(pred, truth, 4, ANISO)
    assert sorted(scores) == [1, 2, 3]
    for c in (1, 3):
        assert_scores(scores[c], reference_scores(pred == c, truth == c, ANISO))
    assert scores[2] == ClassScores(0.0, 0.0, 0.0, 0.0, pred_empty=True, truth_empty=False)

    summary = summarize_case(scores, ["RV", "Myo", "LV"])
    expected_keys = {f"{m}_{n}" for m in ("dice", "jaccard", "hd95", "asd", "empty_pred") for n in ("RV", "Myo", "LV")}
    assert set(summary) == expected_keys | {"dice", "jaccard", "hd95", "asd"}
    assert summary["empty_pred_Myo"] == 1.0 and summary["empty_pred_RV"] == summary["empty_pred_LV"] == 0.0
    assert summary["dice_LV"] == scores[3].dice and summary["hd95_RV"] == scores[1].hd95
    for m in ("dice", "jaccard", "hd95", "asd"):
        assert summary[m] == pytest.approx((getattr(scores[1], m) + 0.0 + getattr(scores[3], m)) / 3, abs=1e-12)


def test_score_case_and_summary_nan_drops_class():
    pred, truth = _four_class_case()
    scores = score_case(pred, truth, 4, ANISO, policy="nan")
    assert all(math.isnan(getattr(scores[2], m)) for m in ("dice", "jaccard", "hd95", "asd"))
    summary = summarize_case(scores, ["RV", "Myo", "LV"])
    assert math.isnan(summary["dice_Myo"])
    for m in ("dice", "jaccard", "hd95", "asd"):
        assert summary[m] == pytest.approx((getattr(scores[1], m) + getattr(scores[3], m)) / 2, abs=1e-12)


def test_summary_all_nan_is_nan_without_warnings():
    truth = np.zeros((3, 8, 8), dtype=np.int64)
    pred = truth.copy()
    scores = score_case(pred, truth, 3, None, policy="nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = summarize_case(scores, ["a", "b"])
    assert all(math.isnan(summary[m]) for m in ("dice", "jaccard", "hd95", "asd"))
    assert summary["empty_pred_a"] == summary["empty_pred_b"] == 1.0


def test_unknown_policy():
    m = np.ones((3, 3), dtype=int)
    with pytest.raises(ValueError, match=r"'bogus'.*ssl4mis") as e:
        score_binary(m, m, None, policy="bogus")
    assert all(p in str(e.value) for p in EMPTY_POLICIES)
    with pytest.raises(ValueError, match="bogus"):
        score_case(m, m, 2, None, policy="bogus")


def test_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 6\)"):
        score_binary(np.ones((4, 5)), np.ones((4, 6)), None)
    with pytest.raises(ValueError, match=r"\(2, 4, 5\).*\(2, 4, 6\)"):
        score_case(np.ones((2, 4, 5), int), np.ones((2, 4, 6), int), 2, None)


def test_spacing_length():
    m = np.ones((2, 4, 5), dtype=int)
    with pytest.raises(ValueError, match=r"spacing.*2 entries.*3D"):
        score_binary(m, m, (1.0, 1.0))
    with pytest.raises(ValueError, match=r"spacing.*3 entries.*2D"):
        score_case(m[0], m[0], 2, ANISO)


def test_other_bad_inputs():
    m = np.ones((2, 4, 5), dtype=int)
    with pytest.raises(ValueError, match="outside 0..2"):
        score_case(m * 3, m, 3, None)
    with pytest.raises(ValueError, match="num_classes"):
        score_case(m, m, 1, None)
    with pytest.raises(ValueError, match="2D or 3D"):
        score_binary(np.ones(5), np.ones(5), None)
    with pytest.raises(ValueError, match="positive"):
        score_binary(m, m, (1.0, 0.0, 1.0))
    scores = score_case(m, m, 3, None)
    with pytest.raises(ValueError, match="class names"):
        summarize_case(scores, ["only_one"])
