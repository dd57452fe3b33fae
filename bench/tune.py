"""``bench tune``: Optuna over a method's ``search_space`` with validation Dice as the objective.

The objective trains with ``bench.execute.train_method``, which selects on the validation split and
never scores the test split, so tuning cannot leak test information into a published result.
Several processes (or machines) can share one study through ``--storage``.
"""
from __future__ import annotations

import dataclasses
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from accelerate.utils import set_seed

from bench.execute import (
    budget_for,
    build_method,
    dataset_for,
    labeled_case_ids,
    make_accelerator,
    train_method,
    validate_spec,
)
from bench.record import write_atomic
from bench.registry import METHODS
from bench.runs import RunSpec


@dataclass
class TuningResult:
    study_name: str
    best_params: dict[str, Any]
    best_value: float
    trials_finished: int
    params_file: Path


def open_storage(storage: str | None, out: Path, study_name: str) -> optuna.storages.BaseStorage | str:
    """SQLite in ``out`` by default; ``journal:PATH`` (or a path ending in ``.log``/``.jsonl``) for a journal
    file several processes append to; any other value is an RDB URL (``sqlite:///``, ``postgresql://``...)."""
    if storage is None:
        out.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(out / f'{study_name}.db').resolve()}"
    if storage.startswith("journal:") or storage.endswith((".log", ".jsonl")):
        path = storage.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    return storage


def tune(
    base: RunSpec,
    trials: int,
    out: Path,
    storage: str | None = None,
    study_name: str | None = None,
    sampler_seed: int = 0,
    show_progress: bool = False,
) -> TuningResult:
    """Runs trials until the study holds ``trials`` finished ones (complete or pruned), whoever ran them."""
    validate_spec(base)
    method_cls = METHODS.get(base.method)
    study_name = study_name or f"{base.dataset}-{base.budget}-{base.method}-labels{base.labels}"
    study = optuna.create_study(
        study_name=study_name,
        storage=open_storage(storage, out, study_name),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=sampler_seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        load_if_exists=True,
    )
    adapter = dataset_for(base)
    budget = budget_for(base, adapter, method_cls)
    labeled_ids = labeled_case_ids(base, adapter, method_cls)

    def objective(trial: optuna.Trial) -> float:
        params = {**base.params, **method_cls.search_space(trial)}
        spec = dataclasses.replace(base, params=params)
        set_seed(spec.seed)
        method = build_method(spec, adapter, method_cls, budget)
        accelerator = make_accelerator(spec.precision)

        def report(step: int, dice: float) -> None:
            trial.report(dice, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation Dice {dice:.4f} at step {step}")

        with tempfile.TemporaryDirectory() as scratch:
            result = train_method(spec, adapter, method, budget, labeled_ids, accelerator,
                                  Path(scratch) / "train_log.csv", show_progress, on_validation=report)
        return result.best_validation_dice

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    remaining = trials - len(study.get_trials(states=finished))
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, callbacks=[optuna.study.MaxTrialsCallback(trials, states=finished)])
    completed = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise RuntimeError(f"study {study_name!r}: no trial completed")
    params_file = out / f"{study_name}.yaml"
    best = {"method": base.method, "params": {**base.params, **study.best_params}}
    provenance = {"study": study_name, "objective": "best validation Dice", "best_value": study.best_value,
                  "trials": len(study.get_trials(states=finished)), "dataset": base.dataset, "labels": base.labels,
                  "budget": base.budget, "seed": base.seed}
    write_atomic(params_file, yaml.safe_dump({**best, "tuning": provenance}, sort_keys=True))
    save_study_plots(study, out / study_name)
    return TuningResult(study_name, best["params"], study.best_value, provenance["trials"], params_file)


def save_study_plots(study: optuna.Study, prefix: Path) -> list[Path]:
    """Optimisation history and parameter importances (the latter needs two or more completed trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    saved = []
    plots = [("history", optuna_plots.plot_optimization_history)]
    completed = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if len(completed) >= 2 and completed[0].params:
        plots.append(("importances", optuna_plots.plot_param_importances))
    for suffix, plot in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)
            axes = plot(study)
        path = prefix.with_name(f"{prefix.name}-{suffix}.png")
        axes.figure.savefig(path, dpi=150, bbox_inches="tight")
        plt.close(axes.figure)
        saved.append(path)
    return saved
