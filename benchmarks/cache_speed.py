"""Time the Arrow training-slice cache on ACDC: first build, re-open, and a cached epoch.

A run starts by decoding every training slice (1312 gzip'd h5 files for ACDC).  The cache stores
them decoded, and resized to the patch, as one Arrow file per (dataset, patch size, reader version,
source fingerprint); this script measures, for each patch size:

- build: decode + resize + write (what the first run pays),
- re-open: a fresh adapter's ``train_slices`` served from the cache (what every later run pays),
- cached epoch: slices/s of reading every cached slice into arrays (``bench.data.cache.read_slices``)
  and touching every pixel; target >= 2,000 slices/s,
- and, for comparison, decoding the h5 files alone.

The cache goes to a fresh temporary folder (deleted afterwards) so the build is really measured;
``--cache-dir`` keeps it somewhere instead.

    python benchmarks/cache_speed.py                              # $BENCH_DATA_ROOT/acdc, native,256,128
    python benchmarks/cache_speed.py --patches 256 --cache-dir ~/.cache/bench
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

from bench.data.acdc import ACDCDataset
from bench.data.cache import ARROW_FILE, read_slices

TARGET_SLICES_PER_SECOND = 2000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_root = Path(os.environ["BENCH_DATA_ROOT"]) / "acdc" if os.environ.get("BENCH_DATA_ROOT") else None
    parser.add_argument("--data-root", type=Path, default=default_root, help="ACDC folder (default: $BENCH_DATA_ROOT/acdc)")
    parser.add_argument("--patches", default="native,256,128", help="patch sizes, 'native' = no resize (default: native,256,128)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="keep the cache here (default: a temporary folder)")
    parser.add_argument("--epochs", type=int, default=3, help="cached epochs to time; the best is reported (default: 3)")
    return parser.parse_args(argv)


def touch_every_pixel(slices: list) -> float:
    return float(sum(float(item.image.sum()) + int(item.label.sum()) for item in slices))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.data_root is None:
        raise SystemExit("no ACDC folder: pass --data-root or set BENCH_DATA_ROOT")
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="bench-cache-speed-"))
    os.environ["BENCH_CACHE_DIR"] = str(cache_dir)
    try:
        adapter = ACDCDataset(args.data_root)
        started = time.perf_counter()
        decoded = list(adapter.decode_training_slices())
        decode_seconds = time.perf_counter() - started
        print(f"ACDC training slices: {len(decoded)}; decoding the h5 files alone: {decode_seconds:.2f} s "
              f"({len(decoded) / decode_seconds:,.0f} slices/s); cache in {cache_dir}\n")
        del decoded
        print(f"{'patch':>8} {'build s':>8} {'re-open s':>10} {'epoch s':>8} {'slices/s':>10} {'MB on disk':>11}  target")
        for text in args.patches.split(","):
            patch = None if text.strip() == "native" else int(text)
            started = time.perf_counter()
            ACDCDataset(args.data_root).train_slices(patch)
            build_seconds = time.perf_counter() - started
            started = time.perf_counter()
            slices = ACDCDataset(args.data_root).train_slices(patch)
            reopen_seconds = time.perf_counter() - started
            tag = f"{patch}x{patch}" if patch else "native"
            (arrow_file,) = (cache_dir / "acdc").glob(f"{tag}-*/{ARROW_FILE}")
            epoch_seconds = float("inf")
            for _ in range(args.epochs):
                started = time.perf_counter()
                touch_every_pixel(read_slices(arrow_file))
                epoch_seconds = min(epoch_seconds, time.perf_counter() - started)
            rate = len(slices) / epoch_seconds
            verdict = "ok" if rate >= TARGET_SLICES_PER_SECOND else "under"
            size_mb = arrow_file.stat().st_size / 2**20
            print(f"{tag:>8} {build_seconds:>8.2f} {reopen_seconds:>10.2f} {epoch_seconds:>8.3f} {rate:>10,.0f} "
                  f"{size_mb:>11.0f}  >= {TARGET_SLICES_PER_SECOND:,} {verdict}")
    finally:
        if args.cache_dir is None:
            shutil.rmtree(cache_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
