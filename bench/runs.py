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

SUMMARY_FILE = "summary.json"
FAILURE_FILE = "failure.json"
PREDICTIONS_FILE = "predictions.npz"


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
        or naming it by a relative path must not make finished runs look different."""
        config = json.loads(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str))
        config["options"] = {k: v for k, v in config["options"].items() if k != "data_root" and v not in (None, {}, [])}
        return config

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()[:16]

    def directory(self, out: Path) -> Path:
        labels = "all" if self.labels == "all" else LabelBudget.parse(self.labels).slug
        return out / self.dataset / self.budget / self.method / labels / f"seed{self.seed}"


def read_summary(directory: Path) -> dict | None:
    path = directory / SUMMARY_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: unreadable summary ({error}); delete the run folder to re-run it") from error


def completed_summary(spec: RunSpec, out: Path) -> dict | None:
    """The summary of a finished run with this exact config, ``None`` if it must (re)run.

    A finished run with a different config in the same folder is an error rather than an overwrite:
    published results must not disappear because a flag changed.
    """
    directory = spec.directory(out)
    summary = read_summary(directory)
    if summary is None:
        return None
    if summary.get("config") != spec.config():
        raise ValueError(
            f"{directory / SUMMARY_FILE}: holds a finished run with another config "
            f"(key {summary.get('key')} != {spec.key}); use another --out or pass --overwrite"
        )
    return summary
