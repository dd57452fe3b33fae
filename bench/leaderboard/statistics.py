"""Statistics behind a leaderboard: spread over seeds, case-level bootstrap intervals, paired tests.

Two sources of variation are reported separately, because they answer different questions:

* **seeds** (training randomness): mean and sample standard deviation (``ddof=1``) of the per-run
  means, as the SSL papers' ``mean ± std`` over seeds;
* **test cases** (which patients happen to be in the test split): a 95% percentile bootstrap
  interval of the mean over cases.  Each case's metric is first averaged over the seeds of that
  row (``seed_averaged_cases``), then the cases are resampled with replacement
  ``BOOTSTRAP_RESAMPLES`` = 2000 times with ``numpy.random.default_rng(BOOTSTRAP_SEED)``; the interval
  is the 2.5th and 97.5th percentile (numpy's linear interpolation) of the resampled means.  Every row
  uses the same seed, so rows with the same number of cases are resampled with the same indices
  (a paired bootstrap) and the files are reproducible byte for byte.

Differences between methods are tested per label budget with the Wilcoxon signed-rank test
(``scipy.stats.wilcoxon``, two-sided, its default zero handling) on the seed-averaged per-case Dice
of each method paired with the best method's on the same cases, and the p-values of the m methods
compared with the best are Holm-corrected (``holm_adjust``).  A method whose corrected p-value is
``>= ALPHA`` is *not significantly different* from the best.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
ALPHA = 0.05


def seed_spread(run_means: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample std (NaN for one seed) and count of the finite per-run means."""
    values = np.asarray(run_means, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan"), 0
    std = float(np.std(values, ddof=1)) if values.size > 1 else float("nan")
    return float(np.mean(values)), std, int(values.size)


def seed_averaged_cases(per_run_cases: Sequence[pd.Series]) -> pd.Series:
    """Case id -> the case's metric averaged over the runs (seeds) that scored it, NaNs skipped."""
    table = pd.concat(list(per_run_cases), axis=1)
    return table.mean(axis=1, skipna=True).sort_index()


def bootstrap_mean_ci(
    values: Sequence[float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped first)."""
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, data.size, size=(resamples, data.size))
    means = data[indices].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order.

    With the m p-values sorted ascending, ``p_(i)`` becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``
    (Holm 1979); NaNs stay NaN and do not count towards m.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for position, index in enumerate(order):
        running = max(running, min(1.0, (m - position) * p[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class PairedTest:
    method: str
    best: str
    num_cases: int
    statistic: float
    p_value: float


def wilcoxon_against(candidate: pd.Series, best: pd.Series, method: str, best_name: str) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of ``candidate`` vs ``best`` on the cases both scored.

    Identical values on every case (e.g. two methods that predict the same) give p = 1 rather than
    scipy's undefined statistic; no paired case at all gives NaN.
    """
    paired = pd.concat([candidate.rename("candidate"), best.rename("best")], axis=1).dropna()
    differences = (paired["candidate"] - paired["best"]).to_numpy()
    if differences.size == 0:
        return PairedTest(method, best_name, 0, float("nan"), float("nan"))
    if not np.any(differences):
        return PairedTest(method, best_name, int(differences.size), 0.0, 1.0)
    result = stats.wilcoxon(paired["candidate"].to_numpy(), paired["best"].to_numpy())
    return PairedTest(method, best_name, int(differences.size), float(result.statistic), float(result.pvalue))


def compare_with_best(case_dice: Mapping[str, pd.Series], means: Mapping[str, float]) -> pd.DataFrame:
    """Every method against the one with the highest mean Dice, Holm-corrected over the comparisons.

    ``case_dice``: method -> seed-averaged per-case Dice; ``means``: method -> the mean shown in the
    table (so the reference is the bold entry).  Ties on the mean go to the first name in sort order.
    Returns one row per method; the best's own row has no test.
    """
    columns = ["method", "best", "num_cases", "statistic", "p_value", "p_holm", "significant"]
    ranked = sorted((name for name in means if np.isfinite(means[name])), key=lambda name: (-means[name], name))
    if len(ranked) < 2:
        return pd.DataFrame(columns=columns)
    best = ranked[0]
    tests = [wilcoxon_against(case_dice[name], case_dice[best], name, best) for name in ranked[1:]]
    adjusted = holm_adjust([test.p_value for test in tests])
    rows = [{"method": best, "best": best, "num_cases": int(case_dice[best].notna().sum()), "statistic": np.nan,
             "p_value": np.nan, "p_holm": np.nan, "significant": ""}]
    for test, p_holm in zip(tests, adjusted):
        rows.append({"method": test.method, "best": best, "num_cases": test.num_cases, "statistic": test.statistic,
                     "p_value": test.p_value, "p_holm": p_holm,
                     "significant": "" if not np.isfinite(p_holm) else ("yes" if p_holm < ALPHA else "no")})
    return pd.DataFrame(rows, columns=columns)
