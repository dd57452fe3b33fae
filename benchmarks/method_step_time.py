"""Time one training step of every registered method at the paper's batch composition.

The question it answers: how much more does a semi-supervised method cost per iteration than the
supervised baseline, when both see the SSL4MIS batch (12 labeled + 12 unlabeled images) and the full
1.8M-parameter U-Net?  Sweep durations scale with it, so it is the number to check before launching
``bench run --budget paper``.

Each method is built exactly as ``bench run`` builds it (``bench.execute.build_method`` and
``build_streams`` for a ``RunSpec`` on the synthetic dataset), then ``bench.training.time_steps`` runs
one warm-up step and ``--steps`` timed steps: data loading and augmentation, forward, backward,
optimizer step and ``on_step_end`` (EMA updates) included.  Methods are built for a one-iteration
schedule so that the timed steps fall after any phase that ends at a fraction of training (BCP's
pre-training); switches at an absolute step (Mean Teacher's start at step 1000) change the loss
weight there, not the work done.  The default patch is 128 so that a 2-core
CPU finishes in a few minutes; pass ``--patch 256`` on a GPU for the paper's input size.

    python benchmarks/method_step_time.py                       # classic methods, 5 steps, 128x128
    python benchmarks/method_step_time.py --methods urpc,mc-net-plus --steps 10
    python benchmarks/method_step_time.py --all --patch 256     # SAM methods too (needs their checkpoints)
    python benchmarks/method_step_time.py --all --flops --steps 1 --labeled-batch 8 --unlabeled-batch 8

``--flops`` counts instead of timing (``torch.utils.flop_counter``: 2 x multiply-adds of convolutions,
matrix products and attention, forward and backward, per training step): the device-independent size
of a sweep, to set against an accelerator's sustained rate before booking time on it.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.flop_counter import FlopCounterMode

from bench.execute import budget_for, build_method, build_streams, dataset_for, labeled_case_ids
from bench.networks import count_parameters
from bench.registry import METHODS
from bench.runs import RunSpec
from bench.sweep import STEADY_STATE_SCHEDULE
from bench.training import time_steps

REFERENCE = "supervised"
SAM_FAMILY = "sam"
"""Left out unless ``--all``: SAM methods need checkpoints and a ViT per step.  Classic methods carry
several family names (baseline, consistency, co-training), so the test is on this one."""
PAPER_LABELED_BATCH = 12
PAPER_UNLABELED_BATCH = 12


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=None,
                        help="comma-separated method names (default: every registered method that trains, SAM "
                             "methods excepted)")
    parser.add_argument("--all", action="store_true", help="include the SAM family")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per method, after one warm-up (default: 5)")
    parser.add_argument("--patch", type=int, default=128, help="square patch size in pixels (default: 128; paper: 256)")
    parser.add_argument("--labeled-batch", type=int, default=PAPER_LABELED_BATCH)
    parser.add_argument("--unlabeled-batch", type=int, default=PAPER_UNLABELED_BATCH)
    parser.add_argument("--labels", default="4", help="labeled synthetic cases (default: 4)")
    parser.add_argument("--precision", choices=("no", "fp16", "bf16"), default="no")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flops", action="store_true",
                        help="report GFLOP per training step (forward + backward) instead of milliseconds")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: need at least one timed step")
    return args


def selected_methods(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Methods to time, and a note for each registered one left out (and why)."""
    METHODS.discover()  # fills load_errors
    notes = [f"{name}: not importable ({error})" for name, error in sorted(METHODS.load_errors.items())]
    if args.methods:
        names = [name.strip() for name in args.methods.split(",") if name.strip()]
        for name in names:
            METHODS.get(name)  # unknown names fail here, with a suggestion
    else:
        names = []
        for name, method_cls in METHODS.items():
            if not method_cls.trains:
                notes.append(f"{name}: evaluation only")
            elif method_cls.family == SAM_FAMILY and not args.all:
                notes.append(f"{name}: family {method_cls.family!r} (pass --all)")
            else:
                names.append(name)
    # The reference goes first, so every ratio has its denominator.
    return [REFERENCE] + [name for name in names if name != REFERENCE], notes


def time_method(name: str, args: argparse.Namespace) -> tuple[float, int, str]:
    """Seconds (or, with ``--flops``, FLOPs) per step, trainable parameter count and images per step
    (labeled+unlabeled) of one method, built as ``bench run`` builds it."""
    method_cls = METHODS.get(name)
    labels = "all" if method_cls.trains_on_all_labels else args.labels
    # A one-iteration schedule puts every timed step past the phase switches that sit at a fraction of
    # training (BCP's supervised pre-training is its first quarter), so each method is timed in the
    # phase it spends most of the paper budget in.
    # The batch goes through the run's own resolution (``--batch L+U``), so the supervised baselines
    # fill the whole batch with labeled images exactly as they do in ``bench run``.
    spec = RunSpec(dataset="synthetic", method=name, labels=labels, seed=args.seed, budget="paper",
                   iterations=STEADY_STATE_SCHEDULE, batch=f"{args.labeled_batch}+{args.unlabeled_batch}",
                   precision=args.precision)
    adapter = dataset_for(spec)
    budget = dataclasses.replace(budget_for(spec, adapter, method_cls), patch_size=args.patch)
    set_seed(spec.seed)
    method = build_method(spec, adapter, method_cls, budget)
    labeled, unlabeled = build_streams(adapter, labeled_case_ids(spec, adapter, method_cls), method_cls, budget, spec.seed)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=spec.precision)
    method.train()
    if args.flops:
        # Counting slows every operation down, so the count replaces the timing rather than joining it.
        with FlopCounterMode(display=False) as counter:
            time_steps(method, accelerator, labeled, unlabeled, args.steps, budget.iterations)
        return counter.get_total_flops() / (args.steps + 1), count_parameters(method), _images(method_cls, budget)
    seconds = time_steps(method, accelerator, labeled, unlabeled, args.steps, budget.iterations)
    return seconds, count_parameters(method), _images(method_cls, budget)


def _images(method_cls: type, budget) -> str:
    return f"{budget.labeled_batch}+{budget.unlabeled_batch if method_cls.unlabeled_views else 0}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names, notes = selected_methods(args)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.labeled_batch} labeled + {args.unlabeled_batch} unlabeled images (the supervised baselines: "
          f"{args.labeled_batch + args.unlabeled_batch} labeled), {args.patch}x{args.patch}, "
          f"{args.steps} {'counted' if args.flops else 'timed'} steps after 1 warm-up, {device}", flush=True)
    unit, scale = ("GFLOP/step", 1e-9) if args.flops else ("ms/step", 1000.0)

    rows: list[tuple[str, float, int, str]] = []
    failures: list[str] = []
    started = time.perf_counter()
    for name in names:
        try:
            cost, parameters, images = time_method(name, args)
        except KeyboardInterrupt:  # Ctrl-C still prints the table of the methods timed so far
            notes.append(f"{name} and after: interrupted")
            break
        except Exception as error:  # one broken method must not hide the others' timings
            failures.append(f"{name}: {type(error).__name__}: {error}")
            continue
        rows.append((name, cost, parameters, images))
        print(f"  {name}: {scale * cost:.0f} {unit}", file=sys.stderr, flush=True)

    reference = {name: cost for name, cost, _, _ in rows}.get(REFERENCE)
    width = max([len("method")] + [len(name) for name, _, _, _ in rows])
    print(f"\n{'method':<{width}}  {'images':>7}  {unit:>10}  {'x ' + REFERENCE:>13}  {'trainable (M)':>13}")
    for name, cost, parameters, images in rows:
        ratio = f"{cost / reference:.2f}" if reference else "-"
        print(f"{name:<{width}}  {images:>7}  {scale * cost:>10.0f}  {ratio:>13}  {parameters / 1e6:>13.2f}")
    print(f"\n{len(rows)} method(s) in {time.perf_counter() - started:.0f} s")
    for note in notes:
        print(f"skipped {note}")
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
