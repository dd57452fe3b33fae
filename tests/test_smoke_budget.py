"""The smoke budget exercises the code in seconds, even with a real SAM on a CPU: it scores only the first
cases of each split, cut to their middle slices, records that, and the leaderboard says it is no result."""
from __future__ import annotations

import json

import numpy as np

from bench.budget import BUDGETS
from bench.cli import main
from bench.data.synthetic import SyntheticDataset
from bench.evaluation import evaluation_subset


def test_evaluation_subset_keeps_the_first_cases_and_their_middle_slices():
    cases = list(SyntheticDataset().eval_cases("test"))
    assert cases[0].num_slices == 6
    subset = list(evaluation_subset(iter(cases), 2, 2))
    assert [case.case_id for case in subset] == [case.case_id for case in cases[:2]]
    for original, cut in zip(cases, subset):
        assert np.array_equal(cut.image, original.image[2:4]) and np.array_equal(cut.label, original.label[2:4])
    assert [case.num_slices for case in evaluation_subset(iter(cases), None, None)] == [6] * len(cases)


def test_a_smoke_run_scores_the_reduced_split_and_the_leaderboard_says_so(tmp_path, smoke_args):
    smoke = BUDGETS["smoke"]
    out = tmp_path / "runs"
    assert main(["run", "--methods", "supervised", "--labels", "2", "--out", str(out), *smoke_args]) == 0
    folder = out / "synthetic/smoke/supervised/2/seed0"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["num_test_cases"] == smoke.eval_cases
    assert summary["budget"]["eval_cases"] == smoke.eval_cases and summary["budget"]["eval_slices"] == smoke.eval_slices
    with np.load(folder / "predictions.npz") as predictions:
        assert [predictions[name].shape[0] for name in predictions.files] == [smoke.eval_slices] * smoke.eval_cases
    assert main(["leaderboard", str(out), "--out", str(tmp_path / "board"), "--no-plots"]) == 0
    markdown = (tmp_path / "board/synthetic/smoke/ssl4mis/leaderboard.md").read_text()
    assert "**Not a result:**" in markdown and "at most 2 cases, 2 slices each" in markdown
