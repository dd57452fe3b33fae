"""Harness overhead: a ``supervised`` training step through ``bench.training.train`` versus a bare
PyTorch loop doing the same computation on the same batches.  Prints a table; target ratio <= 1.05.

    python benchmarks/harness_overhead.py --steps 30 --patch 128 --batch 12
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from bench import TaskSpec, ce_dice_loss
from bench.registry import METHODS
from bench.training import BatchStream, train


def fixed_batches(batch_size: int, patch: int, count: int) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    return [{"weak": torch.rand(batch_size, 1, patch, patch, generator=generator),
             "label": torch.randint(0, 4, (batch_size, patch, patch), generator=generator)} for _ in range(count)]


def bare_loop(batches: list[dict], task: TaskSpec) -> float:
    set_seed(0)
    method = METHODS.get("supervised")(METHODS.get("supervised").Params(), task)
    network = method.network
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (1 - step / len(batches)) ** 0.9)
    network.train()
    started = time.perf_counter()
    for batch in batches:
        loss = ce_dice_loss(network(batch["weak"]), batch["label"])
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - started) / len(batches)


def harness_loop(batches: list[dict], task: TaskSpec) -> float:
    set_seed(0)
    method = METHODS.get("supervised")(METHODS.get("supervised").Params(), task)
    stream = BatchStream(lambda step: iter(batches[step:]))
    with tempfile.TemporaryDirectory() as scratch:
        result = train(method, Accelerator(cpu=True), stream, None, len(batches), validate_every=10**9,
                       validate=lambda model: 0.0, log_path=Path(scratch) / "log.csv", show_progress=False)
    # The final step validates (a no-op here); everything else is the harness's per-step work.
    return result.seconds / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    task = TaskSpec(in_channels=1, num_classes=4, patch_size=(args.patch, args.patch), total_steps=args.steps)
    batches = fixed_batches(args.batch, args.patch, args.steps)
    bare_loop(batches[:3], task)  # warm-up
    bare, harness = [], []
    for _ in range(args.repeats):
        bare.append(bare_loop(batches, task))
        harness.append(harness_loop(batches, task))
    best_bare, best_harness = min(bare), min(harness)
    print(f"supervised step, batch {args.batch}, {args.patch}x{args.patch}, {torch.get_num_threads()} threads, "
          f"best of {args.repeats} x {args.steps} steps")
    print(f"{'loop':<10} {'ms/step':>9}")
    print(f"{'bare':<10} {best_bare * 1000:>9.1f}")
    print(f"{'harness':<10} {best_harness * 1000:>9.1f}")
    print(f"ratio harness/bare: {best_harness / best_bare:.3f}")


if __name__ == "__main__":
    main()
