"""Failures stay with the run that caused them: any exception from a method or plug-in is that run's
``failure.json`` and the sweep goes on; wrong parameter types and bad data are refused before any run
starts; a write that fails (a full disk) names the file, leaves no partial or temporary file, and a
re-run completes."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bench.cli import main
from test_data_check import edit_h5, write_acdc

SMOKE = ["--budget", "smoke", "--no-progress", "--no-estimate"]

RAISING_PLUGIN = textwrap.dedent(
    '''
    from bench import Method, StepOutput, register_method, unet_for

    @register_method()
    class RaisesKeyError(Method):
        name = "raises-key-error"
        paper = "test plug-in whose step looks up a key that is not there"

        def __init__(self, params, task):
            super().__init__(params, task)
            self.network = unet_for(task)

        def training_step(self, batch, progress):
            loss = self.network(batch.labeled_images).mean()
            if progress.step >= 1:
                return StepOutput({}["teacher_logits"])
            return StepOutput(loss)

    @register_method()
    class BrokenConstructor(Method):
        name = "broken-constructor"
        paper = "test plug-in whose constructor is called wrongly"

        def __init__(self, params, task):
            super().__init__(params, task, "one argument too many")
    '''
)


@pytest.fixture
def raising_plugin(tmp_path, monkeypatch):
    from bench.registry import METHODS

    (tmp_path / "raising_plugin.py").write_text(RAISING_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    METHODS.names()  # discover the installed methods first, so the copy restored afterwards holds them
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    return ["--plugin", "raising_plugin"]


def test_any_exception_from_a_method_fails_that_run_alone(tmp_path, raising_plugin, capsys):
    out = tmp_path / "runs"
    assert main([*raising_plugin, "run", "--methods", "raises-key-error,broken-constructor,supervised", "--labels", "2",
                 "--iters", "4", *SMOKE, "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert "2 run(s) failed" in error
    assert (out / "synthetic/smoke/supervised/2/seed0/summary.json").exists()

    key_error = out / "synthetic/smoke/raises-key-error/2/seed0"
    failure = json.loads((key_error / "failure.json").read_text())
    assert failure["type"] == "KeyError" and failure["step"] == 1 and "teacher_logits" in failure["reason"]
    trace = (key_error / "traceback.txt").read_text()
    assert "KeyError: 'teacher_logits'" in trace and "training_step" in trace
    assert not (key_error / "summary.json").exists()

    constructor = out / "synthetic/smoke/broken-constructor/2/seed0"
    failure = json.loads((constructor / "failure.json").read_text())
    assert failure["type"] == "TypeError" and failure["step"] is None
    assert "TypeError" in (constructor / "traceback.txt").read_text()
    for folder in (key_error, constructor):
        assert str(folder) in error


def test_set_values_are_coerced_to_the_parameter_type(tmp_path):
    out = tmp_path / "runs"
    # YAML 1.1 reads 1e30 as the string "1e30"; the Params field says float.
    assert main(["run", "--methods", "mean-teacher", "--labels", "2", "--iters", "2", *SMOKE, "--out", str(out),
                 "--set", "mean-teacher.consistency=1e30", "--set", "mean-teacher.iterations_per_epoch=50"]) == 0
    config = json.loads((out / "synthetic/smoke/mean-teacher/2/seed0/config.json").read_text())["config"]
    assert config["params"] == {"consistency": 1e30, "iterations_per_epoch": 50}
    assert isinstance(config["params"]["consistency"], float)


@pytest.mark.parametrize("assignment, value, expected", [
    ("mean-teacher.consistency=fast", "'fast'", "float"),
    ("mean-teacher.consistency=true", "True", "float"),
    ("mean-teacher.iterations_per_epoch=2.5", "2.5", "int"),
])
def test_a_wrong_parameter_type_is_refused_before_any_run(tmp_path, capsys, assignment, value, expected):
    out = tmp_path / "runs"
    assert main(["run", "--methods", "mean-teacher", "--labels", "2", *SMOKE, "--out", str(out), "--set", assignment]) == 2
    error = capsys.readouterr().err
    field = assignment.split("=")[0].split(".")[1]
    assert f"method 'mean-teacher', hyper-parameter '{field}': {value}" in error and f"valid {expected}" in error
    assert not (out / "synthetic").exists()


def test_a_nan_in_a_test_volume_is_refused_before_training(tmp_path, capsys):
    root = write_acdc(tmp_path / "acdc")
    bad_volume = root / "data" / "patient005_frame02.h5"
    edit_h5(bad_volume, "image", lambda image: image.__setitem__((1, 2, 3), np.nan))
    out = tmp_path / "runs"
    assert main(["run", "--methods", "supervised", "--dataset", "acdc", "--data-root", str(root), "--labels", "1",
                 *SMOKE, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert str(bad_volume) in error and "NaN" in error
    assert not (out / "acdc").exists()


FILE_SIZE_LIMIT = 100_000
"""Bytes one file may reach: the run's JSON and CSV files fit, its smoke checkpoint (~0.9 MB) does not."""


def run_with_file_size_limit(args: list[str]) -> subprocess.CompletedProcess:
    """A real failed write: past RLIMIT_FSIZE the kernel refuses the write (EFBIG), as a full disk refuses
    it (ENOSPC); Python ignores the SIGXFSZ that comes with it, so the write raises OSError."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))

    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)


def test_a_failed_write_names_the_file_leaves_no_debris_and_a_rerun_completes(tmp_path):
    run = ["run", "--methods", "mean-teacher", "--labels", "2", "--iters", "6", *SMOKE]
    assert main([*run, "--out", str(tmp_path / "clean")]) == 0  # also fills the data cache, outside the limit
    out = tmp_path / "runs"
    folder = out / "synthetic/smoke/mean-teacher/2/seed0"

    result = run_with_file_size_limit([*run, "--out", str(out)])
    assert result.returncode == 1, result.stderr[-2000:]
    failure = json.loads((folder / "failure.json").read_text())
    assert failure["type"] == "ArtefactWriteError" and failure["step"] == 1
    assert f"{folder / 'checkpoint.pt'}: cannot write (File too large)" in failure["reason"]
    assert "MiB free on" in failure["reason"]
    assert "ArtefactWriteError" in (folder / "traceback.txt").read_text()
    assert sorted(path.name for path in folder.iterdir()) == [
        ".lock", "config.json", "failure.json", "labeled_cases.json", "tensorboard", "traceback.txt", "train_log.csv"]

    assert main([*run, "--out", str(out), "--retry-failed"]) == 0
    clean = tmp_path / "clean/synthetic/smoke/mean-teacher/2/seed0"
    for name in ("per_case.csv", "train_log.csv"):
        assert (folder / name).read_bytes() == (clean / name).read_bytes()
    assert not (folder / "failure.json").exists()


def test_results_are_written_with_the_users_umask(tmp_path):
    out = tmp_path / "runs"
    previous = __import__("os").umask(0o022)
    try:
        assert main(["run", "--methods", "supervised", "--labels", "2", "--iters", "2", *SMOKE, "--out", str(out)]) == 0
    finally:
        __import__("os").umask(previous)
    folder = out / "synthetic/smoke/supervised/2/seed0"
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in folder.iterdir()
             if path.is_file() and path.name != ".lock"}
    assert modes == {name: "0o644" for name in modes}
    assert {"summary.json", "per_case.csv", "config.json", "best.pt", "predictions.npz"} <= set(modes)
