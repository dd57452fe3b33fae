"""What the command line tells a reader: the end-of-run table (percent, ranked per label budget, flags in
the row names), help that states every default and the datasets to choose from, parameters rounded in
``bench list methods`` (full precision in ``--json``), and distance units that match the results."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import subprocess
import sys
from importlib.metadata import entry_points

import numpy as np
import torch

from bench.cli import build_parser, main
from bench.registry import DATASET_ENTRY_POINT_GROUP, METHODS
from bench.sweep import results_table, results_text


def summary(method: str, labels: str, seed: int, dice: float, flags=(), trains: bool = True) -> dict:
    return {"method": method, "labels": labels, "seed": seed, "metrics": {"dice": dice}, "flags": list(flags),
            "num_labeled_cases": 40 if labels == "all" else int(labels), "num_train_cases": 40, "trains": trains,
            "config": {"precision": "no", "options": {}}}


def test_end_of_run_table_is_percent_ranked_per_label_budget_with_flags():
    summaries = [
        summary("bcp", "1", 0, 0.20), summary("bcp", "1", 1, 0.30),                 # 25.00 ± 7.07
        summary("unimatch", "1", 0, 0.40), summary("unimatch", "1", 1, 0.50),       # 45.00 ± 7.07
        summary("samed", "1", 0, 0.25, flags=("random-init-sam",)),                # 25.00, ties bcp
        summary("bcp", "4", 0, 0.60), summary("unimatch", "4", 0, 0.55),
        summary("fully-supervised", "all", 0, 0.90),
        summary("sam-box", "1", 0, 0.05, flags=("ground-truth-prompts",), trains=False),
    ]
    table = results_table(summaries)
    rows = [(row.labels, row.rank, row.method) for row in table.itertuples()]
    assert rows == [("all", 1, "fully-supervised"), ("0/40", 1, "sam-box [ground-truth-prompts]"),
                    ("1/40", 1, "unimatch"), ("1/40", 2, "bcp"), ("1/40", 2, "samed [random-init-sam]"),
                    ("4/40", 1, "bcp"), ("4/40", 2, "unimatch")]
    unimatch = table[(table["labels"] == "1/40") & (table["method"] == "unimatch")].iloc[0]
    assert unimatch["mean"] == 45.0 and math.isclose(unimatch["std"], 100 * np.std([0.4, 0.5], ddof=1))
    text = results_text(table)
    assert re.search(r"^   1\. unimatch +45\.00 ± 7\.07  n=2$", text, re.M)
    assert re.search(r"^   2\. samed \[random-init-sam\] +25\.00  n=1$", text, re.M)  # one seed: no ±, as the leaderboard
    assert text.index("#Lab 1/40") < text.index("#Lab 4/40")


def test_run_prints_where_the_runs_are_and_the_next_command(tmp_path, capsys, smoke_args):
    out = tmp_path / "my runs"
    assert main(["run", "--methods", "supervised", "--labels", "1", "--out", str(out), *smoke_args]) == 0
    printed = capsys.readouterr().out
    assert "#Lab 1/40" in printed and "   1. supervised" in printed
    assert f"Runs: {out} (one folder per run, e.g. {out}/synthetic/smoke/supervised/1/seed0)" in printed
    assert f"Next: bench leaderboard '{out}' --out leaderboards/mine" in printed


def options(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from options(sub, f"{prefix}{name} ")
        elif not isinstance(action, argparse._HelpAction):
            yield f"{prefix}{'/'.join(action.option_strings) or action.dest}", action


def test_help_states_the_default_of_every_option_that_takes_a_value():
    missing = [name for name, action in options(build_parser())
               if action.option_strings and action.nargs != 0 and not action.required
               and "default" not in (action.help or "")]
    assert missing == []


def test_dataset_help_lists_the_installed_datasets_without_importing_them():
    code = ("import sys; from bench.cli import build_parser; "
            "print(build_parser()._subparsers._group_actions[0].choices['run'].format_help()); "
            "print([m for m in ('torch', 'pandas', 'matplotlib', 'bench.data.synthetic') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    help_text, imported = result.stdout.rsplit("\n", 2)[:2]
    assert imported == "[]"
    listed = re.search(r"--dataset NAME +dataset: (.*?) or a plug-in's", " ".join(help_text.split())).group(1)
    installed = sorted(entry_point.name for entry_point in entry_points(group=DATASET_ENTRY_POINT_GROUP))
    assert listed.split(", ") == ["hf:PATH" if name == "hf" else name for name in installed]


def test_list_methods_rounds_parameters_and_json_keeps_them(capsys):
    exact = dataclasses.asdict(METHODS.get("semisam").default_params())["sam_prompt_uncertainty"]
    assert len(repr(exact)) > 8  # ln-based default with many digits
    assert main(["list", "methods"]) == 0
    text = capsys.readouterr().out
    assert f"sam_prompt_uncertainty={exact:.4g}" in text and repr(exact) not in text
    assert "consistency_rampup_epochs=200.0" in text  # an integral float keeps its type, not 2e+02
    assert main(["list", "methods", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["methods"]["semisam"]["defaults"]["sam_prompt_uncertainty"] == exact
    assert set(listing["methods"]) == set(METHODS.names())


def test_busi_description_names_the_unit_its_results_carry():
    """BUSI cases carry no spacing; what the evaluator writes for such a case is the unit to name."""
    from bench.data.busi import BUSIDataset
    from bench.data.case import Case
    from bench.evaluation import score_cases

    label = np.zeros((1, 16, 16), dtype=np.uint8)
    label[0, 4:10, 4:10] = 1
    case = Case("image", label.astype(np.float32), label, "test")
    (row,) = score_cases(lambda images, _: torch.nn.functional.one_hot(
        (images[:, 0] > 0.5).long(), 2).permute(0, 3, 1, 2).float(), [case], ("lesion",), (16, 16), 1,
        torch.device("cpu"), "ssl4mis")
    unit = row["distance_unit"]
    assert f"distances in {unit}s" in BUSIDataset.description
    assert "distances in pixels" not in BUSIDataset.description
