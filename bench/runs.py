"""A run: one method x dataset x label budget x seed x budget, with a deterministic key and directory.

``runs/<dataset>/<budget>/<method>/<labels>/seed<k>/`` holds ``config.json``, ``labeled_cases.json``,
``train_log.csv``, ``best.pt``, ``per_case.csv``, ``predictions.npz`` and ``summary.json``; the summary is written last and
atomically, so its presence means the run is complete.  (DESIGN.md's layout has no budget level; a
``quick`` and a ``paper`` run of the same setting would otherwise share a folder.)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.data.label_budget import LabelBudget
from bench.record import RESULT_FORMAT_VERSION

SUMMARY_FILE = "summary.json"
FAILURE_FILE = "failure.json"
PREDICTIONS_FILE = "predictions.npz"
CHECKPOINT_FILE = "checkpoint.pt"
NOT_IN_CONFIG = ("data_root", "tuning", "sam_embedding_store", "log_with")
"""Run options never part of a run's identity (see :meth:`RunSpec.config`): recorded elsewhere, or
changing nothing trained (an embedding store, the tracker that draws the training curves)."""


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    method: str
    labels: str
    seed: int
    budget: str
    iterations: int | None = None
    batch: str | None = None
    gradient_clip: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    label_selection: str | None = None
    empty_policy: str = "ssl4mis"
    spacing_unit: str = "auto"
    precision: str = "no"
    options: dict[str, Any] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        """Everything that changes a result; two runs with equal configs are the same experiment.

        The data root is left out (it is recorded in the summary's dataset protocol): moving a dataset
        or naming it by a relative path must not make finished runs look different.  So is the tuning
        provenance (recorded in the summary): where equal parameters came from changes nothing trained."""
        config = json.loads(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str))
        config["options"] = {k: v for k, v in config["options"].items()
                             if k not in NOT_IN_CONFIG and v not in (None, {}, [])}
        return config

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()[:16]

    def directory(self, out: Path) -> Path:
        """Dataset options (an ``hf:`` source, a folder's classes) and a labeled domain are part of the
        path, so runs that differ in them never share a folder."""
        labels = self.labels if self.labels in ("all", "none") else LabelBudget.parse(self.labels).slug
        if self.options.get("labeled_domain"):
            labels += f"@{self.options['labeled_domain']}"
        dataset = self.dataset
        dataset_options = self.options.get("dataset_options")
        if dataset_options:
            digest = hashlib.sha256(json.dumps(dataset_options, sort_keys=True).encode()).hexdigest()[:8]
            dataset = f"{dataset}-{digest}"
        # A composed method (``semisam:unimatch``) gets a folder name valid on every file system.
        return out / dataset / self.budget / self.method.replace(":", "+") / labels / f"seed{self.seed}"


def read_summary(directory: Path) -> dict | None:
    path = directory / SUMMARY_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: unreadable summary ({error}); delete the run folder to re-run it") from error


def params_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """How a run's recorded method parameters (its summary's ``params``) differ from ``current``."""
    current = json.loads(json.dumps(current, sort_keys=True, default=str))
    changes = []
    for name in sorted(set(recorded) | set(current)):
        if name not in recorded:
            changes.append(f"{name}: not recorded, now {current[name]!r}")
        elif name not in current:
            changes.append(f"{name}: {recorded[name]!r}, no longer a parameter")
        elif recorded[name] != current[name]:
            changes.append(f"{name}: {recorded[name]!r}, now {current[name]!r}")
    return changes


def completed_summary(spec: RunSpec, out: Path, current_params: dict[str, Any] | None = None) -> dict | None:
    """The summary of a finished run with this exact config, ``None`` if it must (re)run.

    A finished run with a different config in the same folder is an error rather than an overwrite:
    published results must not disappear because a flag changed.  So is a run whose recorded method
    parameters differ from ``current_params`` (the method's parameters in this checkout): the key holds
    the user's overrides, not the method's defaults, so a default changed in the code since would
    otherwise let a sweep pass an outdated run off as complete.
    """
    directory = spec.directory(out)
    summary = read_summary(directory)
    if summary is None:
        return None
    if summary.get("format_version") != RESULT_FORMAT_VERSION:
        raise ValueError(
            f"{directory / SUMMARY_FILE}: written by a bench with result format {summary.get('format_version')}, "
            f"this one reads format {RESULT_FORMAT_VERSION}; re-run into another --out (the old results stay as they are)"
        )
    if summary.get("config") != spec.config():
        raise ValueError(
            f"{directory / SUMMARY_FILE}: holds a finished run with another config "
            f"(key {summary.get('key')} != {spec.key}); use another --out or pass --overwrite"
        )
    changes = params_changes(summary.get("params") or {}, current_params) if current_params is not None else []
    if changes:
        raise ValueError(
            f"{directory / SUMMARY_FILE}: holds a finished {spec.method} run trained with other method "
            f"parameters than this checkout's ({'; '.join(changes)}; trained at commit {summary.get('git_commit')}); "
            f"use another --out, or pass --overwrite to re-run it"
        )
    return summary


def previous_failure(spec: RunSpec, out: Path) -> dict | None:
    """The failure record of an earlier attempt at this exact config, if any."""
    path = spec.directory(out) / FAILURE_FILE
    if not path.exists():
        return None
    try:
        failure = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {"step": None, "reason": f"unreadable {path}"}
    return failure if failure.get("config") == spec.config() else None
