"""Seconds per SAMed training step (forward, backward, AdamW step) and per automatic-segmentation
batch, for each SAM backbone, with the trainable-parameter count.

    python benchmarks/sam_step_time.py                                # tiny and lite-medsam, batch 2
    python benchmarks/sam_step_time.py --models vit_b --random-init --vit-image-size 512 --batch 12
    python benchmarks/sam_step_time.py --gradient-checkpointing       # the memory / time trade-off

ViT backbones need ``--sam-checkpoint`` or ``--random-init`` (timing does not depend on the weights).
Prints a table; nothing is written.
"""
from __future__ import annotations

import argparse
import time

import torch

from bench import Batch, Progress, TaskSpec, count_trainable
from methods.samed import SAMed, SAMedParams


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,lite-medsam", help="comma-separated sam_model values")
    parser.add_argument("--batch", type=int, default=2, help="labeled images per step")
    parser.add_argument("--patch", type=int, default=128, help="patch size of the harness's images")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--vit-image-size", type=int, default=512, help="SAM ViT input size (SAMed: 512)")
    parser.add_argument("--sam-checkpoint", default=None)
    parser.add_argument("--random-init", action="store_true", help="random weights (tiny always is)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    return parser.parse_args()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_model(model_name: str, args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    options = {"sam_model": model_name}
    if model_name == "tiny" or args.random_init:
        options["sam_random_init"] = True
    elif args.sam_checkpoint:
        options["sam_checkpoint"] = args.sam_checkpoint
    task = TaskSpec(in_channels=1, num_classes=4, patch_size=(args.patch, args.patch), total_steps=1000, options=options)
    method = SAMed(SAMedParams(vit_image_size=args.vit_image_size), task)
    if args.gradient_checkpointing:
        from bench.sam.lora import checkpoint_blocks

        checkpoint_blocks(method.sam.image_encoder)
    method.to(device)
    (spec,) = method.optimizers()
    batch = Batch(labeled_images=torch.rand(args.batch, 1, args.patch, args.patch, device=device),
                  labels=torch.randint(0, 4, (args.batch, args.patch, args.patch), device=device))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    durations = []
    method.train()
    for step in range(args.steps + 1):
        synchronize(device)
        started = time.perf_counter()
        with autocast:
            loss = method.training_step(batch, Progress(step, 1000)).loss
        loss.backward()
        spec.optimizer.step()
        spec.optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step:
            durations.append(time.perf_counter() - started)
    method.eval()
    with torch.no_grad(), autocast:
        synchronize(device)
        started = time.perf_counter()
        method.predict(batch.labeled_images)
        synchronize(device)
        predict_seconds = time.perf_counter() - started
    return {
        "model": model_name,
        "input px": method.sam.image_size,
        "trainable": count_trainable(method),
        "encoder trainable": count_trainable(method.sam.image_encoder),
        "s/step": sum(durations) / len(durations),
        "s/predict": predict_seconds,
        "peak GPU MB": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan"),
    }


def main() -> None:
    args = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = [time_model(name.strip(), args, device) for name in args.models.split(",") if name.strip()]
    print(f"\nSAMed step time on {device} (batch {args.batch}, patch {args.patch}, {args.precision}"
          f"{', gradient checkpointing' if args.gradient_checkpointing else ''}):")
    header = list(rows[0])
    print(" | ".join(f"{column:>17}" for column in header))
    for row in rows:
        print(" | ".join(f"{value:>17,.3f}" if isinstance(value, float) else f"{value:>17,}" if isinstance(value, int)
                         else f"{value:>17}" for value in row.values()))


if __name__ == "__main__":
    main()
