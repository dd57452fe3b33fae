"""The mixed-domain setting (MiDSS; SynFoC §3.1 "Problem Formulation", after Ma et al., CVPR 2024): labeled
cases come from one domain, unlabeled cases from all of them.

SynFoC's official ``code/train.py`` draws the labeled count as a fraction of the *whole* training set
(``int(sum(domain_len) * lb_ratio)``: 64 = 1/8 and 129 = 1/4 of BUSI's 518 training images, §4.2) and
takes it from the labeled domain alone; every other training case, the labeled domain's rest included,
is unlabeled.  Here a fraction resolves against the whole training set too, with the harness's
rounding (``LabelBudget.resolve``), so ``--labels 1/8`` names the same count with and without
``--labeled-domain``.  The draw inside the domain uses the usual ``first``/``random`` selections;
SynFoC's code takes the first ``lb_num`` of the domain, i.e. ``first``.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

import pandas as pd

from bench.data.label_budget import LabelBudget, select_labeled_cases


def domain_counts(case_ids: Sequence[str], case_domains: Mapping[str, str]) -> dict[str, int]:
    """Training cases per domain, in order of first appearance."""
    missing = [case_id for case_id in case_ids if case_id not in case_domains]
    if missing:
        raise ValueError(f"no domain recorded for training case(s) {missing[:5]}; the adapter's case_domains() "
                         "must cover every training case")
    return dict(Counter(case_domains[case_id] for case_id in case_ids))


def select_labeled_in_domain(
    case_ids: Sequence[str],
    case_domains: Mapping[str, str],
    budget: LabelBudget,
    seed: int,
    selection: str,
    labeled_domain: str,
) -> list[str]:
    """Labeled case ids for (budget, seed), all from ``labeled_domain``; the unlabeled set is every other
    training case, from every domain.

    ``case_ids`` is the adapter's ordered ``train_case_ids()``; ``case_domains`` its ``case_domains()``.
    The draw depends only on (seed, the domain's case list), never on the method, so every method sees
    the same labeled subset.
    """
    counts = domain_counts(case_ids, case_domains)
    available = ", ".join(f"{domain} ({count} cases)" for domain, count in counts.items())
    if labeled_domain not in counts:
        raise ValueError(f"--labeled-domain {labeled_domain!r}: no training case is in this domain; "
                         f"available: {available}")
    domain_ids = [case_id for case_id in case_ids if case_domains[case_id] == labeled_domain]
    count = budget.resolve(len(case_ids))
    if count > len(domain_ids):
        raise ValueError(f"--labels {budget.text} = {count} labeled cases, but domain {labeled_domain!r} has only "
                         f"{len(domain_ids)} training cases; available: {available}")
    if count >= len(case_ids):
        raise ValueError(f"--labels {budget.text} with --labeled-domain {labeled_domain!r} labels every training case; "
                         "nothing is left unlabeled")
    return select_labeled_cases(domain_ids, LabelBudget(text=budget.text, count=count), seed, selection)


def per_domain_means(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean of every numeric per-case metric per domain, plus ``num_cases`` (SynFoC Tables 3-6 report
    each test domain and their average).  Derived from the per-case rows, which stay the primary record,
    with the same NaN handling as the run summary (pandas means)."""
    table = pd.DataFrame(list(rows))
    if table.empty:
        return {}
    if "domain" not in table:
        table["domain"] = "default"
    numeric = table.select_dtypes("number").columns.tolist()
    grouped = table.groupby(table["domain"].astype(str), sort=True)
    means = grouped[numeric].mean()
    means["num_cases"] = grouped.size()
    return {str(domain): {column: float(value) for column, value in values.items()} for domain, values in means.iterrows()}
