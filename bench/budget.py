"""Training budgets: the published protocol (``paper``), a recorded CPU reduction (``quick``), and
``smoke`` for tests.  The resolved budget is part of every run key and every result."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Budget:
    name: str
    iterations: int
    patch_size: int
    labeled_batch: int
    unlabeled_batch: int
    validate_every: int
    network_widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    eval_batch: int = 16
    eval_cases: int | None = None
    """Validation and test score only the first ``eval_cases`` cases of each split (``None``: all)."""
    eval_slices: int | None = None
    """... and only the middle ``eval_slices`` slices of each volume (``None``: all): smoke evaluation
    exercises the code; its numbers are no result (the leaderboard says so)."""

    @property
    def reduced_evaluation(self) -> bool:
        return self.eval_cases is not None or self.eval_slices is not None


BUDGETS: dict[str, Budget] = {
    # SSL4MIS ACDC protocol: 30k iterations, 256x256, 12 labeled + 12 unlabeled, validation every 200.
    "paper": Budget("paper", iterations=30_000, patch_size=256, labeled_batch=12, unlabeled_batch=12, validate_every=200),
    # A 2-core CPU reduction: 1/30 of the iterations at a quarter of the pixels, same network.
    "quick": Budget("quick", iterations=1_000, patch_size=128, labeled_batch=8, unlabeled_batch=8, validate_every=100),
    "smoke": Budget(
        "smoke", iterations=4, patch_size=32, labeled_batch=2, unlabeled_batch=2, validate_every=2,
        network_widths=(4, 8, 16, 32), eval_batch=8, eval_cases=2, eval_slices=2,
    ),
}


def resolve_budget(
    name: str,
    dataset_overrides: dict[str, dict[str, Any]],
    method_overrides: dict[str, dict[str, Any]],
    iterations: int | None = None,
    batch: str | None = None,
) -> Budget:
    """Global budget, then the dataset's view of it, then the method's (e.g. BCP's extra pre-training),
    then ``--iters``.  Later wins."""
    if name not in BUDGETS:
        raise ValueError(f"--budget {name!r}: expected one of {sorted(BUDGETS)}")
    budget = BUDGETS[name]
    for overrides in (dataset_overrides.get(name, {}), method_overrides.get(name, {})):
        budget = dataclasses.replace(budget, **overrides)
    if iterations is not None:
        if iterations <= 0:
            raise ValueError(f"--iters {iterations}: must be positive")
        budget = dataclasses.replace(budget, iterations=iterations, validate_every=min(budget.validate_every, iterations))
    if batch is not None:
        labeled, sep, unlabeled = batch.partition("+")
        if not (sep and labeled.isdigit() and unlabeled.isdigit() and int(labeled) > 0 and int(unlabeled) > 0):
            raise ValueError(f"--batch {batch!r}: expected LABELED+UNLABELED, e.g. 12+12")
        budget = dataclasses.replace(budget, labeled_batch=int(labeled), unlabeled_batch=int(unlabeled))
    return budget
