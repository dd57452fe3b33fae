"""``build_leaderboard`` on run folders with known per-case numbers: derived values, layout, marks,
splitting, bad runs, published numbers and byte-for-byte rebuilds."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.data.adapter import DatasetAdapter
from bench.data.case import Case
from bench.leaderboard import bootstrap_mean_ci, build_leaderboard, collect_runs, load_reported
from bench.leaderboard.plots import plot_qualitative
from bench.leaderboard.tables import build_group_tables
from bench.registry import DATASETS, METHODS

CLASSES = ("RV", "MYO", "LV")
CLASS_OFFSETS = (-0.02, 0.0, 0.02)
"""Per-class Dice = case Dice + offset, so the class mean is the case Dice."""
TOY_CASES = 6


def write_run(
    root: Path,
    dice: list[float],
    *,
    method: str = "supervised",
    labels: str = "1",
    seed: int = 0,
    dataset: str = "acdc",
    budget: str = "paper",
    policy: str = "ssl4mis",
    num_train: int = 70,
    flags: tuple[str, ...] = (),
    trains: bool = True,
    hd95: list[float] | None = None,
    wall_seconds: float = 100.0,
    case_prefix: str = "case",
    predictions: dict[str, np.ndarray] | None = None,
) -> Path:
    """A finished run as ``execute_run`` leaves it, with the per-case Dice given."""
    directory = root / dataset / budget / method / labels / f"seed{seed}"
    directory.mkdir(parents=True)
    hd95 = hd95 if hd95 is not None else [10.0 * (1 - value) for value in dice]
    rows = []
    for index, (case_dice, case_hd95) in enumerate(zip(dice, hd95)):
        row = {"case_id": f"{case_prefix}{index:02d}", "domain": "default", "distance_unit": "mm"}
        for name, offset in zip(CLASSES, CLASS_OFFSETS):
            row.update({f"dice_{name}": case_dice + offset, f"jaccard_{name}": 0.0, f"hd95_{name}": case_hd95,
                        f"asd_{name}": case_hd95 / 4, f"empty_pred_{name}": 0.0})
        row.update({"dice": case_dice, "jaccard": case_dice / (2 - case_dice), "hd95": case_hd95, "asd": case_hd95 / 4})
        rows.append(row)
    pd.DataFrame(rows).to_csv(directory / "per_case.csv", index=False)
    summary = {
        "method": method, "family": "baseline", "dataset": dataset, "labels": labels,
        "num_labeled_cases": num_train if labels == "all" else int(labels.rstrip("%")), "num_train_cases": num_train,
        "seed": seed, "budget": {"name": budget}, "empty_policy": policy, "flags": list(flags),
        "num_test_cases": len(rows), "config": {"options": {}}, "dataset_protocol": {"dataset": dataset},
        "metrics": {"dice": -1.0},  # never read: every number comes from per_case.csv
        "training": {"best_validation_dice": 0.5 if trains else None, "best_step": 10 if trains else 0,
                     "train_seconds": wall_seconds * 0.9},
        "wall_seconds": wall_seconds, "peak_memory_mb": 512.0, "device": "cpu",
    }
    (directory / "summary.json").write_text(json.dumps(summary))
    if predictions is not None:
        np.savez_compressed(directory / "predictions.npz", **predictions)
    return directory


def table_rows(markdown: str, first_table_only: bool = True) -> dict[tuple[str, str], list[str]]:
    """(method, #Lab) -> cells of the first Markdown table."""
    rows = {}
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Method"))
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[(cells[0], cells[1])] = cells[2:]
    return rows


def test_numbers_are_derived_from_the_per_case_rows(tmp_path):
    runs = tmp_path / "runs"
    per_seed = [[0.70, 0.80, 0.90, 0.60], [0.75, 0.85, 0.80, 0.70], [0.65, 0.90, 0.85, 0.50]]
    for seed, dice in enumerate(per_seed):
        write_run(runs, dice, method="unimatch", seed=seed)
    build_leaderboard([runs], tmp_path / "out", plots=False, log=lambda _: None)
    folder = tmp_path / "out" / "acdc" / "paper" / "ssl4mis"
    long = pd.read_csv(folder / "runs.csv")
    assert list(long["seed"]) == [0, 1, 2]
    assert long["dice"].to_numpy() == pytest.approx([np.mean(d) for d in per_seed])
    assert long["dice_LV"].to_numpy() == pytest.approx([np.mean(d) + 0.02 for d in per_seed], abs=1e-6)
    summary = pd.read_csv(folder / "summary.csv").iloc[0]
    run_means = [np.mean(d) for d in per_seed]
    assert summary["dice_mean"] == pytest.approx(np.mean(run_means), abs=1e-6)
    assert summary["dice_std"] == pytest.approx(np.std(run_means, ddof=1), abs=1e-6)
    assert (summary["num_seeds"], summary["num_cases"], summary["labels"]) == (3, 4, "1/70")
    low, high = bootstrap_mean_ci(np.mean(per_seed, axis=0))
    assert (summary["dice_ci_low"], summary["dice_ci_high"]) == pytest.approx((low, high), abs=1e-6)
    assert summary["hd95_mean"] == pytest.approx(np.mean([10 * (1 - np.mean(d)) for d in per_seed]), abs=1e-5)


def test_best_is_bold_second_underlined_per_budget_and_column(tmp_path):
    runs = tmp_path / "runs"
    cases = 8  # enough for the Wilcoxon test to separate the methods: no dagger gets in the way
    write_run(runs, [0.80] * cases, method="bcp", hd95=[9.0] * cases)
    write_run(runs, [0.85] * cases, method="unimatch", hd95=[5.0] * cases)
    write_run(runs, [0.70] * cases, method="supervised", hd95=[2.0] * cases)
    write_run(runs, [0.90] * cases, method="supervised", labels="3", hd95=[1.0] * cases)
    write_run(runs, [0.95] * cases, method="fully-supervised", labels="all")
    write_run(runs, [0.50] * cases, method="sam-point", flags=("ground-truth-prompts",), trains=False)
    build_leaderboard([runs], tmp_path / "out", plots=False, log=lambda _: None)
    folder = tmp_path / "out" / "acdc" / "paper" / "ssl4mis"
    rows = table_rows((folder / "leaderboard.md").read_text())
    assert list(rows) == [("fully-supervised", "all"), ("sam-point [ground-truth-prompts]", "0/70"),
                          ("unimatch", "1/70"), ("bcp", "1/70"), ("supervised", "1/70"), ("supervised", "3/70")]
    dice, hd95 = 1, 3  # after the seed count
    assert rows[("unimatch", "1/70")][dice] == "**85.00**"
    assert rows[("bcp", "1/70")][dice] == "<ins>80.00</ins>"
    assert rows[("supervised", "1/70")][dice] == "70.00"
    assert rows[("supervised", "1/70")][hd95] == "**2.00**"  # lower is better for distances
    assert rows[("unimatch", "1/70")][hd95] == "<ins>5.00</ins>"
    assert rows[("bcp", "1/70")][hd95] == "9.00"
    assert rows[("supervised", "3/70")][dice] == "90.00"  # alone in its budget: nothing to rank
    latex = (folder / "leaderboard.tex").read_text()
    assert "\\toprule" in latex and "\\bottomrule" in latex
    assert "unimatch & 1/70 & \\textbf{85.00}" in latex
    assert "bcp & 1/70 & \\underline{80.00}" in latex


def test_methods_close_to_the_best_get_a_dagger(tmp_path):
    runs = tmp_path / "runs"
    rng = np.random.default_rng(0)
    best = rng.uniform(0.75, 0.9, 12)
    close = best + np.array([0.01, -0.012, 0.008, -0.01, 0.004, -0.006, 0.011, -0.009, 0.002, -0.003, 0.007, -0.0125])
    write_run(runs, list(best), method="cpc-sam")
    write_run(runs, list(close), method="unimatch")
    write_run(runs, list(best - 0.2), method="supervised")
    build_leaderboard([runs], tmp_path / "out", plots=False, log=lambda _: None)
    folder = tmp_path / "out" / "acdc" / "paper" / "ssl4mis"
    rows = table_rows((folder / "leaderboard.md").read_text())
    assert rows[("unimatch", "1/70")][1].endswith("†")
    assert not rows[("supervised", "1/70")][1].endswith("†")
    assert not rows[("cpc-sam", "1/70")][1].endswith("†")
    tests = pd.read_csv(folder / "significance.csv").set_index("method")
    assert tests.loc["unimatch", "significant"] == "no" and tests.loc["supervised", "significant"] == "yes"
    assert "$^\\dagger$" in next(line for line in (folder / "leaderboard.tex").read_text().splitlines()
                                 if line.startswith("unimatch"))


def test_mixed_budgets_datasets_and_policies_are_never_averaged(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, [0.8, 0.8])
    write_run(runs, [0.4, 0.4], budget="quick")
    write_run(runs, [0.6, 0.6], dataset="busi", num_train=431, labels="10")
    write_run(runs / "strict", [0.2, 0.2], policy="strict")
    report = build_leaderboard([runs], tmp_path / "out", plots=False, log=lambda _: None)
    folders = sorted(table.directory.relative_to(tmp_path / "out").as_posix() for table in report.tables)
    assert folders == ["acdc/paper/ssl4mis", "acdc/paper/strict", "acdc/quick/ssl4mis", "busi/paper/ssl4mis"]
    expected = {"acdc/paper/ssl4mis": 0.8, "acdc/paper/strict": 0.2, "acdc/quick/ssl4mis": 0.4, "busi/paper/ssl4mis": 0.6}
    for folder, dice in expected.items():
        summary = pd.read_csv(tmp_path / "out" / folder / "summary.csv")
        assert len(summary) == 1 and summary["dice_mean"].iloc[0] == pytest.approx(dice)
    assert "acdc/quick/ssl4mis/leaderboard.md" in (tmp_path / "out" / "index.md").read_text()


def test_mixed_precision_runs_form_their_own_row(tmp_path):
    """A bf16 seed is a different experiment from fp32 seeds of the same method: never averaged with them."""
    runs = tmp_path / "runs"
    write_run(runs, [0.8, 0.8], method="cpc-sam", seed=0)
    bf16 = write_run(runs, [0.4, 0.4], method="cpc-sam", seed=1)
    summary = json.loads((bf16 / "summary.json").read_text())
    summary["config"]["precision"] = "bf16"
    (bf16 / "summary.json").write_text(json.dumps(summary))
    build_leaderboard([runs], tmp_path / "out", plots=False, log=lambda _: None)
    table = pd.read_csv(tmp_path / "out" / "acdc" / "paper" / "ssl4mis" / "summary.csv").set_index("method")
    assert table.loc["cpc-sam", "dice_mean"] == pytest.approx(0.8)
    assert table.loc["cpc-sam [bf16-autocast]", "dice_mean"] == pytest.approx(0.4)
    assert set(table["num_seeds"]) == {1}


def record_params(directory: Path, params: dict, overrides: dict | None = None) -> None:
    """Give a written run the ``params`` (as trained) and ``config.params`` (as asked) a real run records."""
    summary = json.loads((directory / "summary.json").read_text())
    summary["params"] = params
    summary["config"]["params"] = overrides or {}
    (directory / "summary.json").write_text(json.dumps(summary))


def test_runs_with_other_hyperparameters_form_their_own_rows(tmp_path):
    """A seed trained with an override, or with a default the code has changed since, is another
    experiment: its own row, named with the difference; a changed default also blocks a paper comparison."""
    defaults = dataclasses.asdict(METHODS.get("unimatch").default_params())
    runs = tmp_path / "runs"
    # An override equal to the default changes nothing: same row as the defaults.
    record_params(write_run(runs, [0.8, 0.8], method="unimatch", seed=0), defaults,
                  {"confidence_threshold": defaults["confidence_threshold"]})
    record_params(write_run(runs, [0.8, 0.8], method="unimatch", seed=3), defaults)
    record_params(write_run(runs, [0.6, 0.6], method="unimatch", seed=1),
                  {**defaults, "confidence_threshold": 0.5}, {"confidence_threshold": 0.5})
    outdated = {name: value for name, value in defaults.items() if name != "confidence_threshold"}
    record_params(write_run(runs, [0.4, 0.4], method="unimatch", seed=2), outdated)
    build_leaderboard([runs], tmp_path / "out", reported=True, plots=False, log=lambda _: None)
    folder = tmp_path / "out" / "acdc" / "paper" / "ssl4mis"
    table = pd.read_csv(folder / "summary.csv").set_index("method")
    assert table["dice_mean"].to_dict() == pytest.approx({
        "unimatch": 0.8, "unimatch [confidence_threshold=0.5]": 0.6,
        "unimatch [defaults changed: confidence_threshold]": 0.4})
    assert table["num_seeds"].to_dict() == {"unimatch": 2, "unimatch [confidence_threshold=0.5]": 1,
                                            "unimatch [defaults changed: confidence_threshold]": 1}
    assert set(table["tuning_trials"]) == {0}
    long = pd.read_csv(folder / "runs.csv").set_index("seed")
    assert json.loads(long.loc[1, "params"])["confidence_threshold"] == 0.5
    paper = pd.read_csv(folder / "published_vs_reproduced.csv").set_index("method")
    assert set(paper.loc["unimatch", "comparable"]) == {"yes"}
    assert set(paper.loc["unimatch [defaults changed: confidence_threshold]", "comparable"]) == {
        "not comparable: defaults changed: confidence_threshold"}
    markdown = (folder / "leaderboard.md").read_text()
    assert "`name=value`: set by the sweep file" in markdown and "no longer uses" in markdown
    assert "`tuned: N trials`" not in markdown and "Search budgets differ" not in markdown


def test_unusable_runs_are_listed_and_left_out(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, [0.8, 0.7])
    failed = write_run(runs, [0.5, 0.5], method="bcp")
    (failed / "failure.json").write_text(json.dumps({"reason": "NaN loss at step 3"}))
    incomplete = runs / "acdc" / "paper" / "cps" / "1" / "seed0"
    incomplete.mkdir(parents=True)
    (incomplete / "config.json").write_text("{}")
    garbled = write_run(runs, [0.5, 0.5], method="urpc")
    (garbled / "per_case.csv").write_text("this,is\nnot,a per-case table\n")
    partial = write_run(runs, [0.5, 0.5], method="unimatch")
    summary = json.loads((partial / "summary.json").read_text())
    (partial / "summary.json").write_text(json.dumps({**summary, "num_test_cases": 5}))
    broken = write_run(runs, [0.5, 0.5], method="ua-mt")
    (broken / "summary.json").write_text("{not json")
    duplicate_root = tmp_path / "copy"
    write_run(duplicate_root, [0.1, 0.1])
    messages: list[str] = []
    report = build_leaderboard([runs, duplicate_root], tmp_path / "out", plots=False, log=messages.append)
    skipped = pd.read_csv(tmp_path / "out" / "skipped_runs.csv").set_index("run")["reason"]
    assert "NaN loss at step 3" in skipped["runs/acdc/paper/bcp/1/seed0"]
    assert "no summary.json" in skipped["runs/acdc/paper/cps/1/seed0"]
    assert "lacks column" in skipped["runs/acdc/paper/urpc/1/seed0"]
    assert "partial per_case.csv" in skipped["runs/acdc/paper/unimatch/1/seed0"]
    assert "unreadable summary.json" in skipped["runs/acdc/paper/ua-mt/1/seed0"]
    assert "duplicate of copy/acdc/paper/supervised/1/seed0" in skipped["runs/acdc/paper/supervised/1/seed0"]
    assert len(skipped) == len(report.skipped) == 6
    long = pd.read_csv(tmp_path / "out" / "acdc" / "paper" / "ssl4mis" / "runs.csv")
    assert list(long["run"]) == ["copy/acdc/paper/supervised/1/seed0"]
    assert any("6 run(s) left out" in message for message in messages)


def test_missing_or_empty_runs_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no such runs folder"):
        build_leaderboard([tmp_path / "nowhere"], tmp_path / "out", plots=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no run folders found"):
        build_leaderboard([tmp_path / "empty"], tmp_path / "out", plots=False)


def test_published_numbers_sit_beside_matching_runs_only(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, [0.80, 0.82], method="unimatch", hd95=[10.0, 12.0])
    write_run(runs, [0.80, 0.82], method="unimatch", budget="quick")
    write_run(runs, [0.88, 0.90], method="bcp", labels="7")
    write_run(runs, [0.50, 0.50], method="supervised", labels="2")
    build_leaderboard([runs], tmp_path / "out", reported=True, plots=False, log=lambda _: None)
    paper = pd.read_csv(tmp_path / "out" / "acdc" / "paper" / "ssl4mis" / "published_vs_reproduced.csv")
    unimatch = paper[paper["method"] == "unimatch"].set_index("source")
    assert sorted(unimatch.index) == ["CPC-SAM Table 1", "InteractMatch Table 1"]
    row = unimatch.loc["CPC-SAM Table 1"]
    assert row["comparable"] == "yes"
    assert (row["dice_ours"], row["dice_published"], row["dice_gap"]) == pytest.approx((81.0, 84.47, 81.0 - 84.47))
    assert row["hd95_gap"] == pytest.approx(11.0 - 15.36)
    bcp = paper[paper["method"] == "bcp"].set_index("source")
    assert sorted(bcp.index) == ["KnowSAM Table II", "SynFoC Table 13"]
    assert bcp.loc["KnowSAM Table II", "dice_gap"] == pytest.approx(89.0 - 88.84)
    assert np.isnan(bcp.loc["KnowSAM Table II", "hd95_gap"])  # KnowSAM does not state its distance unit
    assert bcp.loc["KnowSAM Table II", "comparable"].startswith("Dice/Jaccard only")
    assert paper.loc[paper["method"] == "supervised", "comparable"].tolist() == ["no published number"]
    quick = pd.read_csv(tmp_path / "out" / "acdc" / "quick" / "ssl4mis" / "published_vs_reproduced.csv")
    assert set(quick["comparable"]) == {"not comparable: budget quick"}
    assert quick["dice_gap"].isna().all() and (quick["dice_published"] == 84.47).all()
    markdown = (tmp_path / "out" / "acdc" / "quick" / "ssl4mis" / "leaderboard.md").read_text()
    assert "81.00 / 84.47 |" in markdown and "not comparable: budget quick" in markdown


def test_reported_csv_is_well_formed():
    reported = load_reported()
    assert len(reported) == 168
    assert (reported["labeled_cases"] <= reported["train_cases"]).all()
    assert reported["dice"].between(0, 100).all()
    assert set(reported["dataset"]) == {"acdc", "busi", "la"}
    assert set(reported["distance_unit"]) <= {"mm", "pixel", "voxel", "not stated", "pixel (as CPC-SAM; not stated)"}
    cpc = reported[(reported["paper"] == "CPC-SAM") & (reported["dataset"] == "acdc") & (reported["labeled_cases"] == 1)]
    assert cpc.set_index("registry_method").loc["cpc-sam", ["dice", "jaccard", "hd95", "asd"]].tolist() == [
        85.56, 75.74, 9.19, 2.84]
    semisam = reported[(reported["paper"] == "SemiSAM") & (reported["registry_method"] == "semisam")]
    # SemiSAM prints ASD before 95HD
    assert semisam.set_index("labeled_cases").loc[1, ["hd95", "asd"]].tolist() == [45.79, 20.60]


class ToyDataset(DatasetAdapter):
    """Six 2-slice test cases with a square per class: enough for the qualitative figure."""

    name = "lb-toy"
    class_names = CLASSES

    def train_case_ids(self) -> list[str]:
        return []

    def eval_cases(self, split: str):
        for index in range(TOY_CASES):
            yield Case(f"toy{index:02d}", *toy_volume(index), split="test")


def toy_volume(index: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(index).uniform(0, 0.3, (2, 24, 24)).astype(np.float32)
    label = np.zeros((2, 24, 24), dtype=np.uint8)
    for cls in (1, 2, 3):
        top = 2 + 6 * cls
        label[1, top:top + 5, 4 + index:12 + index] = cls
    image[label > 0] += 0.6
    return image, label


def register_toy_dataset() -> None:
    DATASETS.discover()
    DATASETS._entries[ToyDataset.name] = ToyDataset


def write_toy_runs(root: Path) -> None:
    rng = np.random.default_rng(0)
    truths = {f"toy{i:02d}": toy_volume(i)[1] for i in range(TOY_CASES)}
    for method, quality in (("bcp", 0.8), ("unimatch", 0.7), ("supervised", 0.5)):
        for labels in ("1", "3"):
            for seed in (0, 1):
                dice = list(np.clip(quality + 0.05 * rng.standard_normal(TOY_CASES), 0, 1))
                predictions = {case: np.roll(truth, int(round((1 - quality) * 6)), axis=2) for case, truth in truths.items()}
                write_run(root, dice, method=method, labels=labels, seed=seed, dataset="lb-toy", num_train=20,
                          case_prefix="toy", wall_seconds=100.0 * (1 + quality), predictions=predictions)
    write_run(root, [0.95] * TOY_CASES, method="fully-supervised", labels="all", dataset="lb-toy", num_train=20,
              case_prefix="toy", predictions=truths)


BUILD_IN_SUBPROCESS = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    import test_leaderboard
    from bench.leaderboard import build_leaderboard
    test_leaderboard.register_toy_dataset()
    build_leaderboard([Path(sys.argv[1])], Path(sys.argv[2]), reported=True, log=lambda _: None)
    """
)


def test_rebuilding_from_the_same_runs_reproduces_every_byte(tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS._entries, ToyDataset.name, ToyDataset)
    runs = tmp_path / "runs"
    write_toy_runs(runs)
    first = build_leaderboard([runs], tmp_path / "first", reported=True, log=lambda _: None)
    assert not first.messages  # every figure was drawn, the qualitative ones included
    env = dict(os.environ, PYTHONHASHSEED="12345")
    subprocess.run([sys.executable, "-c", BUILD_IN_SUBPROCESS, str(runs), str(tmp_path / "second"),
                    str(Path(__file__).parent)], check=True, env=env, timeout=300)
    files = sorted(path.relative_to(tmp_path / "first") for path in (tmp_path / "first").rglob("*") if path.is_file())
    figures = {path.name for path in files if path.parent.name == "figures"}
    for stem in ("dice_vs_labels", "per_class_dice", "spread", "cost"):
        assert {f"{stem}.png", f"{stem}.svg"} <= figures
    assert {"qualitative_1-20.png", "qualitative_3-20.png"} <= figures
    second = sorted(path.relative_to(tmp_path / "second") for path in (tmp_path / "second").rglob("*") if path.is_file())
    assert files == second
    differing = [relative for relative in files
                 if (tmp_path / "first" / relative).read_bytes() != (tmp_path / "second" / relative).read_bytes()]
    assert not differing


def test_qualitative_figure_is_skipped_with_a_message_without_predictions(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, [0.8, 0.7], method="bcp")
    report = build_leaderboard([runs], tmp_path / "out", log=lambda _: None)
    assert any("qualitative figure skipped" in message and "predictions.npz" in message for message in report.messages)
    assert (tmp_path / "out" / "acdc" / "paper" / "ssl4mis" / "figures" / "spread.png").exists()


def test_a_real_smoke_run_becomes_a_leaderboard(tmp_path, smoke_args):
    from bench.cli import main

    assert main(["run", "--methods", "supervised", "--dataset", "synthetic", "--labels", "1", "--seeds", "1",
                 "--out", str(tmp_path / "runs"), *smoke_args]) == 0
    report = build_leaderboard([tmp_path / "runs"], tmp_path / "out", plots=False, log=lambda _: None)
    assert [table.num_runs for table in report.tables] == [1] and not report.skipped
    summary = pd.read_csv(report.tables[0].directory / "summary.csv")
    assert np.isfinite(summary["dice_mean"]).all() and summary["labels"].tolist() == ["1/40"]


class MovedToyDataset(ToyDataset):
    """The toy cases, readable only from the folder given (like a dataset on disk)."""

    name = "lb-toy-on-disk"

    def eval_cases(self, split: str):
        if self.data_root is None or not (Path(self.data_root) / "present").exists():
            raise FileNotFoundError(f"{self.data_root}: no dataset here")
        yield from super().eval_cases(split)


def test_qualitative_figure_finds_a_moved_dataset_through_data_roots(tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS._entries, MovedToyDataset.name, MovedToyDataset)
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    truths = {f"toy{i:02d}": toy_volume(i)[1] for i in range(TOY_CASES)}
    run = write_run(tmp_path / "runs", [0.9] * TOY_CASES, dataset=MovedToyDataset.name, num_train=20,
                    case_prefix="toy", predictions=truths)
    summary = json.loads((run / "summary.json").read_text())
    summary["dataset_protocol"]["data_root"] = str(tmp_path / "where-it-was")
    (run / "summary.json").write_text(json.dumps(summary))
    moved = tmp_path / "where-it-is"
    moved.mkdir()
    (moved / "present").write_text("")
    records, _ = collect_runs([tmp_path / "runs"])
    tables = build_group_tables(records[0].group, records)
    _, lost = plot_qualitative(tables, tmp_path / "lost")
    assert any("cannot load the test cases" in message for message in lost)
    figures, found = plot_qualitative(tables, tmp_path / "found", data_roots={MovedToyDataset.name: moved})
    assert not found and {path.name for path in figures} == {"qualitative_1-20.png"}


def test_table_states_the_recorded_protocol_and_hardware(tmp_path):
    """The header is read from the runs: the common budget first, then the methods that differ (the
    supervised lower bound fills its batch with labeled images), then each machine with its run count."""
    runs = tmp_path / "runs"
    budget = {"name": "quick", "iterations": 1000, "patch_size": 128, "labeled_batch": 8, "unlabeled_batch": 8}
    for method, labeled, views in (("supervised", 16, []), ("unimatch", 8, ["weak", "strong"]),
                                   ("bcp", 8, ["plain"])):
        directory = write_run(runs, [0.7] * 4, method=method, budget="quick")
        summary = json.loads((directory / "summary.json").read_text())
        summary.update(budget=dict(budget, labeled_batch=labeled), unlabeled_views=views,
                       hardware="Test CPU, 2 cores" if method != "bcp" else "1 x Test GPU")
        (directory / "summary.json").write_text(json.dumps(summary))
    build_leaderboard([runs], tmp_path / "out", plots=False, log=lambda _: None)
    markdown = (tmp_path / "out" / "acdc" / "quick" / "ssl4mis" / "leaderboard.md").read_text()
    assert ("Protocol: 1,000 iterations, 128x128 patches, 8 labeled + 8 unlabeled images per step "
            "(except supervised: 1,000 iterations, 128x128 patches, 16 labeled images per step). "
            "Hardware: 1 x Test GPU (1 run); Test CPU, 2 cores (2 runs).") in markdown


def test_rows_whose_distances_count_empty_predictions_as_zero_are_named_and_not_ranked(tmp_path):
    """Under the ssl4mis policy an empty prediction's HD95 is 0, i.e. the best possible; the table must
    name the rows that profit from it, with the number of (case, class) pairs predicted empty, and must
    not mark their distances best."""
    runs = tmp_path / "runs"
    for seed in (0, 1):
        directory = write_run(runs, [0.05] * 4, method="cpc-sam", seed=seed, hd95=[0.0] * 4)
        per_case = pd.read_csv(directory / "per_case.csv")
        per_case.loc[: seed, "empty_pred_RV"] = 1.0  # seed 0: 1 pair, seed 1: 2 pairs
        per_case.to_csv(directory / "per_case.csv", index=False)
    write_run(runs, [0.8] * 4, method="supervised")
    build_leaderboard([runs], tmp_path / "out", plots=False, log=lambda _: None)
    markdown = (tmp_path / "out" / "acdc" / "paper" / "ssl4mis" / "leaderboard.md").read_text()
    assert "(over all their runs) and are not ranked (no bold or underline): cpc-sam (3/24)." in markdown
    assert "supervised (" not in markdown.split("Caution:", 1)[1].split("\n", 1)[0]
    rows = table_rows(markdown)
    *_, hd95, asd = rows[("cpc-sam", "1/70")]
    assert (hd95, asd) == ("0.00 ± 0.00", "0.00 ± 0.00")  # the smallest distances, unmarked
    assert rows[("supervised", "1/70")][3:] == ["**2.00**", "**0.50**"]

    strict = tmp_path / "strict"
    directory = write_run(strict, [0.05] * 4, method="cpc-sam", policy="strict")
    per_case = pd.read_csv(directory / "per_case.csv")
    per_case["empty_pred_RV"] = 1.0
    per_case.to_csv(directory / "per_case.csv", index=False)
    build_leaderboard([strict], tmp_path / "out_strict", plots=False, log=lambda _: None)
    assert "Caution:" not in (tmp_path / "out_strict" / "acdc" / "paper" / "strict" / "leaderboard.md").read_text()


def test_a_figure_that_fails_to_render_leaves_the_previous_file_whole(tmp_path):
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure

    from bench.leaderboard.plots import save_figure

    figure = Figure()
    figure.add_subplot().plot([0, 1], [0, 1])
    (svg,) = save_figure(figure, tmp_path / "dice", formats=("svg",))
    before = svg.read_bytes()

    class FailsWhileWriting(Artist):
        """Draws for the tight-bbox pass, fails in the pass that writes the file."""
        draws = 0

        def draw(self, renderer):
            FailsWhileWriting.draws += 1
            if FailsWhileWriting.draws > 1:
                raise RuntimeError("renderer broke half-way")

    broken = Figure()
    broken.add_subplot().add_artist(FailsWhileWriting())
    with pytest.raises(RuntimeError, match="half-way"):
        save_figure(broken, tmp_path / "dice", formats=("svg",))
    assert svg.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dice.svg"]


def test_a_resumed_run_that_timed_only_its_last_part_has_no_wall_time(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, [0.7, 0.8], method="cps", seed=0, wall_seconds=1000.0)
    partial = write_run(runs, [0.7, 0.8], method="cps", seed=1, wall_seconds=250.0)
    resumed_whole = write_run(runs, [0.7, 0.8], method="cps", seed=2, wall_seconds=1200.0)
    for directory, before in ((partial, None), (resumed_whole, 900.0)):
        summary = json.loads((directory / "summary.json").read_text())
        summary["training"].update(resumed_from_step=800, seconds_before_resume=before)
        (directory / "summary.json").write_text(json.dumps(summary))
    build_leaderboard([runs], tmp_path / "out", plots=False, log=lambda _: None)
    folder = tmp_path / "out" / "acdc" / "paper" / "ssl4mis"
    long = pd.read_csv(folder / "runs.csv").set_index("seed")
    assert long.loc[0, "wall_seconds"] == 1000.0 and long.loc[2, "wall_seconds"] == 1200.0
    assert np.isnan(long.loc[1, "wall_seconds"]) and np.isnan(long.loc[1, "train_seconds"])
    assert pd.read_csv(folder / "summary.csv").iloc[0]["wall_seconds_mean"] == pytest.approx(1100.0)


def test_wall_times_of_different_devices_are_never_averaged(tmp_path):
    """A row whose seeds ran on a CPU and on a GPU has no mean cost; rows on one device keep theirs, and
    the cost figure still draws (one Pareto front per device)."""
    runs = tmp_path / "runs"
    for seed, (device, seconds) in enumerate((("cpu", 1000.0), ("NVIDIA H200", 60.0))):
        mixed = write_run(runs, [0.7, 0.8], method="cps", seed=seed, wall_seconds=seconds)
        summary = json.loads((mixed / "summary.json").read_text())
        summary["device"] = device
        (mixed / "summary.json").write_text(json.dumps(summary))
    gpu_only = write_run(runs, [0.6, 0.7], method="bcp", wall_seconds=30.0)
    summary = json.loads((gpu_only / "summary.json").read_text())
    summary["device"] = "NVIDIA H200"
    (gpu_only / "summary.json").write_text(json.dumps(summary))
    write_run(runs, [0.5, 0.6], method="supervised", wall_seconds=500.0)
    build_leaderboard([runs], tmp_path / "out", log=lambda _: None)
    folder = tmp_path / "out" / "acdc" / "paper" / "ssl4mis"
    table = pd.read_csv(folder / "summary.csv").set_index("method")
    assert table.loc["cps", "device"] == "NVIDIA H200;cpu" and np.isnan(table.loc["cps", "wall_seconds_mean"])
    assert table.loc["bcp", "device"] == "NVIDIA H200" and table.loc["bcp", "wall_seconds_mean"] == pytest.approx(30.0)
    assert table.loc["supervised", "wall_seconds_mean"] == pytest.approx(500.0)
    assert (folder / "figures" / "cost.png").is_file()


def test_wall_times_of_two_cpu_models_or_thread_counts_are_never_averaged(tmp_path):
    """Both on "cpu", but on two CPU models: the row has no mean cost, and each machine draws its own
    Pareto front in the cost figure."""
    runs = tmp_path / "runs"
    machines = ("AMD EPYC, 2 cores, 2 torch threads x 1 process(es)",
                "Intel(R) Xeon(R) Processor, 2 cores, 1 torch threads x 1 process(es)")
    for seed, (hardware, seconds) in enumerate(zip(machines, (600.0, 1500.0))):
        run = write_run(runs, [0.7, 0.8], method="mc-net-plus", seed=seed, wall_seconds=seconds)
        summary = json.loads((run / "summary.json").read_text())
        summary["hardware"] = hardware
        (run / "summary.json").write_text(json.dumps(summary))
    write_run(runs, [0.5, 0.6], method="supervised", wall_seconds=500.0)
    build_leaderboard([runs], tmp_path / "out", log=lambda _: None)
    folder = tmp_path / "out" / "acdc" / "paper" / "ssl4mis"
    table = pd.read_csv(folder / "summary.csv").set_index("method")
    assert table.loc["mc-net-plus", "device"] == "cpu"
    assert table.loc["mc-net-plus", "hardware"] == ";".join(machines)
    assert np.isnan(table.loc["mc-net-plus", "wall_seconds_mean"])
    assert table.loc["supervised", "wall_seconds_mean"] == pytest.approx(500.0)
    assert (folder / "figures" / "cost.png").is_file()


def test_rows_with_runs_made_in_another_environment_are_marked(tmp_path):
    """constraints.txt pins torch and numpy; a row holding a run that recorded other versions is marked
    and the note names them; runs in the pinned environment (or that recorded nothing) are not."""
    from bench.leaderboard.environment import pinned_versions

    pins = pinned_versions()
    assert set(pins) == {"torch", "numpy"}
    runs = tmp_path / "runs"
    pinned = {"torch": pins["torch"], "numpy": pins["numpy"]}
    for seed, versions in enumerate([pinned, {**pinned, "torch": "0.0.1"}]):
        path = write_run(runs, [0.6, 0.7, 0.8], method="unimatch", seed=seed)
        write_run(runs, [0.5, 0.6, 0.7], method="supervised", seed=seed)
        summary = json.loads((path / "summary.json").read_text())
        (path / "summary.json").write_text(json.dumps({**summary, "versions": versions}))
    build_leaderboard([runs], tmp_path / "out", plots=False, log=lambda _: None)
    folder = tmp_path / "out" / "acdc" / "paper" / "ssl4mis"
    markdown = (folder / "leaderboard.md").read_text()
    assert set(table_rows(markdown)) == {("unimatch §", "1/70"), ("supervised", "1/70")}
    assert "unimatch (1/70): torch 0.0.1" in markdown and f"torch {pins['torch']}" in markdown
    long = pd.read_csv(folder / "runs.csv", keep_default_na=False).set_index(["method", "seed"])
    assert long.loc[("unimatch", 1), "other_environment"] == "torch 0.0.1"
    assert long.loc[("unimatch", 0), "other_environment"] == "" and long.loc[("supervised", 1), "other_environment"] == ""
