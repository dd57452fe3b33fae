"""``bench tune``: shared studies, the requested number of trials, parameters a run can apply."""
from __future__ import annotations

import json
import sys
import textwrap

import optuna
import pandas as pd
import yaml

from bench.cli import main
from bench.leaderboard import build_leaderboard
from decoy_tuning import PARALLEL_PLUGIN, start_workers

TUNABLE_PLUGIN = textwrap.dedent(
    '''
    from dataclasses import dataclass
    from bench import Method, StepOutput, ce_dice_loss, register_method, unet_for

    @dataclass
    class TunableParams:
        """Scale of the supervised loss (a stand-in hyper-parameter)."""
        loss_scale: float = 1.0

    @register_method()
    class Tunable(Method):
        name = "tunable"
        paper = "test plug-in"
        Params = TunableParams

        def __init__(self, params, task):
            super().__init__(params, task)
            self.network = unet_for(task)

        def training_step(self, batch, progress):
            return StepOutput(self.params.loss_scale * ce_dice_loss(self.network(batch.labeled_images), batch.labels))

        @classmethod
        def search_space(cls, trial):
            return {"loss_scale": trial.suggest_float("loss_scale", 0.5, 2.0)}
    '''
)


WORKER_TIMEOUT_S = 180


def tune_command(tmp_path, storage, trials, *extra):
    return [sys.executable, "-m", "bench.cli", "--plugin", "decoy_plugin", "tune", "decoy", "--labels", "2",
            "--trials", str(trials), "--budget", "smoke", "--storage", storage, "--study-name", "shared",
            "--out", str(tmp_path / "out"), "--no-progress", *extra]


def wait_for(processes):
    outputs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=WORKER_TIMEOUT_S)
            assert process.returncode == 0, stderr
            outputs.append(stdout)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return outputs


def journal_trials(journal, name="shared"):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def assert_exactly(trials, count):
    """``count`` COMPLETE trials with distinct parameters; any other trial is an untrained surplus one."""
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == count, [(t.number, t.state.name, t.params) for t in trials]
    assert len({t.params["decoy"] for t in complete}) == count
    assert len({t.number for t in trials}) == len(trials)
    for trial in trials:
        if trial.state != optuna.trial.TrialState.COMPLETE:
            assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs == {"surplus": True}
            assert trial.params == {}


def test_two_workers_on_one_journal_finish_exactly_the_requested_trials(tmp_path):
    # Started together on an empty journal (each creates-or-loads the study).  The second worker's trials
    # take 4 s longer, so the first reaches "3 finished, 1 running" while the second still trains: a
    # worker that counted finished trials only would start a fifth one there.
    journal = tmp_path / "study.log"
    wait_for(start_workers(tmp_path, tune_command(tmp_path, f"journal:{journal}", 4), trial_seconds=(0, 4)))
    assert_exactly(journal_trials(journal), 4)
    tuned = yaml.safe_load((tmp_path / "out" / "shared.yaml").read_text())
    assert tuned["tuning"]["trials"] == 4 and 0.5 <= tuned["params"]["decoy"] <= 2.0


def test_create_only_then_two_workers(tmp_path, monkeypatch, capsys):
    journal = tmp_path / "created.log"
    command = tune_command(tmp_path, f"journal:{journal}", 2)
    (tmp_path / "decoy_plugin.py").write_text(PARALLEL_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main([*command[3:], "--create-only"]) == 0
    assert "study shared ready" in capsys.readouterr().out
    assert journal_trials(journal) == [] and not (tmp_path / "out").exists()
    wait_for(start_workers(tmp_path, command, trial_seconds=(0, 0)))
    assert_exactly(journal_trials(journal), 2)
    assert yaml.safe_load((tmp_path / "out" / "shared.yaml").read_text())["tuning"]["trials"] == 2


def test_workers_samplers_differ_and_one_worker_repeats_itself():
    from bench.tune import make_sampler

    def suggest(trial):
        return trial.suggest_float("x", 0.0, 1.0) + trial.suggest_float("y", 0.0, 1.0)

    # Two workers with the same --seed take turns on one study (12 trials: random start-up, then TPE).
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage, direction="maximize")
    workers = [optuna.load_study(study_name="s", storage=storage, sampler=make_sampler(0)) for _ in range(2)]
    for _ in range(6):
        for worker in workers:
            trial = worker.ask()
            worker.tell(trial, suggest(trial))
    shared = [tuple(t.params.values()) for t in workers[0].get_trials()]
    assert len(set(shared)) == len(shared) == 12

    def alone(seed):
        study = optuna.create_study(direction="maximize", sampler=make_sampler(seed))
        study.optimize(suggest, n_trials=12)
        return [tuple(t.params.values()) for t in study.trials]

    assert alone(0) == alone(0)
    assert alone(0) != alone(1)


def test_a_trial_asked_when_the_study_is_full_is_given_up_untrained(tmp_path):
    # Two workers both see one free slot of four and ask at once: the later trial number must not train.
    from bench.tune import create_or_load_study, run_trials

    late = create_or_load_study("race", f"journal:{tmp_path / 'race.log'}", tmp_path)
    early = create_or_load_study("race", f"journal:{tmp_path / 'race.log'}", tmp_path)
    for value in (0.1, 0.2, 0.3):
        trial = early.ask()
        early.tell(trial, value)
    asks = []
    early_trials = []

    def ask_after_the_other_worker(*args, **kwargs):
        asks.append(1)
        assert len(asks) <= 2, "the worker kept asking for trials"
        if len(asks) == 1:
            early_trials.append(early.ask())
        return optuna.Study.ask(late, *args, **kwargs)

    late.ask = ask_after_the_other_worker
    trained = []
    run_trials(late, lambda trial: trained.append(trial.number) or 1.0, trials=4)
    early.tell(early_trials[0], 0.4)
    assert trained == [] and len(asks) == 1
    states = {t.number: (t.state.name, t.user_attrs) for t in early.get_trials()}
    assert states == {0: ("COMPLETE", {}), 1: ("COMPLETE", {}), 2: ("COMPLETE", {}), 3: ("COMPLETE", {}),
                      4: ("FAIL", {"surplus": True})}
    run_trials(late, lambda trial: trained.append(trial.number) or 1.0, trials=4)
    assert trained == []


def test_study_creation_retries_when_another_worker_creates_it_at_once(tmp_path, monkeypatch):
    import sqlalchemy.exc

    from bench.tune import create_or_load_study

    storage = f"journal:{tmp_path / 'created.log'}"
    create_study = optuna.create_study
    calls = []

    def collide_twice(**kwargs):
        calls.append(kwargs["study_name"])
        if len(calls) == 1:
            create_study(**kwargs)  # the other worker wins the race ...
            raise optuna.exceptions.DuplicatedStudyError("created by another process")
        if len(calls) == 2:  # ... or its CREATE TABLE does
            raise sqlalchemy.exc.IntegrityError("INSERT INTO alembic_version", {}, Exception("duplicate key"))
        return create_study(**kwargs)

    monkeypatch.setattr(optuna, "create_study", collide_twice)
    study = create_or_load_study("collide", storage, tmp_path)
    assert study.study_name == "collide" and len(calls) == 3
    assert len(optuna.get_all_study_names(optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "created.log"))))) == 1


def test_missing_database_driver_is_named_before_training(tmp_path, monkeypatch, capsys):
    import bench.tune

    def no_training(*args, **kwargs):
        raise AssertionError("read data or trained before checking the storage")

    for step in ("validate_spec", "dataset_for", "train_method"):
        monkeypatch.setattr(bench.tune, step, no_training)
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    monkeypatch.setitem(sys.modules, "MySQLdb", None)
    common = ["tune", "supervised", "--labels", "2", "--budget", "smoke", "--trials", "2", "--out", str(tmp_path)]
    for extra in ([], ["--create-only"]):
        assert main([*common, "--storage", "postgresql://tuner:secret@db.example/optuna", *extra]) == 2
        error = capsys.readouterr().err
        assert "postgresql://" in error and "'psycopg2' is not installed" in error
        assert 'pip install -e ".[postgres]"' in error and "secret" not in error
    assert main([*common, "--storage", "mysql://tuner@db.example/optuna"]) == 2
    error = capsys.readouterr().err
    assert "mysql://" in error and "'MySQLdb' is not installed" in error and "pip install mysqlclient" in error


def test_tuned_parameters_apply_to_a_run(tmp_path, monkeypatch, capsys):
    from bench.registry import METHODS

    (tmp_path / "tunable_plugin2.py").write_text(TUNABLE_PLUGIN.replace('"tunable"', '"tunable2"'))
    monkeypatch.syspath_prepend(str(tmp_path))
    # The plug-in must not outlive this test ("--methods all" elsewhere would train it).
    METHODS.names()
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    out = tmp_path / "tuning"
    assert main(["--plugin", "tunable_plugin2", "tune", "tunable2", "--labels", "2", "--trials", "2", "--budget", "smoke",
                 "--out", str(out), "--no-progress"]) == 0
    params_file = next(out.glob("*.yaml"))
    tuned = yaml.safe_load(params_file.read_text())
    assert tuned["method"] == "tunable2" and 0.5 <= tuned["params"]["loss_scale"] <= 2.0
    assert tuned["tuning"]["objective"] == "best validation Dice"
    assert list(out.glob("*-history.png"))
    runs = tmp_path / "runs"
    assert main(["--plugin", "tunable_plugin2", "run", "--methods", "tunable2", "--labels", "2", "--budget", "smoke",
                 "--params", str(params_file), "--no-progress", "--no-estimate", "--out", str(runs)]) == 0
    summary = json.loads(next(runs.rglob("summary.json")).read_text())
    assert summary["params"]["loss_scale"] == tuned["params"]["loss_scale"]
    assert summary["tuning"]["trials"] == 2 and "tuning" not in summary["config"]["options"]

    # The leaderboard names the tuned row with its trial budget and keeps it apart from a run at the
    # defaults, saying that the two rows had unequal search budgets.
    untuned = tmp_path / "untuned"
    assert main(["--plugin", "tunable_plugin2", "run", "--methods", "tunable2", "--labels", "2", "--budget", "smoke",
                 "--seeds", "2", "--no-progress", "--no-estimate", "--out", str(untuned)]) == 0
    board = tmp_path / "board"
    build_leaderboard([runs, untuned], board, plots=False, log=lambda _: None)
    folder = next(board.rglob("summary.csv")).parent
    table = pd.read_csv(folder / "summary.csv").set_index("method")
    assert table["num_seeds"].to_dict() == {"tunable2 [tuned: 2 trials]": 1, "tunable2": 2}
    assert table["tuning_trials"].to_dict() == {"tunable2 [tuned: 2 trials]": 2, "tunable2": 0}
    assert "Search budgets differ between rows (2 trials: tunable2 [tuned: 2 trials]; 0 trials: tunable2)" in (
        folder / "leaderboard.md").read_text()


def test_set_rejects_unknown_parameters(tmp_path, capsys):
    assert main(["run", "--methods", "supervised", "--set", "supervised.nonsense=1", "--budget", "smoke",
                 "--out", str(tmp_path)]) == 2
    assert "unknown hyper-parameter(s) ['nonsense']" in capsys.readouterr().err
