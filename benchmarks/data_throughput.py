"""Training samples per second delivered by the harness's streams (augmentation included), from the
dataset's cache, with the default number of loader workers (0: the 2-core CPU trains in the main
process).  Prints a table.

    BENCH_DATA_ROOT=../shared/data python benchmarks/data_throughput.py --dataset acdc --patch 128 --batch 8
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench.data.streams import SliceViews, endless_batches
from bench.registry import DATASETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    root = Path(os.environ["BENCH_DATA_ROOT"]) / args.dataset if os.environ.get("BENCH_DATA_ROOT") else None
    adapter = DATASETS.get(args.dataset)(root if args.dataset != "synthetic" else None)
    patch = (args.patch, args.patch)
    started = time.perf_counter()
    slices = adapter.train_slices(patch_size=patch)
    load_seconds = time.perf_counter() - started
    print(f"{args.dataset}: {len(slices)} training slices at {args.patch}x{args.patch}, loaded in {load_seconds:.1f} s")
    print(f"{'views':<22}{'samples/s':>12}")
    for views in (("weak",), ("weak", "strong"), ("weak", "strong", "strong2")):
        stream = endless_batches(SliceViews(slices, patch, views, True, seed=0), args.batch, seed=0, workers=args.workers)
        next(stream)
        started = time.perf_counter()
        for _ in range(args.batches):
            next(stream)
        rate = args.batches * args.batch / (time.perf_counter() - started)
        print(f"{'+'.join(views):<22}{rate:>12.0f}")


if __name__ == "__main__":
    main()
