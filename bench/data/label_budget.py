"""Label budgets (``3``, ``5%``, ``1/8``) and the deterministic choice of labeled cases."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

LABEL_SELECTIONS = ("first", "random")


@dataclass(frozen=True)
class LabelBudget:
    """A count of labeled cases or a fraction of the training cases, as the user wrote it."""

    text: str
    count: int | None = None
    fraction: Fraction | None = None

    @classmethod
    def parse(cls, text: str) -> "LabelBudget":
        text = text.strip()
        if re.fullmatch(r"\d+", text):
            count = int(text)
            if count <= 0:
                raise ValueError(f"--labels {text!r}: a count of labeled cases must be positive")
            return cls(text=text, count=count)
        match = re.fullmatch(r"(\d+(?:\.\d+)?)%", text)
        if match:
            fraction = Fraction(match.group(1)) / 100
        elif re.fullmatch(r"\d+/\d+", text):
            numerator, denominator = (int(part) for part in text.split("/"))
            if denominator == 0:
                raise ValueError(f"--labels {text!r}: zero denominator")
            fraction = Fraction(numerator, denominator)
        else:
            raise ValueError(
                f"--labels {text!r}: expected a count of labeled cases (3), a percentage (5%) or a fraction (1/8)"
            )
        if not 0 < fraction <= 1:
            raise ValueError(f"--labels {text!r}: a fraction must be in (0, 1]")
        return cls(text=text, fraction=fraction)

    @property
    def slug(self) -> str:
        """Directory-safe form: ``3``, ``5pct``, ``1of8``."""
        return self.text.replace("%", "pct").replace("/", "of")

    def resolve(self, num_cases: int) -> int:
        if self.count is not None:
            if self.count > num_cases:
                raise ValueError(
                    f"--labels {self.text}: only {num_cases} training cases exist in this dataset"
                )
            return self.count
        return max(1, round(float(self.fraction) * num_cases))


def select_labeled_cases(
    case_ids: list[str], budget: LabelBudget, seed: int, selection: str
) -> list[str]:
    """Labeled case ids for (budget, seed): identical for every method, so comparisons are paired.

    ``first`` is the published SSL4MIS convention (the first N cases in list order, the same for every
    seed); ``random`` draws a seeded subset per seed for variance over labeled sets.  The seed of the
    draw depends only on (seed, case list), never on the method.
    """
    if selection not in LABEL_SELECTIONS:
        raise ValueError(f"--label-selection {selection!r}: expected one of {LABEL_SELECTIONS}")
    count = budget.resolve(len(case_ids))
    if selection == "first":
        return list(case_ids[:count])
    digest = hashlib.sha256(("\n".join(case_ids) + f"\nseed={seed}").encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    chosen = rng.choice(len(case_ids), size=count, replace=False)
    return [case_ids[i] for i in sorted(chosen)]
