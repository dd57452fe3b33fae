"""The dataset adapter contract: training slices for the two streams, whole cases for evaluation."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from bench.data.case import Case


@dataclass
class TrainingSlice:
    """One 2D training sample; ``case_id`` ties it to the patient whose label budget it counts against;
    ``source`` is the file it was read from (as :attr:`Case.source`), kept through the slice cache."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    domain: str = "default"
    source: str | None = None


class DatasetAdapter:
    """Base class of dataset adapters.

    ``train_case_ids`` is ordered: the ``first`` label selection (the SSL4MIS convention) takes the
    first N cases in this order.  ``budget_overrides`` lets a dataset say what ``quick`` and ``smoke``
    mean for it (e.g. a smaller patch for small images); the resolved budget is recorded in results.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    class_names: ClassVar[tuple[str, ...]] = ()
    in_channels: ClassVar[int] = 1
    default_labels: ClassVar[tuple[str, ...]] = ("1",)
    default_label_selection: ClassVar[str] = "random"
    budget_overrides: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, data_root: Path | None = None, **options: Any) -> None:
        self.data_root = data_root
        self.options = options

    @property
    def num_classes(self) -> int:
        return len(self.class_names) + 1

    def train_case_ids(self) -> list[str]:
        raise NotImplementedError  # abstract

    def train_slices(self, patch_size: tuple[int, int] | None = None) -> list[TrainingSlice]:
        """Training slices; with ``patch_size`` an adapter may return them already resized (from its
        cache), which makes the training streams' own resize a no-op."""
        raise NotImplementedError  # abstract

    def eval_cases(self, split: str) -> Iterator[Case]:
        """Cases of ``val`` or ``test``, loaded lazily so a large test set never sits in memory whole."""
        raise NotImplementedError  # abstract

    def case_domains(self) -> dict[str, str]:
        """Training case id -> domain, for per-domain reporting and ``--labeled-domain``."""
        return {item.case_id: item.domain for item in self.train_slices()}

    def protocol(self) -> dict[str, Any]:
        """What a reader needs to know to reproduce the data side of a result."""
        return {"dataset": self.name, "data_root": str(self.data_root) if self.data_root else None}
