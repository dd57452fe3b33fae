"""Leaderboard statistics against independent computations: bootstrap, Holm, Wilcoxon, seed spread."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.leaderboard.plots import pareto_front
from bench.leaderboard.statistics import (
    bootstrap_mean_ci,
    compare_with_best,
    holm_adjust,
    seed_averaged_cases,
    seed_spread,
    wilcoxon_against,
)


def test_bootstrap_of_constant_values_collapses_to_the_value():
    assert bootstrap_mean_ci([0.73] * 20) == pytest.approx((0.73, 0.73))


def test_bootstrap_of_a_normal_sample_has_the_normal_width():
    sample = np.random.default_rng(123).normal(5.0, 2.0, size=400)
    low, high = bootstrap_mean_ci(sample)
    expected_half_width = 1.96 * sample.std(ddof=1) / math.sqrt(sample.size)
    assert low < sample.mean() < high
    assert (high - low) / 2 == pytest.approx(expected_half_width, rel=0.1)
    assert abs((low + high) / 2 - sample.mean()) < 0.1 * expected_half_width


def test_bootstrap_is_seeded_and_drops_nans():
    values = list(np.random.default_rng(7).uniform(0, 1, 30)) + [np.nan]
    assert bootstrap_mean_ci(values) == bootstrap_mean_ci(values[:-1])
    assert bootstrap_mean_ci(values, seed=1) != bootstrap_mean_ci(values, seed=2)


def test_holm_matches_a_hand_computation():
    # sorted: 0.005 x4 = 0.02; 0.01 x3 = 0.03; 0.03 x2 = 0.06; 0.04 x1 = 0.04 -> monotone: 0.06
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN does not count towards m; adjusted values are capped at 1
    adjusted = holm_adjust([0.02, np.nan, 0.01])
    assert adjusted[0] == pytest.approx(0.02) and np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)
    assert holm_adjust([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_wilcoxon_is_scipys_on_the_paired_cases():
    rng = np.random.default_rng(0)
    best = pd.Series(rng.uniform(0.7, 0.9, 12), index=[f"c{i}" for i in range(12)])
    candidate = best - rng.uniform(-0.02, 0.08, 12)
    candidate["c3"] = np.nan  # a case the candidate did not score is left out of the pairs
    test = wilcoxon_against(candidate, best, "candidate", "best")
    kept = candidate.notna()
    direct = stats.wilcoxon(candidate[kept].to_numpy(), best[kept].to_numpy())
    assert test.num_cases == 11
    assert test.p_value == pytest.approx(direct.pvalue)
    assert test.statistic == pytest.approx(direct.statistic)


def test_identical_predictions_are_not_different():
    values = pd.Series([0.8, 0.7, 0.9], index=["a", "b", "c"])
    assert wilcoxon_against(values, values.copy(), "x", "y").p_value == 1.0


def test_compare_with_best_tests_everyone_against_the_highest_mean_with_holm():
    cases = [f"c{i}" for i in range(10)]
    best = pd.Series(np.linspace(0.80, 0.90, 10), index=cases)
    close = best - np.array([0.01, -0.01, 0.02, -0.02, 0.0, 0.01, -0.01, 0.005, -0.004, 0.003])
    worse = best - 0.2
    case_dice = {"best": best, "close": close, "worse": worse}
    means = {name: float(series.mean()) for name, series in case_dice.items()}
    table = compare_with_best(case_dice, means).set_index("method")
    assert set(table["best"]) == {"best"}
    order = sorted(["close", "worse"], key=lambda name: -means[name])
    raw = [stats.wilcoxon(case_dice[name].to_numpy(), best.to_numpy()).pvalue for name in order]
    assert list(table.loc[order, "p_holm"]) == pytest.approx(list(holm_adjust(raw)))
    assert table.loc["close", "significant"] == "no"
    assert table.loc["worse", "significant"] == "yes"
    assert table.loc["best", "significant"] == ""


def test_seed_spread_is_mean_and_sample_std():
    mean, std, count = seed_spread([0.8, 0.9, 1.0])
    assert (mean, count) == (pytest.approx(0.9), 3)
    assert std == pytest.approx(0.1)
    assert math.isnan(seed_spread([0.5])[1])


def test_seed_averaged_cases_averages_each_case_over_seeds():
    seed0 = pd.Series([0.2, 0.4], index=["a", "b"])
    seed1 = pd.Series([0.6, np.nan], index=["a", "b"])
    averaged = seed_averaged_cases([seed0, seed1])
    assert averaged["a"] == pytest.approx(0.4) and averaged["b"] == pytest.approx(0.4)


def test_pareto_front_keeps_points_no_one_beats_on_cost_and_score():
    costs = [1.0, 2.0, 3.0, 4.0, 2.5]
    scores = [0.5, 0.7, 0.6, 0.9, 0.7]
    assert pareto_front(costs, scores) == [0, 1, 3]
