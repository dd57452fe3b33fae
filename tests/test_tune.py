"""``bench tune``: shared studies, the requested number of trials, parameters a run can apply."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import optuna
import pandas as pd
import yaml

from bench.cli import main
from bench.leaderboard import build_leaderboard

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


def test_two_processes_share_one_journal_study(tmp_path):
    (tmp_path / "tunable_plugin.py").write_text(TUNABLE_PLUGIN)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    journal = tmp_path / "study.log"
    command = [sys.executable, "-m", "bench.cli", "--plugin", "tunable_plugin", "tune", "tunable", "--labels", "2",
               "--trials", "4", "--budget", "smoke", "--storage", f"journal:{journal}", "--study-name", "shared",
               "--out", str(tmp_path / "out"), "--no-progress"]
    processes = [subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    # MaxTrialsCallback stops each process once 4 are finished; a trial already running then may still finish.
    assert 4 <= len(finished) <= 5


def test_tuned_parameters_apply_to_a_run(tmp_path, monkeypatch, capsys):
    (tmp_path / "tunable_plugin2.py").write_text(TUNABLE_PLUGIN.replace('"tunable"', '"tunable2"'))
    monkeypatch.syspath_prepend(str(tmp_path))
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
