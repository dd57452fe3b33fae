"""Time the ACDC test scoring, and measure the Dice ceiling the patch-size round trip imposes.

Two questions about the published ACDC evaluation (40 test volumes, RV/MYO/LV, medpy Dice, Jaccard,
HD95 and ASD per volume and class):

1. How long does scoring take?  ``bench.metrics.score_case`` on every test volume, single process and
   with a process pool, against plain medpy calls (``dc``, ``jc``, ``hd95``, ``asd`` per class, which
   recompute the distance transforms for each metric).  The prediction is the ground truth sent
   through the 128x128 round trip (an "oracle" with realistic one-voxel boundary errors), so every
   class is non-empty and every surface distance is computed.  Target: <= 5 s on 2 cores.
2. What does a perfect model score?  The ground truth resized to the patch (nearest), argmax'd and
   resized back (``bench.evaluation.predict_case``), per class, at 256 and 128, next to the same round
   trip done as SSL4MIS does it (``scipy.ndimage.zoom(order=0)`` both ways, ``code/val_2D.py``).

    python benchmarks/acdc_scoring.py                          # $BENCH_DATA_ROOT/acdc
    python benchmarks/acdc_scoring.py --data-root ../shared/data/acdc --processes 1,2 --medpy
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from medpy.metric import binary as medpy_binary
from scipy.ndimage import zoom

from bench.data.acdc import CLASS_NAMES, ACDCDataset
from bench.data.case import Case
from bench.evaluation import predict_case
from bench.metrics import score_case

NUM_CLASSES = len(CLASS_NAMES) + 1
TARGET_SECONDS = 5.0
PERTURBING_PATCH = 128


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_root = Path(os.environ["BENCH_DATA_ROOT"]) / "acdc" if os.environ.get("BENCH_DATA_ROOT") else None
    parser.add_argument("--data-root", type=Path, default=default_root, help="ACDC folder (default: $BENCH_DATA_ROOT/acdc)")
    parser.add_argument("--processes", default="1,2", help="process counts to time (default: 1,2)")
    parser.add_argument("--patches", default="256,128", help="patch sizes for the oracle round trip (default: 256,128)")
    parser.add_argument("--medpy", action="store_true", help="also time plain medpy calls (slow: ~10-30 s)")
    return parser.parse_args(argv)


def one_hot_oracle(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels.long(), NUM_CLASSES).permute(0, 3, 1, 2).float()


def oracle_prediction(case: Case, patch: int) -> np.ndarray:
    return predict_case(one_hot_oracle, case, (patch, patch), 16, torch.device("cpu"))


def ssl4mis_round_trip(label: np.ndarray, patch: int) -> np.ndarray:
    """SSL4MIS ``test_single_volume``'s resizing, applied to the ground truth instead of a network output."""
    out = np.zeros_like(label)
    for index, plane in enumerate(label):
        height, width = plane.shape
        small = zoom(plane, (patch / height, patch / width), order=0)
        out[index] = zoom(small, (height / patch, width / patch), order=0)
    return out


def score_pair(pair: tuple[np.ndarray, np.ndarray]) -> dict:
    prediction, truth = pair
    return score_case(prediction, truth, NUM_CLASSES, None, "ssl4mis")


def medpy_reference(pair: tuple[np.ndarray, np.ndarray]) -> None:
    prediction, truth = pair
    for cls in range(1, NUM_CLASSES):
        pred_mask, true_mask = prediction == cls, truth == cls
        medpy_binary.dc(pred_mask, true_mask)
        medpy_binary.jc(pred_mask, true_mask)
        medpy_binary.hd95(pred_mask, true_mask)
        medpy_binary.asd(pred_mask, true_mask)


def time_scoring(pairs: list, processes: int) -> tuple[float, float]:
    """(seconds including pool start-up, seconds of scoring alone)."""
    if processes == 1:
        started = time.perf_counter()
        for pair in pairs:
            score_pair(pair)
        elapsed = time.perf_counter() - started
        return elapsed, elapsed
    started = time.perf_counter()
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(int, range(processes)))  # start the workers
        warm = time.perf_counter()
        list(pool.map(score_pair, pairs, chunksize=max(1, len(pairs) // (4 * processes))))
        done = time.perf_counter()
    return done - started, done - warm


def class_dice(predictions: list[np.ndarray], cases: list[Case]) -> list[float]:
    scores = [score_case(pred, case.label, NUM_CLASSES, None, "ssl4mis") for pred, case in zip(predictions, cases)]
    return [float(np.mean([s[cls].dice for s in scores])) for cls in range(1, NUM_CLASSES)]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.data_root is None:
        raise SystemExit("no ACDC folder: pass --data-root or set BENCH_DATA_ROOT")
    torch.set_num_threads(1)
    cases = list(ACDCDataset(args.data_root).eval_cases("test"))
    pairs = [(oracle_prediction(case, PERTURBING_PATCH), case.label) for case in cases]
    voxels = sum(case.label.size for case in cases)
    print(f"ACDC test split: {len(cases)} volumes, {voxels / 1e6:.1f} M voxels, {os.cpu_count()} CPUs; "
          f"prediction = ground truth through the {PERTURBING_PATCH}x{PERTURBING_PATCH} round trip\n")

    print(f"{'scoring (Dice+Jaccard+HD95+ASD, 3 classes)':<46} {'total s':>8} {'scoring s':>10} {'volumes/s':>10}  target")
    for processes in (int(text) for text in args.processes.split(",")):
        total, scoring = time_scoring(pairs, processes)
        verdict = "ok" if total <= TARGET_SECONDS else "over"
        label = f"bench.metrics, {processes} process{'es' if processes > 1 else ''}"
        print(f"{label:<46} {total:>8.2f} {scoring:>10.2f} {len(pairs) / total:>10.1f}  <= {TARGET_SECONDS:.0f} s {verdict}")
    if args.medpy:
        started = time.perf_counter()
        for pair in pairs:
            medpy_reference(pair)
        total = time.perf_counter() - started
        print(f"{'medpy dc/jc/hd95/asd, 1 process':<46} {total:>8.2f} {total:>10.2f} {len(pairs) / total:>10.1f}  reference")

    print(f"\n{'oracle Dice (GT -> patch -> back)':<40} {'RV':>7} {'MYO':>7} {'LV':>7} {'mean':>7}")
    for patch in (int(text) for text in args.patches.split(",")):
        for name, predictions in (
            ("bench (torch nearest-exact)", [oracle_prediction(case, patch) for case in cases]),
            ("SSL4MIS (scipy zoom order 0)", [ssl4mis_round_trip(case.label, patch) for case in cases]),
        ):
            dice = class_dice(predictions, cases)
            print(f"{f'{patch}x{patch} {name}':<40} {dice[0]:>7.4f} {dice[1]:>7.4f} {dice[2]:>7.4f} {np.mean(dice):>7.4f}")


if __name__ == "__main__":
    main()
