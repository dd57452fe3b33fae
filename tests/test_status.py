"""``bench status`` reads a sweep's state from its run folders: finished (summary), running (a held lock,
seen without taking it), failed (failure.json), pending (the rest, with how far it got)."""
from __future__ import annotations

import fcntl
import json
import re
import shutil

from bench.cli import main

SMOKE = ["--budget", "smoke", "--no-progress", "--no-estimate", "--log-with", "none"]


def test_status_of_finished_running_failed_and_interrupted_runs(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", "--methods", "supervised", "--labels", "1", "--iters", "6", *SMOKE, "--out", str(out)]) == 0
    finished = out / "synthetic/smoke/supervised/1/seed0"
    best = json.loads((finished / "summary.json").read_text())["training"]["best_validation_dice"]
    copies = {}
    for seed in (1, 2, 3):
        copies[seed] = finished.with_name(f"seed{seed}")
        shutil.copytree(finished, copies[seed])
        (copies[seed] / "summary.json").unlink()
    log_lines = (finished / "train_log.csv").read_text().splitlines()
    (copies[3] / "train_log.csv").write_text("\n".join(log_lines[:5]) + "\n")  # stopped after step 4
    (copies[2] / "failure.json").write_text(json.dumps({"step": 3, "reason": "broken"}))
    capsys.readouterr()

    with open(copies[1] / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a run being trained holds it
        assert main(["status", str(out)]) == 1
        table = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:] if line.startswith("synthetic/")}
    prefix = "synthetic/smoke/supervised/1/"
    assert rows[prefix + "seed0"][1:4] == ["finished", "6/6", f"{best:.4f}"]
    assert rows[prefix + "seed1"][1:3] == ["running", "6/6"]
    assert rows[prefix + "seed2"][1] == "failed"
    assert rows[prefix + "seed3"][1:3] == ["pending", "4/6"]
    assert "4 runs: 1 finished, 1 running, 1 pending, 1 failed" in table

    # The lock released (its trainer gone), the run waits for the next `bench run`; no failure: exit 0.
    shutil.rmtree(copies[2])
    assert main(["status", str(out)]) == 0
    assert re.search(r"seed1\s+pending", capsys.readouterr().out)
