"""Exact resume under SIGKILL: for each method, an uninterrupted run, and a run killed with SIGKILL once its
first checkpoint is on disk and then started again; prints whether their per-case results, training logs
and best weights are byte for byte the same.

    python benchmarks/resume_probe.py [--methods mean-teacher,ua-mt,unimatch,bcp,cpc-sam] [--budget quick]

SAM methods use the tiny SAM with random weights.  Each run is a separate ``bench run`` process with
one torch thread; the killed one is watched from here and killed at the first checkpoint whose step is
past ``--kill-after`` (default: the first).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SAM_OPTIONS = ["--sam-model", "tiny", "--sam-random-init"]
COMPARED = ("per_case.csv", "train_log.csv", "best.pt")


def bench_command(method: str, budget: str, out: Path, sam: bool) -> list[str]:
    return [sys.executable, "-m", "bench.cli", "run", "--methods", method, "--labels", "1", "--budget", budget,
            "--no-progress", "--no-estimate", "--out", str(out), *(SAM_OPTIONS if sam else [])]


def killed_at_checkpoint(command: list[str], checkpoint: Path, kill_after: int) -> int | None:
    """Starts ``command`` and SIGKILLs it once ``checkpoint`` holds a step >= ``kill_after``; the step, or
    None if the run ended first."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while process.poll() is None:
            if checkpoint.exists():
                try:
                    step = torch.load(checkpoint, weights_only=True)["step"]
                except Exception:  # being renamed into place
                    step = 0
                if step >= kill_after:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    return step
            time.sleep(0.05)
        return None
    finally:
        if process.poll() is None:
            process.kill()


def probe(method: str, budget: str, scratch: Path, kill_after: int) -> dict:
    sam = method in {"cpc-sam", "samed", "interactmatch", "knowsam", "synfoc", "synfoc-unet", "semisam"}
    clean_out, killed_out = scratch / method / "clean", scratch / method / "killed"
    started = time.perf_counter()
    subprocess.run(bench_command(method, budget, clean_out, sam), check=True, capture_output=True)
    clean_seconds = time.perf_counter() - started
    folder = Path("synthetic") / budget / method / "1" / "seed0"
    killed_step = killed_at_checkpoint(bench_command(method, budget, killed_out, sam),
                                       killed_out / folder / "checkpoint.pt", kill_after)
    subprocess.run(bench_command(method, budget, killed_out, sam), check=True, capture_output=True)
    same = {name: (clean_out / folder / name).read_bytes() == (killed_out / folder / name).read_bytes()
            for name in COMPARED}
    dice = float(__import__("json").loads((clean_out / folder / "summary.json").read_text())["metrics"]["dice"])
    return {"method": method, "killed at step": killed_step, "clean Dice": dice, "clean run s": clean_seconds, **same}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="mean-teacher,ua-mt,unimatch,bcp,cpc-sam")
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--kill-after", type=int, default=1, help="kill at the first checkpoint at or past this step")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    scratch = Path(tempfile.mkdtemp(prefix="resume-probe-"))
    rows = []
    try:
        for method in args.methods.split(","):
            rows.append(probe(method, args.budget, scratch, args.kill_after))
            row = rows[-1]
            print(f"{row['method']:<14} killed at {row['killed at step']!s:>5}  clean Dice {row['clean Dice']:.4f}  "
                  + "  ".join(f"{name} {'same' if row[name] else 'DIFFERENT'}" for name in COMPARED)
                  + f"  ({row['clean run s']:.0f} s a run)", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if all(row[name] and row["killed at step"] for row in rows for name in COMPARED) else 1


if __name__ == "__main__":
    raise SystemExit(main())
