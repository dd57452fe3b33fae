"""Runs survive being killed, failures are recorded results, concurrent sweeps never train a run twice."""
from __future__ import annotations

import fcntl
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.runs import RunSpec
from bench.sweep import expand_runs, select_shard

RUN = ["run", "--methods", "mean-teacher", "--labels", "1", "--seeds", "1", "--budget", "quick", "--no-progress",
       "--no-estimate"]
"""Mean Teacher draws teacher noise from the global RNG every step and reaches Dice ~0.3 at this budget, so
a resume that restores the RNG, the data position or the teacher wrongly changes the numbers compared."""


def test_killed_run_resumes_to_the_same_result(tmp_path):
    interrupted, clean = tmp_path / "interrupted", tmp_path / "clean"
    run_folder = interrupted / "synthetic/quick/mean-teacher/1/seed0"
    process = subprocess.Popen([sys.executable, "-m", "bench.cli", *RUN, "--out", str(interrupted)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    checkpoint = run_folder / "checkpoint.pt"
    while time.time() < deadline and process.poll() is None:
        if checkpoint.exists() and torch.load(checkpoint, weights_only=True)["step"] >= 50:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_folder / "summary.json").exists()

    assert main([*RUN, "--out", str(interrupted)]) == 0
    assert main([*RUN, "--out", str(clean)]) == 0
    resumed = json.loads((run_folder / "summary.json").read_text())
    reference = json.loads((clean / "synthetic/quick/mean-teacher/1/seed0/summary.json").read_text())
    assert resumed["training"]["resumed_from_step"] >= 50
    # The cost of the run counts the steps before the kill as well.
    assert 0 < resumed["training"]["seconds_before_resume"] < resumed["training"]["train_seconds"] <= resumed["wall_seconds"]
    assert reference["metrics"]["dice"] > 0.1, "the comparison needs a run whose result depends on its training"
    for name in ("per_case.csv", "train_log.csv"):
        assert (run_folder / name).read_bytes() == (clean / "synthetic/quick/mean-teacher/1/seed0" / name).read_bytes()
    assert resumed["training"]["best_step"] == reference["training"]["best_step"]
    assert not checkpoint.exists()


NAN_PLUGIN = textwrap.dedent(
    '''
    import torch
    from bench import Method, StepOutput, register_method, unet_for

    @register_method()
    class Diverging(Method):
        name = "diverging"
        paper = "test plug-in whose loss becomes NaN"

        def __init__(self, params, task):
            super().__init__(params, task)
            self.network = unet_for(task)

        def training_step(self, batch, progress):
            loss = self.network(batch.labeled_images).mean()
            return StepOutput(loss * float("nan") if progress.step >= 2 else loss)
    '''
)


def test_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    from bench.registry import METHODS

    (tmp_path / "nan_plugin.py").write_text(NAN_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    # The plugin's method must not outlive this test ("--methods all" elsewhere would train it).
    METHODS.names()  # discover the installed methods first, so the copy restored afterwards holds them
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    out = tmp_path / "runs"
    args = ["--plugin", "nan_plugin", "run", "--methods", "diverging,supervised", "--labels", "2", "--budget", "smoke",
            "--iters", "4", "--no-progress", "--no-estimate", "--out", str(out)]
    assert main(args) == 1
    captured = capsys.readouterr()
    failure = json.loads((out / "synthetic/smoke/diverging/2/seed0/failure.json").read_text())
    assert failure["step"] == 2 and "non-finite loss" in failure["reason"]
    assert (out / "synthetic/smoke/diverging/2/seed0/traceback.txt").exists()
    assert not (out / "synthetic/smoke/diverging/2/seed0/summary.json").exists()
    assert (out / "synthetic/smoke/supervised/2/seed0/summary.json").exists()
    assert "1 run(s) failed" in captured.err
    assert main(args) == 1
    assert "failed before at step 2" in capsys.readouterr().err
    assert main([*args, "--retry-failed"]) == 1
    assert "1 to run" in capsys.readouterr().err


def test_a_locked_run_is_left_to_its_owner(tmp_path, capsys):
    out = tmp_path / "runs"
    spec = RunSpec(dataset="synthetic", method="supervised", labels="2", seed=0, budget="smoke")
    folder = spec.directory(out)
    folder.mkdir(parents=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["run", "--methods", "supervised", "--labels", "2", "--budget", "smoke", "--no-progress",
                     "--no-estimate", "--out", str(out)]) == 0
    assert "being trained by another process" in capsys.readouterr().err
    assert not (folder / "summary.json").exists()


def test_shards_partition_the_sweep():
    specs = expand_runs(["supervised", "fully-supervised"], "synthetic", ["1", "2", "4"], [0, 1, 2], "smoke")
    shards = [select_shard(specs, f"{i}/3") for i in range(3)]
    keys = [spec.key for shard in shards for spec in shard]
    assert sorted(keys) == sorted(spec.key for spec in specs) and len(set(keys)) == len(keys)


def test_two_jobs_complete_every_run(tmp_path):
    out = tmp_path / "runs"
    assert main(["run", "--methods", "supervised", "--labels", "1,2", "--seeds", "2", "--budget", "smoke", "--jobs", "2",
                 "--no-progress", "--no-estimate", "--out", str(out)]) == 0
    assert len(list(out.rglob("summary.json"))) == 4


def test_a_failed_write_leaves_no_summary_and_earlier_results_intact(tmp_path, monkeypatch, capsys):
    import errno

    import bench.execute

    out = tmp_path / "runs"
    base = ["run", "--methods", "supervised", "--budget", "smoke", "--no-progress", "--no-estimate", "--out", str(out)]
    assert main([*base, "--labels", "1"]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real_write = bench.execute.write_json_atomic

    def full_disk(path, payload):
        if path.name == "summary.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, payload)

    monkeypatch.setattr(bench.execute, "write_json_atomic", full_disk)
    assert main([*base, "--labels", "2"]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert not (out / "synthetic/smoke/supervised/2/seed0/summary.json").exists()
    assert {p: p.read_bytes() for p in before} == before


def finished_smoke_run(tmp_path, method: str) -> tuple[list[str], Path]:
    """The ``bench run`` arguments of one finished smoke run of ``method``, and its summary's path."""
    out = tmp_path / "runs"
    args = ["run", "--methods", method, "--labels", "1", "--budget", "smoke", "--no-progress", "--no-estimate",
            "--out", str(out)]
    assert main(args) == 0
    return args, out / f"synthetic/smoke/{method}/1/seed0/summary.json"


def test_results_from_another_format_version_are_refused_clearly(tmp_path, capsys):
    args, summary_path = finished_smoke_run(tmp_path, "supervised")
    old = json.loads(summary_path.read_text())
    old["format_version"] = 0
    summary_path.write_text(json.dumps(old))
    assert main(args) == 2
    assert "result format 0" in capsys.readouterr().err
    assert json.loads(summary_path.read_text()) == old


def test_a_run_trained_with_other_method_defaults_is_refused_then_overwritten_on_request(tmp_path, capsys):
    """A default changed in the code since a run was trained (its summary records the parameters it used)
    must not let the sweep pass that run off as complete; ``--overwrite`` re-runs it."""
    args, summary_path = finished_smoke_run(tmp_path, "mc-net-plus")
    old = json.loads(summary_path.read_text())
    assert old["params"]["poly_lr_decay"] is False
    del old["params"]["poly_lr_decay"]  # as trained before the parameter existed
    old["params"]["temperature"] = 0.2
    summary_path.write_text(json.dumps(old))
    capsys.readouterr()
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "poly_lr_decay: not recorded, now False" in error and "temperature: 0.2, now 0.1" in error
    assert json.loads(summary_path.read_text()) == old
    assert main([*args, "--overwrite"]) == 0
    assert json.loads(summary_path.read_text())["params"]["temperature"] == 0.1


def test_accelerate_launch_trains_one_run_with_two_processes(tmp_path):
    """``accelerate launch --multi_gpu`` on a machine without GPUs is torchrun with a gloo group.  Both
    processes must train one run together: with the group formed, the main process's updates average
    in the other process's samples, so its training log differs from a one-process run's (a group that
    never formed leaves each process training alone, the main one exactly as a one-process run)."""
    run = ["run", "--methods", "mean-teacher", "--labels", "2", "--budget", "smoke", "--iters", "6", "--no-progress",
           "--no-estimate"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517"]
    result = subprocess.run([*launch, "-m", "bench.cli", *run, "--out", str(tmp_path / "two")], capture_output=True,
                            text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert main([*run, "--out", str(tmp_path / "one")]) == 0
    folder = Path("synthetic/smoke/mean-teacher/2/seed0")
    assert [path.relative_to(tmp_path / "two") for path in (tmp_path / "two").rglob("summary.json")] == [folder / "summary.json"]
    two = json.loads((tmp_path / "two" / folder / "summary.json").read_text())
    one = json.loads((tmp_path / "one" / folder / "summary.json").read_text())
    assert two["num_processes"] == 2 and one["num_processes"] == 1
    assert "x 2 process(es)" in two["hardware"]
    two_log = pd.read_csv(tmp_path / "two" / folder / "train_log.csv")
    one_log = pd.read_csv(tmp_path / "one" / folder / "train_log.csv")
    assert two_log["loss"].iloc[0] == pytest.approx(one_log["loss"].iloc[0], rel=1e-6)  # same weights and batch at step 1
    assert not np.allclose(two_log["loss"].iloc[1:], one_log["loss"].iloc[1:], rtol=1e-6)
    assert result.stderr.count("runs: 0 already complete") == 1, "only the main process reports"


def test_a_single_process_from_accelerate_launch_cpu_is_said(tmp_path):
    """``accelerate launch --cpu --num_processes 2`` starts one process (Accelerate's multi-CPU mode needs
    MPI): the run trains as one process, and bench says so rather than letting the user believe two did."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "bench.cli", "run", "--methods", "supervised",
               "--labels", "2", "--budget", "smoke", "--iters", "2", "--no-progress", "--no-estimate", "--out",
               str(tmp_path / "runs")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "started by `accelerate launch` as a single process" in result.stderr
    (summary,) = (tmp_path / "runs").rglob("summary.json")
    assert json.loads(summary.read_text())["num_processes"] == 1
