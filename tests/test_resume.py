"""Exact resume: a run stopped right after a checkpoint and started again ends byte for byte where an
uninterrupted run ends, for every method family that draws randomness (teacher noise, dropout, CutMix,
copy-paste, prompt sampling, SAM on the tiny configuration).

The run is stopped in-process by an exception that no handler of the harness catches (as a SIGKILL would
end it), raised after the checkpoint file is on disk; ``test_reliability`` kills a real process with
SIGKILL.  ``train_log.csv`` holds every step's loss terms, so it differs from the first step after the
resume on when the RNG, the data position, an optimizer or a teacher is restored wrongly."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import bench.training as training
from bench.execute import execute_run
from bench.runs import CHECKPOINT_FILE, RunSpec

ITERATIONS, STOP_AFTER_STEP = 8, 2
"""Smoke validates (and checkpoints) every 2 steps: stopped after step 2, the run resumes for 6 steps."""

CLASSIC = ["mean-teacher", "ua-mt", "cps", "fixmatch", "unimatch", "bcp", "urpc", "mc-net-plus"]
SAM_BASED = ["cpc-sam", "samed", "interactmatch", "knowsam", "synfoc", "semisam"]


class SimulatedKill(BaseException):
    """Not an ``Exception``: the harness's failure handling must not see it, as it would not see SIGKILL."""


def spec_for(method: str) -> RunSpec:
    options = {"sam_model": "tiny", "sam_random_init": True} if method in SAM_BASED else {}
    return RunSpec(dataset="synthetic", method=method, labels="2", seed=0, budget="smoke",
                   iterations=ITERATIONS, options=options)


def stopped_after_checkpoint(spec: RunSpec, out: Path, monkeypatch) -> None:
    real_save = training.save_checkpoint

    def save_then_die(path, payload):
        real_save(path, payload)
        if payload["step"] >= STOP_AFTER_STEP:
            raise SimulatedKill

    with monkeypatch.context() as patch:
        patch.setattr(training, "save_checkpoint", save_then_die)
        with pytest.raises(SimulatedKill):
            execute_run(spec, out, show_progress=False)
    checkpoint = torch.load(spec.directory(out) / CHECKPOINT_FILE, weights_only=True)
    assert checkpoint["step"] == STOP_AFTER_STEP


@pytest.mark.parametrize("method", CLASSIC + SAM_BASED)
def test_a_stopped_run_resumes_to_the_uninterrupted_result(method, tmp_path, monkeypatch):
    spec = spec_for(method)
    clean = execute_run(spec, tmp_path / "clean", show_progress=False)
    stopped_after_checkpoint(spec, tmp_path / "stopped", monkeypatch)
    resumed = execute_run(spec, tmp_path / "stopped", show_progress=False)

    assert resumed["training"]["resumed_from_step"] == STOP_AFTER_STEP
    assert clean["training"]["resumed_from_step"] == 0
    clean_folder, resumed_folder = spec.directory(tmp_path / "clean"), spec.directory(tmp_path / "stopped")
    for name in ("train_log.csv", "per_case.csv"):
        assert (resumed_folder / name).read_bytes() == (clean_folder / name).read_bytes(), name
    clean_best = torch.load(clean_folder / "best.pt", weights_only=True)
    resumed_best = torch.load(resumed_folder / "best.pt", weights_only=True)
    assert clean_best.keys() == resumed_best.keys()
    assert all(torch.equal(clean_best[name], resumed_best[name]) for name in clean_best)
    assert not (resumed_folder / CHECKPOINT_FILE).exists()
