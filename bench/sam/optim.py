"""SAMed's optimiser and learning-rate schedule, which CPC-SAM (§3 "the same warmup and exponential
learning rate decay strategy as [29]") and InteractMatch (§4.2) reuse with their own rates."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from bench.method import OptimizerSpec

ADAMW_BETAS = (0.9, 0.999)
"""SAMed ``trainer.py``: ``optim.AdamW(..., betas=(0.9, 0.999), weight_decay=0.1)``."""
POLY_POWER = 0.9
"""SAMed ``trainer.py``: ``base_lr * (1 - shift_iter / max_iterations) ** 0.9`` (the papers call it
exponential decay; the code decays polynomially)."""


def warmup_poly_schedule(warmup_steps: int, total_steps: int, power: float = POLY_POWER) -> Callable[[float], float]:
    """The multiplier of the base learning rate as a function of training progress in [0, 1]:
    linear warm-up ``(step + 1) / warmup`` for the first ``warmup_steps`` steps, then
    ``(1 - (step - warmup) / total) ** power``.  As in SAMed's code the decay divides by the total
    number of steps, not by the steps left after warm-up, so it ends slightly above zero."""
    if warmup_steps < 0 or total_steps <= 0:
        raise ValueError(f"warm-up {warmup_steps} and total {total_steps} steps: need warm-up >= 0 and total > 0")

    def multiplier(fraction: float) -> float:
        step = fraction * total_steps
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, 1.0 - (step - warmup_steps) / total_steps) ** power

    return multiplier


def sam_optimizer(
    module: nn.Module, lr: float, weight_decay: float, warmup_steps: int, total_steps: int
) -> OptimizerSpec:
    """AdamW over the trainable parameters with SAMed's warm-up + polynomial decay."""
    trainable = [parameter for parameter in module.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, betas=ADAMW_BETAS, weight_decay=weight_decay)
    return OptimizerSpec(optimizer, warmup_poly_schedule(warmup_steps, total_steps))
