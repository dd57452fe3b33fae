"""Published numbers beside reproduced ones.

``leaderboards/reported.csv`` holds the numbers the SAM-based SSL papers print, one row per
(paper, table, dataset, label budget, method):

* ``paper``, ``table``: where the number is printed (CPC-SAM Table 1, InteractMatch Tables 1-2,
  KnowSAM Table II, SemiSAM Table II, SynFoC Table 13);
* ``dataset``: our registry name of the dataset (``acdc``, ``busi``; ``la`` = Left Atrium, which
  has no adapter yet); ``labeled_cases`` / ``train_cases``: the ``#Lab`` setting as counts (0 for
  zero-shot SAM-point), ``label_fraction`` = their ratio; ``setting_notes``: the paper's protocol;
* ``method``: the name as printed; ``registry_method``: our method registry name, empty for methods
  the benchmark does not include (DCNet, DTC, MCF, MC-Net v1, KnowSAM's MC-seg ablation, ...).  The
  mapping lives in the data file, reviewed row by row: ``U-Net``/``Supervised``/``SupOnly`` on the
  labeled subset -> ``supervised``, on every training case -> ``fully-supervised``; ``MT`` ->
  ``mean-teacher``; ``UAMT``/``UA-MT`` -> ``ua-mt``; ``MC-Net+`` -> ``mc-net-plus``; SemiSAM's
  ``+SemiSAM`` (on MT) -> ``semisam``; the others by their name in lower case;
* ``dice``, ``jaccard``, ``hd95``, ``asd`` as printed (empty where the paper does not give it);
  ``overlap_unit`` (``%``), ``distance_unit`` (``mm``, ``pixel``, ``voxel`` or ``not stated``);
  ``notes``: text-extraction ambiguities and how they were read.

A published number is *comparable* with ours only when dataset, registry method, labeled and
training case counts match, our budget is ``paper`` (no ``--iters``/``--batch`` override), the
empty-mask policy is the SSL4MIS one the papers use, the labeled cases were not restricted to one
domain, and no flag changes the method (a SAM method from random weights is not the paper's).
Surface distances are compared only when the paper states its unit and it is ours (pixel and voxel
count as the same unit).  Otherwise the comparison says why.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.leaderboard.collect import CODE_CHANGED_LABEL, METRICS, GroupKey
from bench.leaderboard.tables import HEADERS, PRINTED_DECIMALS, escape_markdown

DEFAULT_REPORTED_CSV = Path(__file__).resolve().parents[2] / "leaderboards" / "reported.csv"
"""In a source checkout; an installed copy passes ``reported_csv`` explicitly."""
REQUIRED_COLUMNS = ("paper", "table", "dataset", "labeled_cases", "train_cases", "method", "registry_method",
                    *METRICS, "distance_unit", "notes")
PAPER_BUDGET = "paper"
PAPER_EMPTY_POLICY = "ssl4mis"
FLAGS_THAT_CHANGE_THE_METHOD = ("random-init-sam",)
SAME_DISTANCE_UNIT = {"mm": "mm", "pixel": "voxel", "voxel": "voxel"}


def load_reported(path: Path | None = None) -> pd.DataFrame:
    path = Path(path) if path is not None else DEFAULT_REPORTED_CSV
    if not path.exists():
        raise FileNotFoundError(f"{path}: published results file not found (pass reported_csv=...)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}")
    for column in ("labeled_cases", "train_cases"):
        bad = table.loc[~table[column].str.fullmatch(r"\d+"), column]
        if not bad.empty:
            raise ValueError(f"{path}: column {column!r} must hold case counts, got {bad.iloc[0]!r}")
        table[column] = table[column].astype(int)
    for metric in METRICS:
        values = pd.to_numeric(table[metric].replace("", np.nan), errors="coerce")
        if values.isna().sum() > (table[metric] == "").sum():
            raise ValueError(f"{path}: column {metric!r} holds a non-number")
        table[metric] = values
    return table


def comparison_blockers(key: GroupKey, flags: str, labeled_domain: str = "", hyperparameters: str = "") -> list[str]:
    """Why our row is not the paper's protocol (empty list: it is)."""
    reasons = [f"labeled cases drawn from domain {labeled_domain}"] if labeled_domain else []
    reasons += [label for label in hyperparameters.split(";") if label.startswith(CODE_CHANGED_LABEL)]
    if key.budget != PAPER_BUDGET:
        reasons.append(f"budget {key.budget}")
    if key.empty_policy != PAPER_EMPTY_POLICY:
        reasons.append(f"empty policy {key.empty_policy}")
    reasons += [flag for flag in flags.split(";") if flag in FLAGS_THAT_CHANGE_THE_METHOD]
    return reasons


def distance_blocker(ours: str, published: str) -> str:
    theirs = SAME_DISTANCE_UNIT.get(published.strip())
    if theirs is None:
        return f"published distance unit {published or 'missing'!r}"
    if theirs != SAME_DISTANCE_UNIT.get(ours):
        return f"distances in {ours} here, {published} in the paper"
    return ""


def compare_with_published(key: GroupKey, summary: pd.DataFrame, reported: pd.DataFrame) -> pd.DataFrame:
    """One row per (our row, matching published row); our rows with no published number get one row
    saying so.  Gaps are ours minus published, in the published units (Dice/Jaccard in points of %)."""
    rows = []
    for _, ours in summary.iterrows():
        matches = reported[(reported["dataset"] == key.dataset) & (reported["registry_method"] == ours["registry_method"])
                           & (reported["labeled_cases"] == ours["num_labeled_cases"])
                           & (reported["train_cases"] == ours["num_train_cases"])]
        base = {"labels": ours["labels"], "method": ours["method"]}
        if matches.empty:
            rows.append({**base, "source": "", "published_method": "", "comparable": "no published number"})
            continue
        blockers = comparison_blockers(key, ours["flags"], ours["labeled_domain"], ours["hyperparameters"])
        for _, published in matches.iterrows():
            row = {**base, "source": f"{published['paper']} {published['table']}", "published_method": published["method"]}
            distance_reason = distance_blocker(key.distance_unit, published["distance_unit"])
            for metric in METRICS:
                scale = 100.0 if metric in ("dice", "jaccard") else 1.0
                value, paper_value = ours[f"{metric}_mean"] * scale, published[metric]
                row[f"{metric}_ours"], row[f"{metric}_published"] = value, paper_value
                usable = not blockers and not (metric in ("hd95", "asd") and distance_reason)
                row[f"{metric}_gap"] = value - paper_value if usable and np.isfinite(paper_value) else np.nan
            if blockers:
                row["comparable"] = "not comparable: " + ", ".join(blockers)
            elif distance_reason:
                row["comparable"] = f"Dice/Jaccard only ({distance_reason})"
            else:
                row["comparable"] = "yes"
            row["published_notes"] = published["notes"]
            rows.append(row)
    columns = (["labels", "method", "source", "published_method"]
               + [f"{m}_{s}" for m in METRICS for s in ("ours", "published", "gap")] + ["comparable", "published_notes"])
    return pd.DataFrame(rows, columns=columns)


def comparison_markdown(key: GroupKey, comparison: pd.DataFrame) -> str:
    """Cells ``ours / published (gap)``; the gap is left out where the protocol differs."""
    if comparison.empty or (comparison["source"] == "").all():
        return f"No published number for dataset `{key.dataset}` at these label budgets and methods.\n"
    header = ["Method", "#Lab", "Source"] + [f"{HEADERS[m]} ours / paper (Δ)" for m in METRICS] + ["Comparable"]
    alignment = [":---", ":---:", ":---"] + ["---:"] * len(METRICS) + [":---"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(alignment) + "|"]
    unmatched = []
    for _, row in comparison.iterrows():
        if row["source"] == "":
            unmatched.append(f"{row['method']} {row['labels']}")
            continue
        cells = []
        for metric in METRICS:
            published = row[f"{metric}_published"]
            if not np.isfinite(published):
                cells.append("–")
                continue
            text = f"{row[f'{metric}_ours']:.{PRINTED_DECIMALS}f} / {published:.{PRINTED_DECIMALS}f}"
            if np.isfinite(row[f"{metric}_gap"]):
                text += f" ({row[f'{metric}_gap']:+.{PRINTED_DECIMALS}f})"
            cells.append(text)
        lines.append("| " + " | ".join([escape_markdown(row["method"]), row["labels"], row["source"]] + cells
                                       + [row["comparable"]]) + " |")
    text = "\n".join(lines) + "\n"
    text += ("\nDice and Jaccard in %; gaps are ours minus published. Published numbers are as printed "
             "(`leaderboards/reported.csv` notes how ambiguous text was read).\n")
    if unmatched:
        text += f"\nNo published number for: {', '.join(unmatched)}.\n"
    return text

