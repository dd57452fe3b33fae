"""The mixed-domain setting: labeled cases from one domain only, unlabeled from all; per-domain means."""
from __future__ import annotations

import numpy as np
import pytest

from bench.data.domains import domain_counts, per_domain_means, select_labeled_in_domain
from bench.data.label_budget import LabelBudget
from bench.data.synthetic import SyntheticDataset

# BUSI-like training set in the SynFoC proportions: 350 benign, 168 malignant (official code's domain_len).
CASE_IDS = [f"benign ({n})" for n in range(1, 351)] + [f"malignant ({n})" for n in range(1, 169)]
DOMAINS = {case_id: case_id.split(" ")[0] for case_id in CASE_IDS}


def select(labels: str, seed: int = 0, selection: str = "random", domain: str = "malignant") -> list[str]:
    return select_labeled_in_domain(CASE_IDS, DOMAINS, LabelBudget.parse(labels), seed, selection, domain)


def test_labeled_cases_come_only_from_the_labeled_domain():
    labeled = select("20")
    assert len(labeled) == 20 and len(set(labeled)) == 20
    assert {DOMAINS[case_id] for case_id in labeled} == {"malignant"}
    unlabeled = [case_id for case_id in CASE_IDS if case_id not in set(labeled)]
    assert {DOMAINS[case_id] for case_id in unlabeled} == {"benign", "malignant"}
    assert len(unlabeled) == len(CASE_IDS) - 20


def test_a_fraction_counts_against_the_whole_training_set():
    # SynFoC §4: 1/4 of BUSI's 518 training images = 129 labeled, all from one domain (here rounded: 130).
    assert len(select("1/4")) == round(518 / 4)
    assert len(select("1/8")) == round(518 / 8)


def test_draw_is_deterministic_per_seed_and_first_takes_the_domain_head():
    assert select("10", seed=1) == select("10", seed=1)
    assert select("10", seed=1) != select("10", seed=2)
    assert select("3", selection="first") == ["malignant (1)", "malignant (2)", "malignant (3)"]
    assert select("3", selection="first", domain="benign") == ["benign (1)", "benign (2)", "benign (3)"]


def test_unknown_domain_and_too_small_domain_name_the_available_ones():
    with pytest.raises(ValueError, match=r"'normal'.*available: benign \(350 cases\), malignant \(168 cases\)"):
        select("10", domain="normal")
    with pytest.raises(ValueError, match=r"domain 'malignant' has only 168 training cases"):
        select("1/2")
    with pytest.raises(ValueError, match="no domain recorded"):
        select_labeled_in_domain(CASE_IDS + ["stray"], DOMAINS, LabelBudget.parse("1"), 0, "random", "benign")


def test_works_on_an_adapters_own_case_domains():
    adapter = SyntheticDataset()
    counts = domain_counts(adapter.train_case_ids(), adapter.case_domains())
    assert set(counts) == {"vendor_a", "vendor_b", "vendor_c"}
    labeled = select_labeled_in_domain(adapter.train_case_ids(), adapter.case_domains(), LabelBudget.parse("4"), 0,
                                       "random", "vendor_b")
    assert len(labeled) == 4 and all(adapter.case_domains()[case_id] == "vendor_b" for case_id in labeled)


def test_per_domain_means_match_a_direct_computation():
    rows = [
        {"case_id": "a", "domain": "benign", "dice": 0.2, "hd95": 4.0},
        {"case_id": "b", "domain": "benign", "dice": 0.6, "hd95": float("nan")},
        {"case_id": "c", "domain": "malignant", "dice": 0.9, "hd95": 1.0},
    ]
    means = per_domain_means(rows)
    assert means["benign"]["dice"] == pytest.approx(np.mean([0.2, 0.6]))
    assert means["benign"]["hd95"] == pytest.approx(4.0)  # NaN skipped, as in the run summary
    assert means["malignant"] == {"dice": 0.9, "hd95": 1.0, "num_cases": 1.0}
    assert means["benign"]["num_cases"] == 2.0
