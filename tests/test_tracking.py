"""Training curves through Accelerate's trackers: every row of ``train_log.csv`` reaches TensorBoard under
its run folder, each step once even after a resume; the tracker is not part of a run's identity."""
from __future__ import annotations

import csv
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from accelerate import Accelerator
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bench.cli import main
from bench.execute import execute_run
from bench.runs import RunSpec

SMOKE = ["--budget", "smoke", "--no-progress", "--no-estimate"]


class SimulatedKill(BaseException):
    """Not an ``Exception``: the harness's failure handling must not see it, as it would not see SIGKILL."""


def logged_scalars(folder: Path, purge_orphaned_data: bool = True) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of a run's TensorBoard folder, read back as TensorBoard reads it."""
    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0},
                              purge_orphaned_data=purge_orphaned_data)
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def tracker_threads() -> list[threading.Thread]:
    """TensorBoard's writer threads alive in this process: a tracker not finished leaves its own running."""
    return [thread for thread in threading.enumerate() if type(thread).__module__.startswith("tensorboard")]


def training_log(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """``train_log.csv`` as series: column -> (step, value as float32, as TensorBoard stores it)."""
    with open(folder / "train_log.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    columns = [name for name in rows[0] if name != "step"]
    return {name: [(int(row["step"]), float(np.float32(float(row[name])))) for row in rows if row[name] != ""]
            for name in columns}


def test_tensorboard_curves_equal_the_training_log_and_change_no_run_key(tmp_path, capsys):
    common = ["run", "--methods", "mean-teacher", "--labels", "1", "--iters", "6", *SMOKE]
    assert main([*common, "--out", str(tmp_path / "tb")]) == 0
    folder = tmp_path / "tb" / "synthetic/smoke/mean-teacher/1/seed0"
    expected = training_log(folder)
    assert {"loss", "lr", "val_dice", "loss_supervised", "loss_consistency"} <= set(expected)
    assert logged_scalars(folder) == expected
    assert len(list((folder / "tensorboard").iterdir())) == 1  # one event file: no hparams sub-run
    assert tracker_threads() == []  # the tracker was finished with the run

    assert main([*common, "--log-with", "none", "--out", str(tmp_path / "none")]) == 0
    quiet = tmp_path / "none" / "synthetic/smoke/mean-teacher/1/seed0"
    assert not (quiet / "tensorboard").exists()
    with_curves, without = (json.loads((path / "summary.json").read_text()) for path in (folder, quiet))
    assert with_curves["key"] == without["key"] and with_curves["config"] == without["config"]
    assert (folder / "train_log.csv").read_bytes() == (quiet / "train_log.csv").read_bytes()
    capsys.readouterr()
    # The same sweep with the other tracker setting is complete already: nothing runs again.
    assert main([*common, "--log-with", "none", "--out", str(tmp_path / "tb")]) == 0
    assert "1 already complete" in capsys.readouterr().err


def test_a_resumed_run_shows_every_step_once_with_the_values_of_its_log(tmp_path, monkeypatch):
    spec = RunSpec(dataset="synthetic", method="mean-teacher", labels="1", seed=0, budget="smoke", iterations=8,
                   options={"log_with": "tensorboard"})
    real_log = Accelerator.log

    def log_then_die(self, values, step=None, log_kwargs=None):
        real_log(self, values, step=step, log_kwargs=log_kwargs)
        if step == 3:  # one step past the checkpoint of step 2: logged, then lost to the kill
            raise SimulatedKill

    with monkeypatch.context() as patch:
        patch.setattr(Accelerator, "log", log_then_die)
        with pytest.raises(SimulatedKill):
            execute_run(spec, tmp_path, show_progress=False)
    assert tracker_threads() == []  # finished even when the run did not end normally
    resumed = execute_run(spec, tmp_path, show_progress=False)
    assert resumed["training"]["resumed_from_step"] == 2

    folder = spec.directory(tmp_path)
    assert len(list((folder / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert [step for step, _ in logged_scalars(folder, purge_orphaned_data=False)["loss"]].count(3) == 2
    assert logged_scalars(folder) == training_log(folder)


def test_a_tracker_whose_package_is_missing_is_named_before_any_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert main(["run", "--methods", "supervised", "--labels", "1", *SMOKE, "--log-with", "wandb",
                 "--out", str(tmp_path)]) == 2
    assert "pip install wandb" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
