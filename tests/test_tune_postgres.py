"""``bench tune`` on a real PostgreSQL: a study created first (``--create-only``), two worker processes on
it, exactly the requested number of finished trials, no trial number twice, and the parameters file.

The server is started by ``.ci/run`` or, where PostgreSQL is installed, by the session fixture below
(``tests/postgres/start_postgres.sh``) and stopped after.  Where it cannot start, this fails under
``CI=true`` and is skipped elsewhere."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
import yaml

from decoy_tuning import start_workers

SCRIPTS = Path(__file__).parent / "postgres"
PORT = os.environ.get("BENCH_POSTGRES_PORT", "55432")
SERVER = f"postgresql://postgres@127.0.0.1:{PORT}"
TRIALS = 4
WORKER_TIMEOUT_S = 300

def server_answers() -> bool:
    pg_isready = shutil.which("pg_isready") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_isready"))), None)
    if pg_isready is None:
        return False
    return subprocess.run([str(pg_isready), "-q", "-h", "127.0.0.1", "-p", PORT], timeout=30).returncode == 0


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def postgres_server():
    """The server ``.ci/run`` started, or one started here where PostgreSQL is installed (never installed
    from here outside CI), stopped at the end of the session."""
    if server_answers():
        yield SERVER
        return
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and not in_ci():
        pytest.skip("no PostgreSQL here: `bash tests/postgres/start_postgres.sh` (root) installs and starts one")
    started = subprocess.run(["bash", str(SCRIPTS / "start_postgres.sh")], capture_output=True, text=True, timeout=900)
    if started.returncode != 0 or not server_answers():
        reason = f"tests/postgres/start_postgres.sh could not start PostgreSQL:\n{started.stderr[-3000:]}"
        pytest.fail(f"CI: {reason}") if in_ci() else pytest.skip(reason)
    yield SERVER
    subprocess.run(["bash", str(SCRIPTS / "stop_postgres.sh")], capture_output=True, timeout=120)


@pytest.fixture
def database(postgres_server):
    """A fresh database for one test, dropped after."""
    import psycopg2

    name = f"bench_tune_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(f"{postgres_server}/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{postgres_server}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


def tune_command(storage: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench.cli", "--plugin", "decoy_plugin", "tune", "decoy", "--labels", "2",
            "--trials", str(TRIALS), "--budget", "smoke", "--storage", storage, "--study-name", "shared",
            "--out", str(out), "--no-progress", *extra]


def run_workers(commands: list[list[str]], tmp_path: Path, trial_seconds: tuple[float, ...] = (0, 0)) -> list[str]:
    processes = start_workers(tmp_path, commands, trial_seconds)
    outputs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=WORKER_TIMEOUT_S)
            assert process.returncode == 0, stderr[-3000:]
            outputs.append(stdout)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return outputs


def test_two_workers_share_one_postgresql_study_and_finish_exactly_the_requested_trials(database, tmp_path):
    out = tmp_path / "tuning"
    # `bench tune` takes the plain URL a user types; read back here through the driver of the postgres extra
    # (SQLAlchemy >= 2.1 would pick psycopg 3 for a bare postgresql:// URL).
    storage = database.replace("postgresql://", "postgresql+psycopg2://", 1)
    (created,) = run_workers([tune_command(database, out, "--create-only")], tmp_path, trial_seconds=(0,))
    assert "study shared ready" in created
    assert optuna.load_study(study_name="shared", storage=storage).trials == []

    # The second worker's trials take 4 s longer: the first reaches "3 finished, 1 running" while the
    # second still trains, where a worker that counted finished trials only would start a fifth.
    run_workers([tune_command(database, out), tune_command(database, out)], tmp_path, trial_seconds=(0, 4))
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    complete = [trial for trial in trials if trial.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == TRIALS, [(t.number, t.state.name, t.params) for t in trials]
    assert len({trial.number for trial in trials}) == len(trials)
    assert len({trial.params["decoy"] for trial in complete}) == TRIALS
    assert not [trial for trial in trials if trial.state == optuna.trial.TrialState.RUNNING]
    workers_barrier = sorted(tmp_path.glob("barrier-*"))[-1]
    assert len(list(workers_barrier.iterdir())) == 2  # both workers trained a trial

    best = optuna.load_study(study_name="shared", storage=storage).best_trial
    written = yaml.safe_load((out / "shared.yaml").read_text())
    assert written["tuning"]["trials"] == TRIALS
    assert written["params"] == {"decoy": best.params["decoy"]}
