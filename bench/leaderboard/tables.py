"""Leaderboard tables: the long per-run CSV, the per-row summary, and the papers' Markdown/LaTeX layout.

Every number is derived from the per-case rows (``collect.RunRecord.per_case``): a run's metric is
the mean over its test cases (NaN cases skipped, as in ``summarize_run``), a row's metric the mean
and sample std of its runs over seeds.  Files are written with fixed float formats, ``\\n`` line
ends and stable sort orders, so the same runs give the same bytes.

The printed layout follows the SSL tables of CPC-SAM (Table 1) and InteractMatch (Tables 1-2): rows
are methods grouped by label budget, ``#Lab`` is ``labeled/training cases`` (``all`` for the
fully-supervised bound), Dice and Jaccard in %, distances in the unit the runs were scored in.
Within each label budget and column, the best value is bold and the second best underlined (max for
Dice/Jaccard, min for HD95/ASD), judged on the values as printed so that equal-looking numbers get
equal marks.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from bench.leaderboard.collect import CODE_CHANGED_LABEL, METRICS, GroupKey, RunRecord, Setting
from bench.leaderboard.environment import OTHER_ENVIRONMENT_MARK, environment_differences, environment_note
from bench.leaderboard.statistics import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    CONFIDENCE,
    bootstrap_mean_ci,
    compare_with_best,
    seed_averaged_cases,
    seed_spread,
)

CSV_FLOAT_FORMAT = "%.6g"
PRINTED_DECIMALS = 2
HIGHER_IS_BETTER = {"dice": True, "jaccard": True, "hd95": False, "asd": False}
PERCENT_METRICS = ("dice", "jaccard")
DISTANCE_METRICS = ("hd95", "asd")
"""Stored as fractions, printed in % as the papers do."""
HEADERS = {"dice": "DSC", "jaccard": "Jaccard", "hd95": "HD95", "asd": "ASD"}
NOT_SIGNIFICANT_MARK = "†"


@dataclass
class GroupTables:
    """Everything one leaderboard table is made of."""

    key: GroupKey
    records: list[RunRecord]
    runs: pd.DataFrame
    summary: pd.DataFrame
    significance: pd.DataFrame
    case_dice: dict[tuple[Setting, str], pd.Series]
    """(setting, variant) -> seed-averaged per-case Dice, for tests and plots."""
    class_names: tuple[str, ...]

    @property
    def settings(self) -> list[Setting]:
        return sorted({record.setting for record in self.records})


def run_metrics(record: RunRecord) -> dict[str, float]:
    """A run's means over test cases: the four metrics and the per-class Dice."""
    columns = list(METRICS) + [f"dice_{name}" for name in record.class_names]
    return {column: float(record.per_case[column].mean(skipna=True)) for column in columns}


def _number(value: object) -> float:
    """A summary field as a float; missing or null is NaN (older or hand-made results lack some)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def wall_time_complete(summary: dict) -> bool:
    """False for a run resumed from a checkpoint that did not record the training time before it (older
    checkpoints): it timed only its last part, which would understate the method's cost."""
    training = summary.get("training") or {}
    return not (training.get("resumed_from_step") and training.get("seconds_before_resume") is None)


def wall_seconds(summary: dict) -> float:
    """A run's wall time; NaN where it is missing or incomplete."""
    return _number(summary.get("wall_seconds")) if wall_time_complete(summary) else float("nan")


def runs_table(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per run: the long CSV."""
    rows = []
    for record in sorted(records, key=lambda r: (r.setting, r.variant, r.seed, r.path)):
        summary = record.summary
        training = summary.get("training") or {}
        row = {
            "dataset": record.group.dataset,
            "budget": record.group.budget,
            "empty_policy": record.group.empty_policy,
            "distance_unit": record.group.distance_unit,
            "labels": record.setting.text,
            "labels_requested": str(summary["labels"]),
            "num_labeled_cases": record.setting.num_labeled,
            "num_train_cases": record.setting.num_train,
            "labeled_domain": record.setting.labeled_domain,
            "method": record.variant,
            "registry_method": record.method,
            "family": summary.get("family", ""),
            "flags": ";".join(record.flags),
            "hyperparameters": ";".join(record.hyperparameters),
            "tuning_trials": record.tuning_trials,
            "params": json.dumps(summary.get("params"), sort_keys=True),
            "seed": record.seed,
            "num_test_cases": len(record.per_case),
        }
        row.update(run_metrics(record))
        row.update({
            "wall_seconds": wall_seconds(summary),
            "train_seconds": _number(training.get("train_seconds")) if wall_time_complete(summary) else float("nan"),
            "peak_memory_mb": _number(summary.get("peak_memory_mb")),
            "device": summary.get("device", ""),
            "hardware": summary.get("hardware", ""),
            "other_environment": ";".join(environment_differences(summary)),
            "run": record.path,
        })
        rows.append(row)
    return pd.DataFrame(rows)


def machine(summary: dict) -> str:
    """What a run's wall time measures: the recorded hardware (CPU model or GPU, torch threads,
    processes), else the device, so that only seconds of the same machine are compared."""
    return str(summary.get("hardware") or summary.get("device") or "not recorded")


def build_group_tables(key: GroupKey, records: Sequence[RunRecord]) -> GroupTables:
    """Long table, summary (seed spread + case bootstrap + significance) for one group."""
    class_names = records[0].class_names
    runs = runs_table(records)
    metric_columns = list(METRICS) + [f"dice_{name}" for name in class_names]
    by_row: dict[tuple[Setting, str], list[RunRecord]] = {}
    for record in records:
        by_row.setdefault((record.setting, record.variant), []).append(record)
    summary_rows = []
    case_dice: dict[tuple[Setting, str], pd.Series] = {}
    for (setting, variant), members in sorted(by_row.items()):
        members = sorted(members, key=lambda r: r.seed)
        row: dict = {
            "labels": setting.text, "num_labeled_cases": setting.num_labeled, "num_train_cases": setting.num_train,
            "labeled_domain": setting.labeled_domain, "method": variant, "registry_method": members[0].method,
            "flags": ";".join(members[0].flags), "hyperparameters": ";".join(members[0].hyperparameters),
            "tuning_trials": members[0].tuning_trials, "seeds": ";".join(str(r.seed) for r in members),
        }
        per_run = [run_metrics(r) for r in members]
        for column in metric_columns:
            mean, std, count = seed_spread([values[column] for values in per_run])
            row[f"{column}_mean"], row[f"{column}_std"] = mean, std
            if column == "dice":
                row["num_seeds"] = count
        for metric in METRICS:
            cases = seed_averaged_cases([r.per_case.set_index("case_id")[metric] for r in members])
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = bootstrap_mean_ci(cases.to_numpy())
            if metric == "dice":
                case_dice[(setting, variant)] = cases
                row["num_cases"] = int(cases.notna().sum())
        devices = sorted({str(r.summary.get("device") or "not recorded") for r in members})
        machines = sorted({machine(r.summary) for r in members})
        row["device"] = ";".join(devices)
        row["hardware"] = ";".join(machines)
        walls = [wall_seconds(r.summary) for r in members if wall_time_complete(r.summary)]
        # Seconds on a CPU and on a GPU, or on two CPU models or thread counts, do not average into a
        # cost of anything.
        row["wall_seconds_mean"] = float(np.mean(walls)) if walls and len(machines) == 1 else float("nan")
        summary_rows.append(row)
    summary = pd.DataFrame(summary_rows)
    significance = _significance(summary, case_dice)
    summary = summary.merge(significance.drop(columns=["best"]).rename(columns={"num_cases": "num_paired_cases"}),
                            on=["labels", "method"], how="left")
    setting_rank = {setting.text: rank for rank, setting in enumerate(sorted({r.setting for r in records}))}
    summary["_order"] = summary["labels"].map(setting_rank)
    summary = summary.sort_values(["_order", "dice_mean", "method"], ascending=[True, False, True], na_position="last")
    summary = summary.drop(columns="_order").reset_index(drop=True)
    ordered = (["labels", "num_labeled_cases", "num_train_cases", "labeled_domain", "method", "registry_method", "flags",
                "hyperparameters", "tuning_trials", "num_seeds", "seeds", "num_cases"]
               + [f"{m}_{s}" for m in METRICS for s in ("mean", "std", "ci_low", "ci_high")]
               + [f"dice_{name}_{s}" for name in class_names for s in ("mean", "std")]
               + ["wall_seconds_mean", "device", "hardware", "num_paired_cases", "wilcoxon_statistic", "p_value",
                  "p_holm", "significant"])
    summary = summary[ordered]
    for column, value in (("dataset", key.dataset), ("budget", key.budget), ("empty_policy", key.empty_policy),
                          ("distance_unit", key.distance_unit))[::-1]:
        summary.insert(0, column, value)
    return GroupTables(key, list(records), runs, summary, significance, case_dice, class_names)


def _significance(summary: pd.DataFrame, case_dice: dict[tuple[Setting, str], pd.Series]) -> pd.DataFrame:
    frames = []
    for setting in sorted({setting for setting, _ in case_dice}):
        rows = summary[summary["labels"] == setting.text]
        means = dict(zip(rows["method"], rows["dice_mean"]))
        tests = compare_with_best({name: case_dice[(setting, name)] for name in means}, means)
        if not tests.empty:
            frames.append(tests.assign(labels=setting.text))
    columns = ["labels", "method", "best", "num_cases", "wilcoxon_statistic", "p_value", "p_holm", "significant"]
    if not frames:
        return pd.DataFrame(columns=columns)
    table = pd.concat(frames, ignore_index=True).rename(columns={"statistic": "wilcoxon_statistic"})
    return table[columns]


# -- printed tables ------------------------------------------------------------------------------

def printed_value(metric: str, value: float) -> str:
    if not np.isfinite(value):
        return "–"
    scale = 100.0 if metric.split("_", 1)[0] in PERCENT_METRICS else 1.0
    return f"{value * scale:.{PRINTED_DECIMALS}f}"


def rank_marks(values: Sequence[float], higher_is_better: bool) -> list[str]:
    """``best`` / ``second`` / ``""`` per value, on the values as printed; ties share a mark."""
    printed = [round(v, PRINTED_DECIMALS) if np.isfinite(v) else None for v in values]
    distinct = sorted({v for v in printed if v is not None}, reverse=higher_is_better)
    if len(values) < 2 or not distinct:
        return [""] * len(values)
    marks = {distinct[0]: "best"}
    if len(distinct) > 1:
        marks[distinct[1]] = "second"
    return [marks.get(v, "") if v is not None else "" for v in printed]


@dataclass(frozen=True)
class Cell:
    text: str
    mark: str = ""
    not_significant: bool = False


def table_cells(tables: GroupTables, metrics: Sequence[str]) -> list[tuple[str, str, list[Cell]]]:
    """(labels, method, cells) rows in printed order with the rank and significance marks.

    A distance that counts empty predictions as 0 (see :func:`flattered_rows`) is printed but never
    ranked: otherwise the method that predicts least would be marked best."""
    summary = tables.summary
    flattered = flattered_rows(tables)
    rows: list[tuple[str, str, list[Cell]]] = []
    for labels, block in summary.groupby("labels", sort=False):
        marks = {}
        for metric in metrics:
            base = metric.split("_", 1)[0]
            scale = 100.0 if base in PERCENT_METRICS else 1.0
            rankable = [not (base in DISTANCE_METRICS and method in flattered) for method in block["method"]]
            values = [v * scale if keep else float("nan") for v, keep in zip(block[f"{metric}_mean"], rankable)]
            marks[metric] = rank_marks(values, HIGHER_IS_BETTER[base])
        for position, (_, row) in enumerate(block.iterrows()):
            cells = []
            for metric in metrics:
                mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
                text = printed_value(metric, mean)
                if np.isfinite(mean) and np.isfinite(std):
                    text += f" ± {printed_value(metric, std)}"
                not_significant = metric == "dice" and row["significant"] == "no"
                cells.append(Cell(text, marks[metric][position], not_significant))
            rows.append((labels, row["method"], cells))
    return rows


def metric_header(metric: str, distance_unit: str, latex: bool = False) -> str:
    base = metric.split("_", 1)[0]
    arrow = ("$\\uparrow$" if latex else "↑") if HIGHER_IS_BETTER[base] else ("$\\downarrow$" if latex else "↓")
    if base in PERCENT_METRICS:
        name = HEADERS[base] if base == metric else f"{metric.split('_', 1)[1]}"
        unit = "\\%" if latex else "%"
        return f"{escape_latex(name) if latex else name} ({unit}) {arrow}"
    return f"{HEADERS[base]} ({distance_unit}) {arrow}"


def markdown_table(tables: GroupTables, metrics: Sequence[str], with_seeds: bool = True) -> str:
    header = ["Method", "#Lab"] + (["n"] if with_seeds else []) + [
        metric_header(m, tables.key.distance_unit) for m in metrics]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---", ":---:"] + ([":---:"] if with_seeds else []) + ["---:"] * len(metrics)) + "|"]
    seeds = dict(zip(zip(tables.summary["labels"], tables.summary["method"]), tables.summary["num_seeds"]))
    other = other_environments(tables.records)
    for labels, method, cells in table_cells(tables, metrics):
        rendered = []
        for cell in cells:
            text = cell.text
            if cell.mark == "best":
                text = f"**{text}**"
            elif cell.mark == "second":
                text = f"<ins>{text}</ins>"
            if cell.not_significant:
                text += f" {NOT_SIGNIFICANT_MARK}"
            rendered.append(text)
        name = escape_markdown(method) + (f" {OTHER_ENVIRONMENT_MARK}" if other[(labels, method)] else "")
        prefix = [name, labels] + ([str(int(seeds[(labels, method)]))] if with_seeds else [])
        lines.append("| " + " | ".join(prefix + rendered) + " |")
    return "\n".join(lines) + "\n"


def significance_note(tables: GroupTables) -> str:
    num_cases = int(tables.summary["num_cases"].max())
    return (f"{NOT_SIGNIFICANT_MARK} not significantly different from the best Dice of its label budget: two-sided "
            f"Wilcoxon signed-rank test over the {num_cases} test cases (per-case Dice averaged over seeds), "
            f"Holm-corrected over the methods compared with the best, α = {ALPHA}.")


def _describe_budget(budget: dict) -> str:
    if "iterations" not in budget:
        return "budget not recorded"
    patch = budget.get("patch_size")
    text = (f"{budget.get('iterations', 0):,} iterations, {patch}x{patch} patches, "
            f"{budget.get('labeled_batch')} labeled")
    return text + (f" + {budget['unlabeled_batch']} unlabeled images per step" if budget.get("trains_unlabeled", True)
                   else " images per step")


def protocol_text(records: Sequence[RunRecord]) -> str:
    """The training protocol and the machines, as recorded by the runs themselves: the resolved budget
    (the common one first, then the methods whose paper or baseline changes it) and each hardware
    description with its number of runs."""
    methods_by_budget: dict[str, set[str]] = {}
    for record in records:
        budget = dict(record.summary.get("budget") or {})
        budget["trains_unlabeled"] = bool(record.summary.get("unlabeled_views", True))
        if not record.summary.get("trains", True):
            continue
        methods_by_budget.setdefault(_describe_budget(budget), set()).add(record.variant)
    ordered = sorted(methods_by_budget.items(), key=lambda item: (-len(item[1]), item[0]))
    protocol = ordered[0][0] if ordered else "no trained runs"
    exceptions = "; ".join(f"{', '.join(sorted(methods))}: {text}" for text, methods in ordered[1:])
    hardware: dict[str, int] = {}
    for record in records:
        name = machine(record.summary)
        hardware[name] = hardware.get(name, 0) + 1
    machines = "; ".join(f"{name} ({count} run{'s' if count > 1 else ''})" for name, count in sorted(hardware.items()))
    return (f"Protocol: {protocol}" + (f" (except {exceptions})" if exceptions else "")
            + f". Hardware: {machines}.\n")


def hyperparameter_note(records: Sequence[RunRecord]) -> str:
    """Where the rows' hyper-parameters came from, and whether every method had the same search budget:
    a method tuned with 40 trials against one run at its defaults is not an equal comparison."""
    trained = [record for record in records if record.summary.get("trains", True)]
    labels = {label for record in records for label in record.hyperparameters}
    parts = ["Hyper-parameters: each method's defaults (`bench list methods`; every run's values are in "
             "`runs.csv`)" + (", except where the row name says otherwise" if labels else "") + "."]
    if any(label.startswith("tuned: ") for label in labels):
        parts.append("`tuned: N trials`: from a `bench tune` study with N finished trials (objective: validation Dice).")
    if any("=" in label and not label.startswith(CODE_CHANGED_LABEL) for label in labels):
        parts.append("`name=value`: set by the sweep file or on the command line.")
    if any(label.startswith(CODE_CHANGED_LABEL) for label in labels):
        parts.append(f"`{CODE_CHANGED_LABEL}names`: the run was trained with values of these parameters that this "
                     f"checkout no longer uses (a default changed in the code since); the row is not the method as it "
                     f"now stands and is never compared with a paper.")
    budgets = {}
    for record in trained:
        budgets.setdefault(record.tuning_trials, set()).add(record.variant)
    if len(budgets) > 1:
        spread = "; ".join(f"{trials} trials: {', '.join(sorted(variants))}"
                           for trials, variants in sorted(budgets.items(), reverse=True))
        parts.append(f"Search budgets differ between rows ({spread}), so the comparison is not one of equal tuning "
                     f"effort.")
    elif trained and next(iter(budgets)) > 0:
        parts.append(f"Every trained row was tuned with the same budget, {next(iter(budgets))} trials.")
    return " ".join(parts) + "\n"


ZERO_DISTANCE_POLICIES = ("ssl4mis", "zero")
"""Policies that score an empty prediction's HD95/ASD as 0, i.e. as perfect."""


def flattered_rows(tables: GroupTables) -> dict[str, tuple[int, int]]:
    """Under a policy that scores an empty prediction's distances as 0, a method that predicts nothing
    gets the best HD95/ASD.  Returns, per table row with such (case, class) pairs, how many it has and
    out of how many (over all its runs); empty under any other policy."""
    if tables.key.empty_policy not in ZERO_DISTANCE_POLICIES:
        return {}
    counts: dict[str, tuple[int, int]] = {}
    for record in tables.records:
        columns = [c for c in record.per_case.columns if c.startswith("empty_pred_")]
        empty = int(record.per_case[columns].to_numpy().sum()) if columns else 0
        total = len(record.per_case) * len(columns)
        previous = counts.get(record.variant, (0, 0))
        counts[record.variant] = (previous[0] + empty, previous[1] + total)
    return {variant: count for variant, count in counts.items() if count[0]}


def empty_prediction_note(tables: GroupTables) -> str:
    """Names the rows whose distances are flattered, so no reader trusts them."""
    flattered = flattered_rows(tables)
    if not flattered:
        return ""
    flagged = [f"{variant} ({empty}/{total})" for variant, (empty, total) in sorted(flattered.items())]
    return (f"Caution: the `{tables.key.empty_policy}` policy scores the HD95/ASD of an empty predicted class as 0, "
            f"so these methods' distances are flattered by (case, class) pairs predicted empty (over all their runs) "
            f"and are not ranked (no bold or underline): {', '.join(flagged)}.\n")


def markdown_document(tables: GroupTables, published: str = "") -> str:
    key = tables.key
    seeds = sorted(set(tables.summary["num_seeds"].astype(int)))
    seed_text = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    parts = [
        f"# {key.dataset}: budget {key.budget}\n",
        f"Test split of `{key.dataset}`; budget `{key.budget}`; empty masks scored by the `{key.empty_policy}` policy; "
        f"HD95/ASD in {key.distance_unit}; {len(tables.records)} runs, {seed_text} seed(s) per row.\n",
        protocol_text(tables.records),
        hyperparameter_note(tables.records),
        markdown_table(tables, METRICS),
        f"Mean ± sample std over the n seeds (std omitted for one seed). Dice and Jaccard in %. Bold: best, "
        f"underlined: second best per label budget and column. {significance_note(tables)} "
        f"{int(CONFIDENCE * 100)}% case-bootstrap intervals ({BOOTSTRAP_RESAMPLES} resamples) are in `summary.csv`, "
        f"the tests in `significance.csv`, every run in `runs.csv`.\n",
    ]
    other = {f"{method} ({labels})": versions for (labels, method), versions in other_environments(tables.records).items()}
    for caution in (empty_prediction_note(tables), reduced_evaluation_note(tables.records), environment_note(other)):
        if caution:
            parts.append(caution)
    if tables.class_names:
        parts += ["## Dice per class\n", markdown_table(tables, [f"dice_{name}" for name in tables.class_names],
                                                        with_seeds=False)]
    if published:
        parts += ["## Published vs reproduced\n", published]
    return "\n".join(parts)


def other_environments(records: Sequence[RunRecord]) -> dict[tuple[str, str], set[str]]:
    """(labels, row) -> the package versions of its runs that differ from the pinned ones (empty: none)."""
    rows: dict[tuple[str, str], set[str]] = {}
    for record in records:
        rows.setdefault((record.setting.text, record.variant), set()).update(environment_differences(record.summary))
    return rows


def reduced_evaluation_note(records) -> str:
    """Runs of a budget that scores a subset of the test split (``smoke``) show that the code runs; their
    numbers are no result and are never to be published."""
    reduced = sorted({(record.summary["budget"].get("eval_cases"), record.summary["budget"].get("eval_slices"))
                      for record in records if isinstance(record.summary.get("budget"), dict)
                      and (record.summary["budget"].get("eval_cases") or record.summary["budget"].get("eval_slices"))},
                     key=str)
    if not reduced:
        return ""
    scope = "; ".join(f"at most {cases or 'all'} cases, {slices or 'all'} slices each" for cases, slices in reduced)
    return (f"**Not a result:** these runs scored a reduced test split ({scope}); they show that the code runs "
            "and are not to be published or compared.\n")


def latex_table(tables: GroupTables) -> str:
    key = tables.key
    lines = [
        "% Generated by `bench leaderboard`; needs \\usepackage{booktabs}.",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{escape_latex(key.dataset)} test split, budget \\texttt{{{escape_latex(key.budget)}}}: mean $\\pm$ "
        f"std over seeds. Bold: best; underlined: second best per label budget. $^\\dagger$Not significantly "
        f"different from the best Dice (Wilcoxon signed-rank over test cases, Holm-corrected, "
        f"$\\alpha={ALPHA}$). Empty masks: {escape_latex(key.empty_policy)} policy.}}",
        f"\\label{{tab:{_label(key.dataset)}-{_label(key.budget)}}}",
        "\\begin{tabular}{ll" + "c" * len(METRICS) + "}",
        "\\toprule",
        "Method & \\#Lab & " + " & ".join(metric_header(m, key.distance_unit, latex=True) for m in METRICS) + " \\\\",
    ]
    previous = None
    for labels, method, cells in table_cells(tables, METRICS):
        if labels != previous:
            lines.append("\\midrule")
            previous = labels
        rendered = []
        for cell in cells:
            text = cell.text.replace(" ± ", " $\\pm$ ").replace("–", "--")
            if cell.mark == "best":
                text = f"\\textbf{{{text}}}"
            elif cell.mark == "second":
                text = f"\\underline{{{text}}}"
            if cell.not_significant:
                text += "$^\\dagger$"
            rendered.append(text)
        lines.append(" & ".join([escape_latex(method), escape_latex(labels)] + rendered) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def escape_latex(text: str) -> str:
    replacements = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_",
                    "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}"}
    return "".join(replacements.get(char, char) for char in str(text))


def escape_markdown(text: str) -> str:
    return str(text).replace("|", "\\|")


def _label(text: str) -> str:
    return "".join(char if char.isalnum() else "-" for char in text)


def to_csv_text(table: pd.DataFrame) -> str:
    return table.to_csv(index=False, float_format=CSV_FLOAT_FORMAT, lineterminator="\n")
