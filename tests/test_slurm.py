"""``bench run --launcher slurm`` on a real one-node SLURM cluster (``tests/slurm/start_cluster.sh``):
one job array per sweep, results equal to a local sweep's, a cancelled task resumed by the next
submission, a preempted or timed-out task requeued and resumed, a failing run failing alone; and
``bench status`` reading it all back.

The cluster is started by ``.ci/run`` or, where SLURM is installed, by the session fixture below (and
stopped after).  Where it cannot start, these tests fail under ``CI=true`` and are skipped elsewhere."""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.runs import CHECKPOINT_FILE, RunSpec
from bench.status import held_locks, is_locked

CLUSTER_SCRIPTS = Path(__file__).parent / "slurm"
SMOKE = ["--budget", "smoke", "--no-progress", "--no-estimate"]
ACCEPTANCE = ["--methods", "mean-teacher,supervised", "--dataset", "synthetic", "--labels", "1", "--seeds", "2",
              "--budget", "smoke"]
PACED_ITERS = 30
"""Smoke validates and checkpoints every 2 steps; a paced run takes PACED_ITERS x STEP_SECONDS."""
STEP_SECONDS = "0.4"
WAIT_S = 240

PLUGIN = textwrap.dedent(
    '''
    import os
    import time

    from bench import Method, StepOutput, ce_dice_loss, register_method, unet_for


    @register_method()
    class Paced(Method):
        """Supervised U-Net whose steps take BENCH_TEST_STEP_SECONDS longer (a run slow enough to stop)."""
        name = "paced"
        paper = "test plug-in"

        def __init__(self, params, task):
            super().__init__(params, task)
            self.network = unet_for(task)

        def training_step(self, batch, progress):
            time.sleep(float(os.environ.get("BENCH_TEST_STEP_SECONDS", "0")))
            return StepOutput(ce_dice_loss(self.network(batch.labeled_images), batch.labels))


    @register_method()
    class Explodes(Method):
        """Fails at its second step."""
        name = "explodes"
        paper = "test plug-in"

        def __init__(self, params, task):
            super().__init__(params, task)
            self.network = unet_for(task)

        def training_step(self, batch, progress):
            if progress.step >= 1:
                raise RuntimeError("exploded on purpose")
            return StepOutput(ce_dice_loss(self.network(batch.labeled_images), batch.labels))
    '''
)


def cluster_answers() -> bool:
    try:
        nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=20)
        accounting = subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return (nodes.returncode == 0 and accounting.returncode == 0
            and any(state in ("idle", "mixed", "allocated") for state in nodes.stdout.split()))


def unavailable(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running cluster: the one ``.ci/run`` started, or one started here where SLURM is installed
    (never installed from here outside CI), stopped at the end of the session."""
    if cluster_answers():
        yield
        return
    if shutil.which("slurmctld") is None and os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        pytest.skip("no SLURM here: `bash tests/slurm/start_cluster.sh` (root) installs and starts a one-node cluster")
    started = subprocess.run(["bash", str(CLUSTER_SCRIPTS / "start_cluster.sh")], capture_output=True, text=True,
                             timeout=900)
    if started.returncode != 0 or not cluster_answers():
        unavailable(f"tests/slurm/start_cluster.sh could not start a SLURM cluster:\n{started.stderr[-3000:]}")
    yield
    subprocess.run(["bash", str(CLUSTER_SCRIPTS / "stop_cluster.sh")], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm-plugin")
    (folder / "slurm_test_plugin.py").write_text(PLUGIN)
    return folder


def bench_process(args, cwd: Path, plugin_dir: Path, step_seconds: str = "0", wait: bool = True):
    """``bench`` in its own process, as a user types it; the plug-in importable there and in the tasks."""
    env = dict(os.environ, BENCH_TEST_STEP_SECONDS=step_seconds,
               PYTHONPATH=os.pathsep.join(filter(None, [str(plugin_dir), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "bench.cli", *args]
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=WAIT_S)


def submitted_job(stdout: str) -> str:
    match = re.search(r"submitted \d+ run\(s\) as SLURM job (\d+)", stdout)
    assert match, stdout
    return match.group(1)


def sacct(job: str, fields: str = "JobID,State", *extra: str) -> list[list[str]]:
    listing = subprocess.run(["sacct", "-X", "-n", "-P", "-o", fields, "-j", job, *extra],
                             capture_output=True, text=True, check=True)
    return [line.split("|") for line in listing.stdout.splitlines() if line]


def wait_for(condition, what: str, seconds: float = WAIT_S):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def run_folder(out: Path, method: str, labels: str = "1", seed: int = 0, budget: str = "smoke") -> Path:
    return out / "synthetic" / budget / method / labels / f"seed{seed}"


def assert_same_run(folder: Path, reference: Path) -> None:
    summary, expected = (json.loads((path / "summary.json").read_text()) for path in (folder, reference))
    assert summary["metrics"] == expected["metrics"]
    assert summary["key"] == expected["key"]
    for name in ("train_log.csv", "per_case.csv"):
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name
    best, expected_best = (torch.load(path / "best.pt", weights_only=True) for path in (folder, reference))
    assert best.keys() == expected_best.keys()
    assert all(torch.equal(best[name], expected_best[name]) for name in best)


@pytest.fixture(scope="module")
def paced_reference(tmp_path_factory, plugin_dir):
    """The paced run trained here, uninterrupted, without the pause (it changes no number)."""
    out = tmp_path_factory.mktemp("paced-local")
    result = bench_process(["--plugin", "slurm_test_plugin", "run", "--methods", "paced", "--labels", "1",
                            "--iters", str(PACED_ITERS), *SMOKE, "--out", str(out)], out, plugin_dir)
    assert result.returncode == 0, result.stderr
    return run_folder(out, "paced")


def test_a_sweep_on_slurm_is_one_job_array_and_ends_as_the_same_sweep_run_here(slurm_cluster, tmp_path, plugin_dir,
                                                                              capsys):
    assert main(["run", *ACCEPTANCE, "--no-progress", "--no-estimate", "--out", str(tmp_path / "local")]) == 0
    capsys.readouterr()
    result = bench_process(["run", *ACCEPTANCE, "--launcher", "slurm", "--wait", "--out", "cluster"], tmp_path,
                           plugin_dir)
    assert result.returncode == 0, result.stderr
    job = submitted_job(result.stdout)
    assert "mean-teacher" in result.stdout and "supervised" in result.stdout  # the results table

    tasks = sacct(job)
    assert sorted(tasks) == [[f"{job}_{task}", "COMPLETED"] for task in range(4)], tasks
    script = (tmp_path / "cluster" / ".slurm" / job / f"{job}_submission.sh").read_text()
    assert "#SBATCH --array=0-3%" in script and script.count("#SBATCH --array") == 1
    for method in ("mean-teacher", "supervised"):
        for seed in (0, 1):
            folder = run_folder(tmp_path / "cluster", method, seed=seed)
            assert_same_run(folder, run_folder(tmp_path / "local", method, seed=seed))
            assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
            assert json.loads((folder / "slurm.json").read_text())["job_id"].startswith(f"{job}_")

    status = bench_process(["status", "cluster"], tmp_path, plugin_dir)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "4 runs: 4 finished, 0 running, 0 pending, 0 failed" in status.stdout
    assert status.stdout.count("COMPLETED") == 4 and f"{job}_3" in status.stdout

    again = bench_process(["run", *ACCEPTANCE, "--launcher", "slurm", "--out", "cluster"], tmp_path, plugin_dir)
    assert again.returncode == 0 and "submitted" not in again.stdout  # finished runs are not submitted again
    assert "4 already complete" in again.stderr


def test_a_cancelled_task_resumes_from_its_checkpoint_when_the_sweep_is_submitted_again(
        slurm_cluster, tmp_path, plugin_dir, paced_reference):
    args = ["--plugin", "slurm_test_plugin", "run", "--methods", "paced", "--labels", "1", "--iters", str(PACED_ITERS),
            *SMOKE, "--launcher", "slurm", "--out", "cluster"]
    submitted = bench_process(args, tmp_path, plugin_dir, step_seconds=STEP_SECONDS)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted_job(submitted.stdout)
    folder = run_folder(tmp_path / "cluster", "paced")
    wait_for(lambda: (folder / CHECKPOINT_FILE).exists(), "the first checkpoint")
    subprocess.run(["scancel", job], check=True)
    wait_for(lambda: sacct(job) and sacct(job)[0][1].startswith("CANCELLED"), "the task to be cancelled")
    # submitit lets the SIGTERM pass; SIGKILL follows after KillWait: the run's lock is free once it is dead.
    wait_for(lambda: not is_locked(folder, held_locks()), "the cancelled task to end")
    assert not (folder / "summary.json").exists(), "the run finished before it was cancelled: pace it slower"
    stopped_at = torch.load(folder / CHECKPOINT_FILE, weights_only=True)["step"]
    assert 0 < stopped_at < PACED_ITERS

    status = bench_process(["status", "cluster"], tmp_path, plugin_dir)
    assert status.returncode == 0, status.stdout
    assert re.search(rf"paced/1/seed0\s+pending\s+\d+/{PACED_ITERS}\s.*\s{job}\s+CANCELLED", status.stdout), status.stdout

    resumed = bench_process([*args, "--wait"], tmp_path, plugin_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert submitted_job(resumed.stdout) != job
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["training"]["resumed_from_step"] == stopped_at
    assert_same_run(folder, paced_reference)


def test_a_preempted_or_timed_out_task_is_requeued_and_resumes_from_its_checkpoint(
        slurm_cluster, tmp_path, plugin_dir, paced_reference):
    # With a time limit under 10 minutes submitit counts any USR2 as the time limit's warning, which only
    # a Checkpointable task survives (a preemption is requeued either way).
    waiting = bench_process(["--plugin", "slurm_test_plugin", "run", "--methods", "paced", "--labels", "1",
                             "--iters", str(PACED_ITERS), *SMOKE, "--launcher", "slurm", "--time-limit", "5",
                             "--wait", "--out", "cluster"], tmp_path, plugin_dir, step_seconds=STEP_SECONDS,
                            wait=False)
    try:
        folder = run_folder(tmp_path / "cluster", "paced")
        job = wait_for(lambda: json.loads((folder / "slurm.json").read_text())["job_id"]
                       if (folder / "slurm.json").exists() else None, "the submission")
        wait_for(lambda: (folder / CHECKPOINT_FILE).exists(), "the first checkpoint")
        subprocess.run(["scancel", "--signal=USR2", job], check=True)  # what SLURM sends 90 s before the limit
        stdout, stderr = waiting.communicate(timeout=WAIT_S)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 0, stderr
    summary = json.loads((folder / "summary.json").read_text())
    assert 0 < summary["training"]["resumed_from_step"] < PACED_ITERS
    assert_same_run(folder, paced_reference)
    attempts = [state for _, state in sacct(job, "JobID,State", "--duplicates")]
    assert "REQUEUED" in attempts and attempts[-1] == "COMPLETED", attempts


def test_a_failing_run_is_recorded_as_failed_and_the_others_finish(slurm_cluster, tmp_path, plugin_dir):
    result = bench_process(["--plugin", "slurm_test_plugin", "run", "--methods", "explodes,supervised", "--labels", "1",
                            *SMOKE, "--launcher", "slurm", "--wait", "--out", "cluster", "--array-parallelism", "1",
                            "--time-limit", "0:10:00", "--mem-per-run", "1", "--sbatch=--job-name=bench-failing-test"],
                           tmp_path, plugin_dir)
    assert result.returncode == 1, result.stderr
    job = submitted_job(result.stdout)
    failed = run_folder(tmp_path / "cluster", "explodes")
    failure = json.loads((failed / "failure.json").read_text())
    assert failure["step"] == 1 and "exploded on purpose" in failure["reason"]
    assert "1 run(s) failed" in result.stderr and "exploded on purpose" in result.stderr
    assert (run_folder(tmp_path / "cluster", "supervised") / "summary.json").exists()
    tasks = sacct(job, "JobID,State,JobName,Timelimit,ReqMem")
    assert sorted(row[:2] for row in tasks) == [[f"{job}_0", "FAILED"], [f"{job}_1", "COMPLETED"]], tasks
    assert {tuple(row[2:]) for row in tasks} == {("bench-failing-test", "00:10:00", "1G")}, tasks
    script = (tmp_path / "cluster" / ".slurm" / job / f"{job}_submission.sh").read_text()
    assert "#SBATCH --array=0-1%1" in script

    status = bench_process(["status", "cluster"], tmp_path, plugin_dir)
    assert status.returncode == 1
    assert "2 runs: 1 finished, 0 running, 0 pending, 1 failed" in status.stdout
    assert re.search(rf"explodes/1/seed0\s+failed\s.*\s{job}_0\s+FAILED", status.stdout), status.stdout


def test_a_task_leaves_a_run_locked_by_another_process_to_it(tmp_path):
    """The array task trains through the run folder's lock, as a local sweep does."""
    from bench.launchers.slurm import SweepTask

    spec = RunSpec(dataset="synthetic", method="supervised", labels="1", seed=0, budget="smoke")
    folder = spec.directory(tmp_path)
    folder.mkdir(parents=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert "being trained by another process" in SweepTask()(spec, tmp_path)
    assert not (folder / "config.json").exists()


def test_launcher_block_of_an_experiment_file(tmp_path):
    from bench.cli import apply_config_file, build_parser
    from bench.launchers.slurm import parse_sbatch_lines, parse_time_limit

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("methods: [supervised]\nlog_with: none\nlauncher:\n  name: slurm\n  partition: gpu\n"
                     "  gpus_per_run: 1\n  time_limit: '2-00:00:00'\n  sbatch: --account=lab\n")
    parser = build_parser()
    args = apply_config_file(parser, ["run", "--config", str(sweep), "--partition", "a100"], sweep)
    assert (args.launcher, args.partition, args.gpus_per_run, args.log_with) == ("slurm", "a100", 1, "none")
    assert parse_time_limit(args.time_limit) == 2 * 24 * 60 and parse_sbatch_lines(args.sbatch) == {"account": "lab"}
    assert parse_time_limit("90") == 90 and parse_time_limit("1:30:00") == 90
    assert parse_sbatch_lines(["#SBATCH --qos low", "exclusive"]) == {"qos": "low", "exclusive": True}
    sweep.write_text("launcher: {name: kubernetes}\n")
    with pytest.raises(ValueError, match="kubernetes"):
        apply_config_file(build_parser(), ["run", "--config", str(sweep)], sweep)


def test_readme_cluster_example_uses_real_options():
    from bench.cli import build_parser

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"```bash\n(bench run [^`]*--launcher slurm[^`]*?)\n```", readme).group(1)
    command = block.split("\nbench status")[0].replace("\\\n", " ")
    args = build_parser().parse_args(command.split()[1:])
    assert args.launcher == "slurm" and args.gpus_per_run == 1 and args.sbatch == ["--account=mylab"]
