"""Reading finished runs for a leaderboard.

The per-case table (``per_case.csv``) is the record every number is derived from; ``summary.json``
only supplies what the per-case rows cannot: method, label budget, seed, protocol, cost.  A run that
cannot be read completely is never half-used: it becomes a :class:`SkippedRun` with the reason, and
the leaderboard lists it.

Runs are grouped so that only like is averaged with like.  A :class:`GroupKey` is one leaderboard
table: the dataset, the training budget (with any ``--iters``/``--batch`` override, which changes the
protocol), the empty-mask policy and the unit of the surface distances.  Inside a group a row is a
:class:`Setting` (label budget) x method variant (method + result flags + hyper-parameters that are not
the method's defaults), averaged over seeds.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from bench.runs import FAILURE_FILE, SUMMARY_FILE, params_changes

PER_CASE_FILE = "per_case.csv"
RUN_MARKERS = (SUMMARY_FILE, FAILURE_FILE, PER_CASE_FILE, "config.json")
"""A directory holding any of these is a run (complete or not)."""

METRICS = ("dice", "jaccard", "hd95", "asd")
REQUIRED_SUMMARY_FIELDS = ("method", "dataset", "labels", "seed", "budget", "empty_policy",
                           "num_labeled_cases", "num_train_cases")
CODE_CHANGED_LABEL = "defaults changed: "
"""Starts the hyper-parameter label of a run trained with values this checkout would no longer use."""


@dataclass(frozen=True, order=True)
class GroupKey:
    """One leaderboard table; runs that differ in any of these are never averaged together."""

    dataset: str
    budget: str
    empty_policy: str
    distance_unit: str

    def folder(self, split_units: bool) -> Path:
        """``<dataset>/<budget>/<empty policy>``; the unit joins the last level only when one
        (dataset, budget, policy) holds runs scored in different units."""
        policy = f"{self.empty_policy}-{self.distance_unit}" if split_units else self.empty_policy
        return Path(_safe(self.dataset)) / _safe(self.budget) / _safe(policy)

    @property
    def title(self) -> str:
        return (f"{self.dataset}, budget {self.budget}, empty-mask policy {self.empty_policy}, "
                f"distances in {self.distance_unit}")


@dataclass(frozen=True, order=True)
class Setting:
    """A label budget as the papers' ``#Lab`` column shows it.

    ``everything`` marks the fully-supervised bound (labels ``all``), shown as ``all``; an
    evaluation-only method (zero-shot SAM) used no training labels whatever ``--labels`` said, so it
    sits at 0 labeled cases.  Sorting puts the bounds first, as the papers' tables do.
    """

    rank: int
    num_labeled: int
    num_train: int
    labeled_domain: str = ""

    @property
    def everything(self) -> bool:
        return self.rank == 0

    @property
    def text(self) -> str:
        base = "all" if self.everything else f"{self.num_labeled}/{self.num_train}"
        return f"{base} ({self.labeled_domain})" if self.labeled_domain else base


@dataclass(frozen=True)
class RunRecord:
    path: str
    """Where the run lies, relative to the common parent of the folders given (stable across machines)."""
    directory: Path
    summary: dict
    per_case: pd.DataFrame
    class_names: tuple[str, ...]
    group: GroupKey
    setting: Setting
    hyperparameters: tuple[str, ...] = ()
    """How the run's hyper-parameters depart from its method's defaults (:func:`hyperparameter_labels`)."""

    @property
    def method(self) -> str:
        return str(self.summary["method"])

    @property
    def flags(self) -> tuple[str, ...]:
        return run_flags(self.summary)

    @property
    def variant(self) -> str:
        """The row name: the method, with result flags that change what it means
        (``random-init-sam``, ``ground-truth-prompts``) and hyper-parameters other than the defaults kept
        visible, so that runs with different settings are never averaged into one row."""
        labels = self.flags + self.hyperparameters
        return f"{self.method} [{', '.join(labels)}]" if labels else self.method

    @property
    def tuning_trials(self) -> int:
        """Finished trials of the ``bench tune`` study the run's parameters came from; 0 if untuned."""
        return int((self.summary.get("tuning") or {}).get("trials") or 0)

    @property
    def seed(self) -> int:
        return int(self.summary["seed"])

    @property
    def case_ids(self) -> tuple[str, ...]:
        return tuple(self.per_case["case_id"])


@dataclass(frozen=True)
class SkippedRun:
    path: str
    reason: str


def find_run_directories(roots: Sequence[Path]) -> list[Path]:
    """Every directory under ``roots`` that holds a run marker, sorted, each once."""
    found: set[Path] = set()
    for root in roots:
        if not root.exists():
            raise ValueError(f"{root}: no such runs folder")
        for directory, _, files in os.walk(root):
            if any(marker in files for marker in RUN_MARKERS):
                found.add(Path(directory).resolve())
    return sorted(found)


def collect_runs(roots: Sequence[Path]) -> tuple[list[RunRecord], list[SkippedRun]]:
    """Read every run under ``roots``; complete runs come back as records, the rest with a reason.

    Beyond unreadable files, two things make a complete run unusable: a second run of the same row
    and seed in the same group (kept: the first by path), and a test set that differs from the other
    runs of its group (another dataset version must not be averaged in).
    """
    resolved = [Path(root).resolve() for root in roots]
    base = Path(os.path.commonpath(resolved)) if resolved else Path(".")
    if len(resolved) == 1 and resolved[0].is_dir() and any((resolved[0] / m).exists() for m in RUN_MARKERS):
        base = resolved[0].parent
    records: list[RunRecord] = []
    skipped: list[SkippedRun] = []
    for directory in find_run_directories(resolved):
        display = directory.relative_to(base).as_posix() if directory != base else "."
        outcome = read_run(directory, display)
        (records if isinstance(outcome, RunRecord) else skipped).append(outcome)
    records, duplicates = _drop_duplicates(records)
    records, foreign = _drop_foreign_test_sets(records)
    skipped.extend(duplicates + foreign)
    return records, sorted(skipped, key=lambda run: run.path)


def read_run(directory: Path, display: str) -> RunRecord | SkippedRun:
    """One run folder -> a record, or the reason it cannot be used."""
    failure = directory / FAILURE_FILE
    if failure.exists():
        try:
            reason = json.loads(failure.read_text()).get("reason", "no reason recorded")
        except (json.JSONDecodeError, OSError, AttributeError):
            reason = "failure.json unreadable"
        return SkippedRun(display, f"failed run ({FAILURE_FILE}): {reason}")
    if not (directory / SUMMARY_FILE).exists():
        return SkippedRun(display, f"incomplete: no {SUMMARY_FILE} (still running, interrupted or never finished)")
    try:
        summary = json.loads((directory / SUMMARY_FILE).read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as error:
        return SkippedRun(display, f"unreadable {SUMMARY_FILE}: {error}")
    if not isinstance(summary, dict):
        return SkippedRun(display, f"unreadable {SUMMARY_FILE}: not a JSON object")
    missing = [name for name in REQUIRED_SUMMARY_FIELDS if name not in summary]
    if missing:
        return SkippedRun(display, f"{SUMMARY_FILE} lacks {', '.join(missing)}")
    per_case = read_per_case(directory / PER_CASE_FILE)
    if isinstance(per_case, str):
        return SkippedRun(display, per_case)
    expected = summary.get("num_test_cases")
    if expected is not None and int(expected) != len(per_case):
        return SkippedRun(display, f"partial {PER_CASE_FILE}: {len(per_case)} cases, {SUMMARY_FILE} says {expected}")
    class_names = tuple(column[len("dice_"):] for column in per_case.columns if column.startswith("dice_"))
    units = sorted(set(per_case["distance_unit"].astype(str))) if "distance_unit" in per_case else ["unknown"]
    group = GroupKey(
        dataset=str(summary["dataset"]),
        budget=budget_tag(summary),
        empty_policy=str(summary["empty_policy"]),
        distance_unit="+".join(units),
    )
    return RunRecord(display, directory, summary, per_case, class_names, group, setting_of(summary),
                     hyperparameter_labels(summary))


def run_flags(summary: dict) -> tuple[str, ...]:
    """The method's result flags, plus ``<precision>-autocast`` for a mixed-precision run, so runs in
    bf16/fp16 form their own row instead of being averaged with full-precision seeds."""
    flags = set(summary.get("flags") or ())
    precision = (summary.get("config") or {}).get("precision") or "no"
    if precision != "no":
        flags.add(f"{precision}-autocast")
    return tuple(sorted(flags))


def row_name(summary: dict) -> str:
    """The row a run belongs to, named as :attr:`RunRecord.variant` names it (for tables printed from
    summaries alone, such as the one at the end of ``bench run``)."""
    labels = run_flags(summary) + hyperparameter_labels(summary)
    return f"{summary['method']} [{', '.join(labels)}]" if labels else str(summary["method"])


def hyperparameter_labels(summary: dict) -> tuple[str, ...]:
    """What sets a run's hyper-parameters apart from its method's defaults, for its row name.

    ``tuned: N trials`` for parameters from a ``bench tune`` study (an unequal search budget is an
    unequal comparison), ``name=value`` for each other override (``--set``, a sweep file's ``params``),
    and ``defaults changed: names`` when the recorded parameters differ from what this checkout would
    train with the same overrides: a default changed in the code since the run, so its row is not
    the method as it stands.  An override equal to the current default changes nothing and is not
    named.  The checks against the code need the method registered here; they are skipped otherwise.
    """
    overrides = dict((summary.get("config") or {}).get("params") or {})
    tuning = summary.get("tuning") or {}
    defaults = current_defaults(str(summary["method"]))
    labels = []
    if tuning:
        labels.append(f"tuned: {tuning.get('trials', '?')} trials")
    baseline = {**(defaults or {}), **(tuning.get("params") or {})}
    named = {k: v for k, v in overrides.items() if k not in baseline or _json(baseline[k]) != _json(v)}
    labels += [f"{name}={_printed(value)}" for name, value in sorted(named.items())]
    changed = code_changes(summary, overrides)
    if changed:
        labels.append(CODE_CHANGED_LABEL + ", ".join(changed))
    return tuple(labels)


def current_defaults(method: str) -> dict[str, Any] | None:
    """The method's default parameters in this checkout; ``None`` if it is not registered here."""
    from bench.registry import METHODS

    try:
        return asdict(METHODS.get(method).default_params())
    except KeyError:
        return None


def code_changes(summary: dict, overrides: dict) -> list[str]:
    """Names of the recorded parameters that this checkout would set differently for the same overrides."""
    from bench.registry import METHODS

    if "params" not in summary or current_defaults(str(summary["method"])) is None:
        return []
    try:
        current = METHODS.get(str(summary["method"])).recorded_params(overrides)
    except (TypeError, ValueError) as error:
        return [f"overrides no longer accepted ({error})"]
    return [change.split(":", 1)[0] for change in params_changes(dict(summary["params"] or {}), current)]


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _printed(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def read_per_case(path: Path) -> pd.DataFrame | str:
    """The per-case table with numeric metric columns, or why it cannot be used."""
    if not path.exists():
        return f"no {PER_CASE_FILE}"
    try:
        table = pd.read_csv(path, dtype={"case_id": str, "domain": str, "distance_unit": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"unreadable {PER_CASE_FILE}: {first_line}"
    missing = [column for column in ("case_id", *METRICS) if column not in table.columns]
    if missing:
        return f"{PER_CASE_FILE} lacks column(s) {', '.join(missing)}"
    if table.empty:
        return f"{PER_CASE_FILE} has no cases"
    if table["case_id"].duplicated().any():
        return f"{PER_CASE_FILE} lists case {table.loc[table['case_id'].duplicated(), 'case_id'].iloc[0]!r} twice"
    metric_columns = [c for c in table.columns if c in METRICS or c.split("_", 1)[0] in METRICS]
    for column in metric_columns:
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().sum() > table[column].isna().sum():
            return f"{PER_CASE_FILE}: non-numeric value in column {column!r}"
        table[column] = values.astype(float)
    return table


def budget_tag(summary: dict) -> str:
    """The budget name, plus the overrides that change the protocol (``quick-iters50``)."""
    budget = summary["budget"]
    name = str(budget.get("name", "?")) if isinstance(budget, dict) else str(budget)
    config = summary.get("config") or {}
    if config.get("iterations"):
        name += f"-iters{config['iterations']}"
    if config.get("batch"):
        name += f"-batch{config['batch']}"
    return name


def trains_on_labels(summary: dict) -> bool:
    """Whether the method learned from the labeled cases at all.

    Summaries do not record it directly; an evaluation-only method is recognised by the training
    record ``execute_run`` writes for it (no validation, step 0)."""
    if "trains" in summary:
        return bool(summary["trains"])
    training = summary.get("training") or {}
    return not (training.get("best_validation_dice") is None and not training.get("best_step"))


def setting_of(summary: dict) -> Setting:
    num_train = int(summary["num_train_cases"])
    domain = str(((summary.get("config") or {}).get("options") or {}).get("labeled_domain") or "")
    if str(summary["labels"]) == "all":
        return Setting(0, num_train, num_train, domain)
    if not trains_on_labels(summary):
        return Setting(1, 0, num_train, domain)
    return Setting(2, int(summary["num_labeled_cases"]), num_train, domain)


def _drop_duplicates(records: Iterable[RunRecord]) -> tuple[list[RunRecord], list[SkippedRun]]:
    kept: dict[tuple, RunRecord] = {}
    skipped = []
    for record in sorted(records, key=lambda r: r.path):
        key = (record.group, record.setting, record.variant, record.seed)
        if key in kept:
            skipped.append(SkippedRun(record.path, f"duplicate of {kept[key].path} (same table, label budget, method "
                                                   f"and seed); only the first is used"))
        else:
            kept[key] = record
    return list(kept.values()), skipped


def _test_set(record: RunRecord) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(sorted(record.case_ids)), record.class_names


def _drop_foreign_test_sets(records: list[RunRecord]) -> tuple[list[RunRecord], list[SkippedRun]]:
    """Keep, per group, the runs scored on the group's most common test set (cases and classes)."""
    counts: dict[GroupKey, Counter] = {}
    for record in records:
        counts.setdefault(record.group, Counter())[_test_set(record)] += 1
    usual = {group: sorted(counter.items(), key=lambda item: (-item[1], item[0]))[0][0]
             for group, counter in counts.items()}
    kept, skipped = [], []
    for record in records:
        if _test_set(record) == usual[record.group]:
            kept.append(record)
        else:
            skipped.append(SkippedRun(record.path, f"its test cases or classes differ from the other runs of "
                                                   f"{record.group.title} (another dataset version?)"))
    return kept, skipped


def _safe(text: str) -> str:
    return "".join(char if char.isalnum() or char in "-_.+" else "_" for char in text)
