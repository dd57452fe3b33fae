"""``bench tune``: Optuna over a method's ``search_space`` with validation Dice as the objective.

The objective trains with ``bench.execute.train_method``, which selects on the validation split and
never scores the test split, so tuning cannot leak test information into a published result.

Several processes (or machines) can share one study through ``--storage``; then:

- **Sampling.** Trial *k* draws from a TPE sampler seeded from ``(seed, k)``.  The storage hands out each
  trial number once, so no two trials share a random stream whoever runs them, and no worker needs an
  identity (a hostname+pid seed would make even a one-worker study irreproducible).  One worker with a
  given ``--seed`` samples the same trials on every run (with several, TPE's later trials also depend on
  which results had arrived).  TPE runs with the constant liar (Optuna's recommendation for parallel
  workers): trials still running count as bad, so workers spread out.
- **Count.** A finished trial is COMPLETE or PRUNED, as before (a pruned trial spent its budget and
  informs TPE), so ``--trials`` bounds the compute spent.
  A RUNNING trial holds a slot: a worker starts no trial once ``finished + running >= trials``, and a
  callback stops it at that point.  Two workers can both see one free slot and ask at once; each trial
  therefore checks, before training, how many trials with lower numbers are finished or running, and a
  trial with ``trials`` of them ahead is given up: it ends FAIL, user attribute ``surplus`` set, with no
  parameters, logged by Optuna as failed.  The study ends with exactly ``trials`` finished ones (fewer
  only if a trial crashes).
- **Stale slots.** A worker killed hard (SIGKILL, OOM) leaves its trial RUNNING.  RDB storages get a
  heartbeat, so such a trial turns FAIL after ``HEARTBEAT_GRACE_S`` and its slot frees; a journal file has
  no heartbeat in Optuna, so there the trial keeps its slot until marked failed by hand.
- **Creation.** ``bench tune ... --create-only`` creates the study before workers start (Optuna's advice,
  optuna#1092: workers that create tables of an empty database at once collide).  ``tune`` itself also
  creates-or-loads with a few retries, so workers started together still all start.
- **Parameters file.** A worker writes ``OUT/<study>.yaml`` when the study is full or no trial is left
  running; one that stops while others still train leaves the file to the last of them.
"""
from __future__ import annotations

import dataclasses
import random
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from accelerate.utils import set_seed
from optuna.trial import FrozenTrial, TrialState

from bench.execute import (
    budget_for,
    build_method,
    dataset_for,
    labeled_case_ids,
    make_accelerator,
    train_method,
    validate_spec,
)
from bench.record import atomic_file, write_atomic
from bench.registry import METHODS
from bench.runs import RunSpec

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
HOLDS_A_SLOT = (*FINISHED, TrialState.RUNNING)
HEARTBEAT_INTERVAL_S = 60
HEARTBEAT_GRACE_S = 600
CREATE_ATTEMPTS = 6

# What to install when SQLAlchemy cannot import a database driver (module -> command).
DRIVER_INSTALL = {
    "psycopg2": 'pip install -e ".[postgres]"  (or: pip install psycopg2-binary)',
    "psycopg": 'pip install "psycopg[binary]"',
    "pg8000": "pip install pg8000",
    "MySQLdb": "pip install mysqlclient  (or use a mysql+pymysql:// URL and pip install pymysql)",
    "pymysql": "pip install pymysql",
}


@dataclass
class TuningResult:
    study_name: str
    best_params: dict[str, Any] | None
    best_value: float | None
    trials_finished: int
    params_file: Path | None
    trials_running: int = 0


class SurplusTrial(Exception):
    """A trial asked for when the study already held its trials; it ends FAIL and trains nothing."""


def default_study_name(base: RunSpec) -> str:
    return f"{base.dataset}-{base.budget}-{base.method}-labels{base.labels}"


def is_journal(storage: str | None) -> bool:
    return storage is not None and (storage.startswith("journal:") or storage.endswith((".log", ".jsonl")))


def check_storage(storage: str | None) -> None:
    """Fails on a database URL whose driver is missing, before the data is read or anything trains."""
    if storage is not None and not is_journal(storage):
        database_url(storage)


def database_url(storage: str) -> str:
    """The URL to open, after a clear error (before any training) where its database driver is missing.

    A bare ``postgresql://`` URL means psycopg2, the driver of the ``postgres`` extra (SQLAlchemy's own default
    changed to psycopg 3 in 2.1); ``postgresql+psycopg://`` and other explicit drivers are kept."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    scheme = storage.split("://", 1)[0]
    url = storage.replace("postgresql://", "postgresql+psycopg2://", 1) if scheme == "postgresql" else storage
    try:
        dialect = make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError) as error:
        raise ValueError(f"--storage: {scheme!r} is neither journal:PATH, a .log/.jsonl journal file, nor a database "
                         f"URL SQLAlchemy knows (sqlite:///, postgresql://, mysql://...): {error}") from error
    try:
        dialect.import_dbapi() if hasattr(dialect, "import_dbapi") else dialect.dbapi()
    except ImportError as error:
        module = error.name or str(error)
        install = DRIVER_INSTALL.get(module, f"pip install {module}")
        raise ValueError(f"--storage {scheme}://...: the database driver {module!r} is not installed; "
                         f"install it with: {install}") from error
    return url


def open_storage(storage: str | None, out: Path, study_name: str) -> optuna.storages.BaseStorage:
    """SQLite in ``out`` by default; ``journal:PATH`` (or a path ending in ``.log``/``.jsonl``) for a journal
    file several processes append to; any other value is an RDB URL (``sqlite:///``, ``postgresql://``...)."""
    if is_journal(storage):
        path = storage.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    if storage is None:
        out.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(out / f'{study_name}.db').resolve()}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(database_url(storage), heartbeat_interval=HEARTBEAT_INTERVAL_S,
                                          grace_period=HEARTBEAT_GRACE_S)


def create_or_load_study(
    study_name: str,
    storage: str | None,
    out: Path,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Creates the study, or loads it if it exists; retries when another process creates it (or the
    database's tables) at the same moment, which surfaces as a duplicate-study or integrity error."""
    from sqlalchemy.exc import SQLAlchemyError

    attempt = 1
    while True:
        try:
            return optuna.create_study(study_name=study_name, storage=open_storage(storage, out, study_name),
                                       direction="maximize", sampler=sampler, pruner=pruner, load_if_exists=True)
        except (optuna.exceptions.DuplicatedStudyError, SQLAlchemyError) as error:
            if attempt == CREATE_ATTEMPTS:
                where = "default SQLite storage" if storage is None else f"--storage {storage.split('://')[0]}://..."
                raise ValueError(f"{where}: cannot create or load study {study_name!r} after {CREATE_ATTEMPTS} "
                                 f"attempts: {type(error).__name__}: {error}") from error
            time.sleep(0.1 * 2**attempt * (1 + random.random()))  # backoff with jitter: workers drift apart
            attempt += 1


def trial_seed(seed: int, trial_number: int) -> int:
    """The random stream of one trial: child ``trial_number`` of ``seed``."""
    return int(np.random.SeedSequence(seed % 2**64, spawn_key=(trial_number,)).generate_state(1)[0])


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """TPE whose randomness for trial *k* comes from ``trial_seed(seed, k)``: a fresh seeded TPE per trial."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._tpe = self._tpe_for(0)

    def _tpe_for(self, trial_number: int) -> optuna.samplers.TPESampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=trial_seed(self.seed, trial_number), constant_liar=True)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._tpe = self._tpe_for(trial.number)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, name: str, distribution: Any) -> Any:
        return self._tpe.sample_independent(study, trial, name, distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    return TrialSeededSampler(seed)


def count_trials(study: optuna.Study, states: Sequence[TrialState]) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # frees the slots of killed workers (RDB heartbeat only)
    return len(study.get_trials(deepcopy=False, states=tuple(states)))


def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], float], trials: int) -> None:
    """Runs ``objective`` until the study holds ``trials`` finished trials, with other workers doing the same."""
    if count_trials(study, HOLDS_A_SLOT) >= trials:
        return

    def admitted(trial: optuna.Trial) -> float:
        ahead = [t for t in study.get_trials(deepcopy=False, states=HOLDS_A_SLOT) if t.number < trial.number]
        if len(ahead) >= trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"study {study.study_name!r} already holds {len(ahead)} finished or running trials "
                               f"of {trials} before trial {trial.number}: this one is given up, untrained")
        return objective(trial)

    def stop_when_full(study: optuna.Study, trial: FrozenTrial) -> None:
        if count_trials(study, HOLDS_A_SLOT) >= trials:
            study.stop()

    study.optimize(admitted, callbacks=[stop_when_full], catch=(SurplusTrial,))


def create_tuning_study(base: RunSpec, out: Path, storage: str | None = None, study_name: str | None = None) -> str:
    """Creates (or finds) the study workers will share; reads no data, trains nothing; returns its name."""
    check_storage(storage)
    METHODS.get(base.method)
    study_name = study_name or default_study_name(base)
    create_or_load_study(study_name, storage, out)
    return study_name


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
    check_storage(storage)
    validate_spec(base)
    method_cls = METHODS.get(base.method)
    study_name = study_name or default_study_name(base)
    study = create_or_load_study(study_name, storage, out, sampler=make_sampler(sampler_seed),
                                 pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
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

    run_trials(study, objective, trials)
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if finished < trials and running:
        best = {**base.params, **study.best_params} if completed else None
        return TuningResult(study_name, best, study.best_value if completed else None, finished, None, running)
    if not completed:
        raise RuntimeError(f"study {study_name!r}: no trial completed")
    params_file = out / f"{study_name}.yaml"
    best = {"method": base.method, "params": {**base.params, **study.best_params}}
    provenance = {"study": study_name, "objective": "best validation Dice", "best_value": study.best_value,
                  "trials": finished, "dataset": base.dataset, "labels": base.labels,
                  "budget": base.budget, "seed": base.seed}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(params_file, yaml.safe_dump({**best, "tuning": provenance}, sort_keys=True))
    save_study_plots(study, out / study_name)
    return TuningResult(study_name, best["params"], study.best_value, finished, params_file, running)


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
        with atomic_file(path) as temporary:
            axes.figure.savefig(temporary, format="png", dpi=150, bbox_inches="tight")
        plt.close(axes.figure)
        saved.append(path)
    return saved
