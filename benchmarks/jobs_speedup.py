"""``--jobs 2`` versus ``--jobs 1`` wall time for a 4-run smoke-sized sweep (prints a table).

    python benchmarks/jobs_speedup.py --iters 40
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time


def sweep_seconds(jobs: int, iters: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "bench.cli", "run", "--methods", "supervised", "--labels", "1,2", "--seeds", "2",
                   "--budget", "smoke", "--iters", str(iters), "--jobs", str(jobs), "--no-progress", "--no-estimate",
                   "--out", out]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=40)
    args = parser.parse_args()
    one = sweep_seconds(1, args.iters)
    two = sweep_seconds(2, args.iters)
    print(f"4 runs (supervised x labels 1,2 x 2 seeds), smoke budget, {args.iters} iterations each")
    print(f"{'jobs':<6}{'wall s':>8}")
    print(f"{1:<6}{one:>8.1f}")
    print(f"{2:<6}{two:>8.1f}")
    print(f"speed-up: {one / two:.2f}x")


if __name__ == "__main__":
    main()
